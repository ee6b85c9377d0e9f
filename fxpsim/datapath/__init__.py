"""The integer datapath engines (DESIGN.md), one module per engine.

:mod:`fxpsim.datapath.bitserial`: Stripes' bit-serial inner products (Judd
et al., MICRO 2016). The dense bit-parallel engine is still
:mod:`fxpsim.kernels` (to move here).
"""
