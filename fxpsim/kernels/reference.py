"""Old import path: the plain-Python twin is :mod:`fxpsim.datapath.reference`."""

from ..datapath.reference import conv2d, dense, requantize_one, saturate, splitmix_bits, wrap

__all__ = ["conv2d", "dense", "requantize_one", "saturate", "splitmix_bits", "wrap"]
