"""The bit-exact integer datapath (DESIGN.md; de Bruin et al., DSD 2018).

``dense`` and ``conv2d`` validate in Python and run Numba kernels with exact
fast paths (``prefix_stats=True`` adds the exact ``max_abs_prefix``);
:mod:`fxpsim.kernels.reference` is their plain-Python twin.
"""

from .datapath import DatapathResult, OverflowStats, conv2d, dense

__all__ = ["DatapathResult", "OverflowStats", "conv2d", "dense"]
