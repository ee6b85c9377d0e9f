"""Old import path: the XNOR-popcount kernels are :mod:`fxpsim.datapath.xnor`."""

from ..datapath.xnor import (BLOCK, PARALLEL_MIN_WORK, TILE, and_popcount_gemm, and_popcount_gemm_serial, gemm,
                             popcount64, ternary_gemm, ternary_gemm_serial, xnor_gemm, xnor_gemm_serial)

__all__ = ["BLOCK", "PARALLEL_MIN_WORK", "TILE", "and_popcount_gemm", "and_popcount_gemm_serial", "gemm",
           "popcount64", "ternary_gemm", "ternary_gemm_serial", "xnor_gemm", "xnor_gemm_serial"]
