"""Old import path: the dense engine is :mod:`fxpsim.datapath.dense`, its checks,
requantization and im2col :mod:`fxpsim.datapath.core`."""

from ..datapath.core import ACTIVATIONS, DatapathResult, OverflowStats, im2col, requantize, stochastic_bits
from ..datapath.dense import conv2d, dense, lane_plan

__all__ = ["ACTIVATIONS", "DatapathResult", "OverflowStats", "conv2d", "dense", "im2col", "lane_plan",
           "requantize", "stochastic_bits"]
