"""Old import path of the dense integer datapath (docs/INTERFACES.md): now :mod:`fxpsim.datapath`.

``dense`` and ``conv2d`` are :mod:`fxpsim.datapath.dense`'s (a LayerConfig
or the keyword form); :mod:`fxpsim.kernels.reference` is their plain-Python twin.
"""

from ..datapath.dense import DatapathResult, OverflowStats, conv2d, dense

__all__ = ["DatapathResult", "OverflowStats", "conv2d", "dense"]
