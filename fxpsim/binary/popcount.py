"""Popcount: the one tested helper every XNOR-popcount kernel calls.

Numba 0.68 has no popcount builtin in nopython mode (``np.bitwise_count``
and ``int.bit_count`` do not type), so :func:`popcount64` is an
``@intrinsic`` that emits LLVM's ``llvm.ctpop.i64``: a scalar ``popcnt``
in the XNOR kernel's register tiles; inside a loop over outputs LLVM
vectorises it: ``VPOPCNTQ`` where AVX-512 has it, else (as on the
2026-11-25 test machines, which LLVM reports as ``znver1``: AVX2 only) the
vpshufb nibble-table popcount. The SWAR bit trick compiles to the same
``popcnt``. NumPy 2's ``np.bitwise_count`` on a
broadcast XOR (it materialises B x N x K/64 words) measured ~5-7x slower
than the ctpop kernel on (10000 x 1024) . (1024 x 1024) in
``benchmarks/binary.py``, which prints both; so the kernels use the
intrinsic, and :func:`popcount_array` (NumPy) stays as the independent
reference the tests compare the helper against.

Width (BNN, Courbariaux, Hubara et al. 2016): a popcount over K bits needs
``ceil(log2(K+1))`` bits unsigned; the dot ``K - 2*popcount`` lies in
``[-K, K]`` and needs one bit more, signed. :func:`popcount_width` checks
both against an accumulator width and reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from ..errors import check


@intrinsic
def _ctpop_u64(typingctx, x):
    """LLVM ``ctpop`` on a 64-bit integer (value cast to uint64 first)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        val = context.cast(builder, args[0], signature.args[0], types.uint64)
        return builder.ctpop(val)

    return types.uint64(x), codegen


@njit(cache=True, inline="always")
def popcount64(x):
    """Number of one bits in the 64-bit word ``x`` (LLVM ctpop), as int64."""
    return np.int64(_ctpop_u64(x))


@njit(cache=True)
def _popcount_words(words, out):
    for i in range(words.size):
        out[i] = popcount64(words[i])


def popcount_kernel(words) -> np.ndarray:
    """Popcount of every uint64 word through the Numba helper (tested against NumPy)."""
    arr = np.ascontiguousarray(words, dtype=np.uint64)
    out = np.empty(arr.size, dtype=np.int64)
    _popcount_words(arr.reshape(-1), out)
    return out.reshape(arr.shape)


def popcount_array(words) -> np.ndarray:
    """NumPy 2 ``np.bitwise_count`` of every word, as int64 (the reference)."""
    return np.bitwise_count(np.asarray(words, dtype=np.uint64)).astype(np.int64)


def popcount_bits(k: int) -> int:
    """Bits of an unsigned counter holding a popcount over ``k`` bits: ceil(log2(k+1))."""
    check(int(k) >= 0, f"popcount length k={k} is negative: give the number of bits counted")
    return int(k).bit_length()


@dataclass(frozen=True, slots=True)
class PopcountWidth:
    """Bit widths of one binary layer's popcount against its accumulator."""

    k: int
    """Bits counted per output (the dot length K)."""
    popcount_bits: int
    """Unsigned popcount counter: ceil(log2(K+1))."""
    dot_bits: int
    """Signed dot K - 2*popcount in [-K, K]: popcount_bits + 1."""
    acc_bits: int | None
    """The datapath's accumulator width it was checked against (None: unchecked)."""

    @property
    def fits(self) -> bool:
        """True when the signed dot fits the accumulator (or none was given)."""
        return self.acc_bits is None or self.dot_bits <= self.acc_bits

    def describe(self) -> str:
        """One line for reports, e.g. ``K=1024: popcount 11 bits, dot 12 bits <= acc 16 (fits)``."""
        head = f"K={self.k}: popcount {self.popcount_bits} bits, dot {self.dot_bits} bits"
        if self.acc_bits is None:
            return head
        rel = "<=" if self.fits else ">"
        return f"{head} {rel} acc {self.acc_bits} ({'fits' if self.fits else 'OVERFLOWS'})"


def popcount_width(k: int, acc_bits: int | None = None) -> PopcountWidth:
    """Check ceil(log2(K+1)) (and the signed dot, one bit more) against ``acc_bits``."""
    if acc_bits is not None:
        check(int(acc_bits) >= 1, f"acc_bits={acc_bits} < 1: give the accumulator width in bits")
        acc_bits = int(acc_bits)
    pb = popcount_bits(k)
    return PopcountWidth(int(k), pb, pb + 1, acc_bits)
