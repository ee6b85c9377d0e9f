"""Cycle models of accelerators: what a layer costs in cycles, from its shape and precisions.

:mod:`fxpsim.timing.stripes`: Stripes against DaDianNao (Judd et al., MICRO
2016). EIE's cycle model (Han et al., ISCA 2016) is still in
:mod:`fxpsim.sparse.pe`.
"""
