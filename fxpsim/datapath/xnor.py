"""The XNOR-popcount engine's kernels (XNOR-Net, BNN): the popcount helper and the packed GEMMs.

Validation, packing and the layers that call these are :mod:`fxpsim.binary.layers`.

Popcount
--------
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

Kernels
-------
These take packed words only. Each kernel has a block function (not
forced inline: same speed, half the compile time) doing 4 rows. XNOR (the hot path) works in 4x4
output tiles with the **k-word loop innermost** and the 16 popcount sums in
scalar locals (registers): on this znver1 machine scalar ``popcnt`` runs
near its peak (~0.6 ns per word pair), 20-35 % less time than the vector
form below with its sums in arrays (``benchmarks/binary.py``). The
and/ternary blocks keep the PERF-NOTES.md shape: words k outer, then the
**inner loop over the N outputs** (contiguous weight words ``wt[k, :]``),
so one weight-word load serves 4 rows and LLVM vectorises the ctpop, with
the sums in per-row arrays. Two drivers call each block: the
``*_gemm`` ones with ``prange`` over blocks (outermost only) and serial
``*_gemm_serial`` twins for small products; :func:`gemm` picks. On this machine LLVM reports
``znver1`` (AVX2, no AVX-512 VPOPCNTQ, unlike PERF-NOTES.md's host), so the
vector ctpop is lowered to the vpshufb nibble table (the SWAR bit trick
compiles to the same code and time). No fastmath: the
arithmetic is integer and exact. Popcounts are summed in int64 lanes and
turned into dots at the end (pad bits are 0 in both operands: no count).

Dot formulas (a, w the packed words; K the logical length):
- ±1 x ±1 (XNOR-Net, BNN):  ``dot = K - 2*pc(a ^ w)``
- {0,1} x ±1 (BNN Alg. 4 bit plane x, weight bits b = (w+1)/2):
  ``sum_k x_k (2 b_k - 1) = 2*pc(x & b) - pc(x)``
- ternary x ternary (mask m = ma & mw, signs s):
  ``sum_k a_k w_k = pc(m) - 2*pc((sa ^ sw) & m)``
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from ..errors import check


# --------------------------------------------------------------------------- popcount

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


# --------------------------------------------------------------------------- XNOR / AND / ternary GEMMs

BLOCK = 4
"""Rows per block: one weight-word load serves 4 rows."""
TILE = 4
"""Outputs per XNOR register tile (with BLOCK rows: 16 sums in registers)."""
PARALLEL_MIN_WORK = 1 << 15
"""Below this many word pairs (B * words * N) the serial driver is used: the
thread launch of a parallel kernel costs more than such a product."""


@njit(cache=True)
def _xnor_rest(a, wt, k, out, r_lo, r_hi, j_lo):
    """Rows r_lo..r_hi-1, outputs j_lo..N-1 of ``K - 2*pc(a ^ w)``, one sum each (tails)."""
    nw = a.shape[1]
    for r in range(r_lo, r_hi):
        for j in range(j_lo, wt.shape[1]):
            c = np.int64(0)
            for kw in range(nw):
                c += popcount64(a[r, kw] ^ wt[kw, j])
            out[r, j] = k - 2 * c


@njit(cache=True)
def _xnor_block(a, wt, k, out, r0):
    """Rows r0..r0+3 of ``K - 2*pc(a ^ w)`` in 4x4 output tiles, k words innermost.

    The 16 popcount sums of a tile live in scalar locals (registers) across
    the k-word loop; each loaded word serves 4 xor+popcounts.
    """
    b, nw = a.shape
    n = wt.shape[1]
    if r0 + BLOCK > b:
        _xnor_rest(a, wt, k, out, r0, b, 0)
        return
    r1, r2, r3 = r0 + 1, r0 + 2, r0 + 3
    j = 0
    while j + TILE <= n:
        c00 = c01 = c02 = c03 = np.int64(0)
        c10 = c11 = c12 = c13 = np.int64(0)
        c20 = c21 = c22 = c23 = np.int64(0)
        c30 = c31 = c32 = c33 = np.int64(0)
        for kw in range(nw):
            a0, a1, a2, a3 = a[r0, kw], a[r1, kw], a[r2, kw], a[r3, kw]
            w0, w1, w2, w3 = wt[kw, j], wt[kw, j + 1], wt[kw, j + 2], wt[kw, j + 3]
            c00 += popcount64(a0 ^ w0)
            c01 += popcount64(a0 ^ w1)
            c02 += popcount64(a0 ^ w2)
            c03 += popcount64(a0 ^ w3)
            c10 += popcount64(a1 ^ w0)
            c11 += popcount64(a1 ^ w1)
            c12 += popcount64(a1 ^ w2)
            c13 += popcount64(a1 ^ w3)
            c20 += popcount64(a2 ^ w0)
            c21 += popcount64(a2 ^ w1)
            c22 += popcount64(a2 ^ w2)
            c23 += popcount64(a2 ^ w3)
            c30 += popcount64(a3 ^ w0)
            c31 += popcount64(a3 ^ w1)
            c32 += popcount64(a3 ^ w2)
            c33 += popcount64(a3 ^ w3)
        out[r0, j] = k - 2 * c00
        out[r0, j + 1] = k - 2 * c01
        out[r0, j + 2] = k - 2 * c02
        out[r0, j + 3] = k - 2 * c03
        out[r1, j] = k - 2 * c10
        out[r1, j + 1] = k - 2 * c11
        out[r1, j + 2] = k - 2 * c12
        out[r1, j + 3] = k - 2 * c13
        out[r2, j] = k - 2 * c20
        out[r2, j + 1] = k - 2 * c21
        out[r2, j + 2] = k - 2 * c22
        out[r2, j + 3] = k - 2 * c23
        out[r3, j] = k - 2 * c30
        out[r3, j + 1] = k - 2 * c31
        out[r3, j + 2] = k - 2 * c32
        out[r3, j + 3] = k - 2 * c33
        j += TILE
    _xnor_rest(a, wt, k, out, r0, r0 + BLOCK, j)


@njit(cache=True)
def _and_block(x, wt, out, r0):
    """Rows r0..r0+3 (fewer at the tail) of ``pc(x & w)``."""
    b, nw = x.shape
    n = wt.shape[1]
    if r0 + BLOCK <= b:
        c0 = np.zeros(n, np.int64)
        c1 = np.zeros(n, np.int64)
        c2 = np.zeros(n, np.int64)
        c3 = np.zeros(n, np.int64)
        for kw in range(nw):
            a0 = x[r0, kw]
            a1 = x[r0 + 1, kw]
            a2 = x[r0 + 2, kw]
            a3 = x[r0 + 3, kw]
            w = wt[kw]
            for j in range(n):
                v = w[j]
                c0[j] += popcount64(a0 & v)
                c1[j] += popcount64(a1 & v)
                c2[j] += popcount64(a2 & v)
                c3[j] += popcount64(a3 & v)
        for j in range(n):
            out[r0, j] = c0[j]
            out[r0 + 1, j] = c1[j]
            out[r0 + 2, j] = c2[j]
            out[r0 + 3, j] = c3[j]
    else:
        for r in range(r0, b):
            c = np.zeros(n, np.int64)
            for kw in range(nw):
                ar = x[r, kw]
                w = wt[kw]
                for j in range(n):
                    c[j] += popcount64(ar & w[j])
            for j in range(n):
                out[r, j] = c[j]


@njit(cache=True)
def _ternary_block(sa, ma, sw, mw, out, r0):
    """Rows r0..r0+3 of ``pc(m) - 2*pc((sa ^ sw) & m)``, ``m = ma & mw``."""
    b, nw = sa.shape
    n = sw.shape[1]
    for r in range(r0, min(r0 + BLOCK, b)):
        nz = np.zeros(n, np.int64)
        neg = np.zeros(n, np.int64)
        for kw in range(nw):
            sr = sa[r, kw]
            mr = ma[r, kw]
            swk = sw[kw]
            mwk = mw[kw]
            for j in range(n):
                q = mr & mwk[j]
                nz[j] += popcount64(q)
                neg[j] += popcount64((sr ^ swk[j]) & q)
        for j in range(n):
            out[r, j] = nz[j] - 2 * neg[j]


@njit(cache=True, parallel=True)
def xnor_gemm(a, wt, k):
    """(B, W) x (W, N) packed ±1 -> int32 (B, N) dots ``K - 2*pc(a ^ w)``; prange over 4-row blocks."""
    out = np.empty((a.shape[0], wt.shape[1]), dtype=np.int32)
    for blk in prange((a.shape[0] + BLOCK - 1) // BLOCK):
        _xnor_block(a, wt, k, out, blk * BLOCK)
    return out


@njit(cache=True)
def xnor_gemm_serial(a, wt, k):
    """Serial twin of :func:`xnor_gemm`."""
    out = np.empty((a.shape[0], wt.shape[1]), dtype=np.int32)
    for blk in range((a.shape[0] + BLOCK - 1) // BLOCK):
        _xnor_block(a, wt, k, out, blk * BLOCK)
    return out


@njit(cache=True, parallel=True)
def and_popcount_gemm(x, wt):
    """(B, W) packed {0,1} x (W, N) packed weight bits -> int64 (B, N) ``pc(x & w)``."""
    out = np.empty((x.shape[0], wt.shape[1]), dtype=np.int64)
    for blk in prange((x.shape[0] + BLOCK - 1) // BLOCK):
        _and_block(x, wt, out, blk * BLOCK)
    return out


@njit(cache=True)
def and_popcount_gemm_serial(x, wt):
    """Serial twin of :func:`and_popcount_gemm`."""
    out = np.empty((x.shape[0], wt.shape[1]), dtype=np.int64)
    for blk in range((x.shape[0] + BLOCK - 1) // BLOCK):
        _and_block(x, wt, out, blk * BLOCK)
    return out


@njit(cache=True, parallel=True)
def ternary_gemm(sa, ma, sw, mw):
    """Ternary x ternary sign/mask planes -> int32 (B, N) ``pc(m) - 2*pc((sa^sw) & m)``."""
    out = np.empty((sa.shape[0], sw.shape[1]), dtype=np.int32)
    for blk in prange((sa.shape[0] + BLOCK - 1) // BLOCK):
        _ternary_block(sa, ma, sw, mw, out, blk * BLOCK)
    return out


@njit(cache=True)
def ternary_gemm_serial(sa, ma, sw, mw):
    """Serial twin of :func:`ternary_gemm`."""
    out = np.empty((sa.shape[0], sw.shape[1]), dtype=np.int32)
    for blk in range((sa.shape[0] + BLOCK - 1) // BLOCK):
        _ternary_block(sa, ma, sw, mw, out, blk * BLOCK)
    return out


_DRIVERS = {
    "xnor": (xnor_gemm, xnor_gemm_serial),
    "and": (and_popcount_gemm, and_popcount_gemm_serial),
    "ternary": (ternary_gemm, ternary_gemm_serial),
}


def gemm(kind: str, *args, parallel: bool | None = None):
    """Call kernel ``kind`` (xnor/and/ternary); ``parallel=None``: by work size."""
    first, wt = args[0], args[-1] if kind == "ternary" else args[1]
    if parallel is None:
        parallel = first.shape[0] * first.shape[1] * wt.shape[1] >= PARALLEL_MIN_WORK
    par, ser = _DRIVERS[kind]
    return (par if parallel else ser)(*args)
