"""Old import path: the popcount helper and width report are :mod:`fxpsim.datapath.xnor`."""

from ..datapath.xnor import (PopcountWidth, popcount64, popcount_array, popcount_bits, popcount_kernel,
                             popcount_width)

__all__ = ["PopcountWidth", "popcount64", "popcount_array", "popcount_bits", "popcount_kernel", "popcount_width"]
