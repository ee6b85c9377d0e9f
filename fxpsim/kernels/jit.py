"""Old import path: the Numba leaf kernels are :mod:`fxpsim.datapath.jit`."""

from ..datapath.jit import ROWS_PER_BLOCK, clip_add, requantize_one, sadd_sat, sat_add, trunc_as, wrap_add

__all__ = ["ROWS_PER_BLOCK", "clip_add", "requantize_one", "sadd_sat", "sat_add", "trunc_as", "wrap_add"]
