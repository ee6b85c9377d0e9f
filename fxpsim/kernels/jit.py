"""Numba leaf kernels of the integer datapath: arrays and ints in, no validation.

Conventions (STYLE.md, after stumpy/pynndescent): module-level
``@njit(cache=True)``, never ``fastmath`` (bit-exact path), ``prange`` only
on the outermost loop. The public wrappers in :mod:`fxpsim.kernels.datapath`
validate, choose the lane dtype and call these.

Lanes (PERF-NOTES: vectorise across outputs, k outer, 4-row blocks, the
narrowest exact lane): the ``*_lane_kernel`` pair keeps the BW_acc-bit
accumulator in the top bits of an int16/int32/int64 lane, so one
``llvm.sadd.sat`` (vpaddsw for int16) is the per-step clip and the lane's
own add is the per-step wrap; LLVM does not narrow Numba's int64 arithmetic
by itself (measured: int64 lanes, ~10x slower). The plain int64
``_dense_clip_kernel`` / ``_dense_wrap_kernel`` cover products wider than
the accumulator range.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

ROWS_PER_BLOCK = 4
"""Batch rows accumulated together so one weight row load serves four rows."""


@intrinsic
def sadd_sat(typingctx, a, b):
    """``llvm.sadd.sat``: saturating add in the operands' own width (vectorises to vpaddsw)."""
    if not (isinstance(a, types.Integer) and a.signed and a == b):
        return None

    def codegen(context, builder, sig, args):
        lt = context.get_value_type(sig.return_type)
        fn = builder.module.declare_intrinsic("llvm.sadd.sat", [lt], ir.FunctionType(lt, [lt, lt]))
        return builder.call(fn, args)

    return a(a, b), codegen


@intrinsic
def trunc_as(typingctx, v, like):
    """``v`` (an integer Numba widened to int64) truncated to ``like``'s type: keeps narrow lanes."""
    if not (isinstance(v, types.Integer) and isinstance(like, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        lt = context.get_value_type(sig.return_type)
        val = args[0]
        if val.type.width > lt.width:
            return builder.trunc(val, lt)
        if val.type.width < lt.width:
            return builder.sext(val, lt)
        return val

    return like(v, like), codegen


@njit(cache=True, parallel=True)
def _dense_sat_lane_kernel(x, w, bias, acc_out, count_out):  # pragma: no cover - jitted
    """Per-step clip in lanes of the arrays' width L, accumulator pre-shifted to the top bits.

    The caller stores the BW_acc-bit accumulator and the products shifted
    left by ``L - BW_acc`` (products must lie in the accumulator range), so
    the lane's saturating add (``llvm.sadd.sat``) IS the clip to BW_acc bits
    and ``acc >> (L - BW_acc)`` recovers it; an addition overflowed exactly
    when the saturating and the wrapping add differ. One vpaddsw per MAC for
    BW_acc <= 16 (PERF-NOTES: narrowest lane type, k outer, 4-row blocks).
    """
    m, kk = x.shape
    n = w.shape[1]
    nblk = (m + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for blk in prange(nblk):
        r0 = blk * ROWS_PER_BLOCK
        nr = min(ROWS_PER_BLOCK, m - r0)
        acc = np.empty((ROWS_PER_BLOCK, n), dtype=bias.dtype)
        cnt = np.zeros((ROWS_PER_BLOCK, n), dtype=count_out.dtype)
        for r in range(ROWS_PER_BLOCK):
            for j in range(n):
                acc[r, j] = bias[j]
        for k in range(kk):
            for r in range(nr):
                xv = x[r0 + r, k]
                for j in range(n):
                    a = acc[r, j]
                    p = trunc_as(xv * w[k, j], a)
                    t = sadd_sat(a, p)
                    cnt[r, j] += t != trunc_as(a + p, a)
                    acc[r, j] = t
        for r in range(nr):
            for j in range(n):
                acc_out[r0 + r, j] = acc[r, j]
                count_out[r0 + r, j] = cnt[r, j]


@njit(cache=True, parallel=True)
def _dense_wrap_lane_kernel(x, w, bias, acc_out, count_out):  # pragma: no cover - jitted
    """Per-step wrap in lanes of width L, accumulator pre-shifted as in the clip twin.

    The lane's own two's-complement add wraps at L bits, i.e. at BW_acc bits
    of the shifted value; it overflowed when the saturating add differs.
    """
    m, kk = x.shape
    n = w.shape[1]
    nblk = (m + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for blk in prange(nblk):
        r0 = blk * ROWS_PER_BLOCK
        nr = min(ROWS_PER_BLOCK, m - r0)
        acc = np.empty((ROWS_PER_BLOCK, n), dtype=bias.dtype)
        cnt = np.zeros((ROWS_PER_BLOCK, n), dtype=count_out.dtype)
        for r in range(ROWS_PER_BLOCK):
            for j in range(n):
                acc[r, j] = bias[j]
        for k in range(kk):
            for r in range(nr):
                xv = x[r0 + r, k]
                for j in range(n):
                    a = acc[r, j]
                    p = trunc_as(xv * w[k, j], a)
                    u = trunc_as(a + p, a)
                    cnt[r, j] += sadd_sat(a, p) != u
                    acc[r, j] = u
        for r in range(nr):
            for j in range(n):
                acc_out[r0 + r, j] = acc[r, j]
                count_out[r0 + r, j] = cnt[r, j]


@njit(cache=True, parallel=True)
def _dense_clip_kernel(x, w, bias, lo, hi, acc_out, count_out):  # pragma: no cover - jitted
    """Per-step saturating accumulation, order k = 0..K-1 (de Bruin DSD 2018, clip).

    ``acc = clip(acc + x[b, k] * w[k, n], lo, hi)`` after every addition;
    ``count_out[b, n]`` counts the additions whose exact result left
    ``[lo, hi]``. Vectorised across outputs n (k outer), 4 rows per block.
    """
    m, kk = x.shape
    n = w.shape[1]
    nblk = (m + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for blk in prange(nblk):
        r0 = blk * ROWS_PER_BLOCK
        nr = min(ROWS_PER_BLOCK, m - r0)
        acc = np.empty((ROWS_PER_BLOCK, n), dtype=bias.dtype)
        cnt = np.zeros((ROWS_PER_BLOCK, n), dtype=np.int32)
        for r in range(ROWS_PER_BLOCK):
            for j in range(n):
                acc[r, j] = bias[j]
        for k in range(kk):
            wk = w[k]
            for r in range(nr):
                xv = x[r0 + r, k]
                a = acc[r]
                c = cnt[r]
                for j in range(n):
                    s = a[j] + xv * wk[j]
                    t = min(max(s, lo), hi)
                    c[j] += s != t
                    a[j] = t
        for r in range(nr):
            for j in range(n):
                acc_out[r0 + r, j] = acc[r, j]
                count_out[r0 + r, j] = cnt[r, j]


@njit(cache=True, parallel=True)
def _dense_wrap_kernel(x, w, bias, lo, mask, acc_out, count_out):  # pragma: no cover - jitted
    """Per-step wrapping accumulation (two's complement, BW_acc bits), k = 0..K-1.

    ``acc = ((acc + p - lo) & mask) + lo`` after every addition, with
    ``mask = 2**BW_acc - 1``; ``count_out`` counts the additions that wrapped.
    """
    m, kk = x.shape
    n = w.shape[1]
    nblk = (m + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for blk in prange(nblk):
        r0 = blk * ROWS_PER_BLOCK
        nr = min(ROWS_PER_BLOCK, m - r0)
        acc = np.empty((ROWS_PER_BLOCK, n), dtype=bias.dtype)
        cnt = np.zeros((ROWS_PER_BLOCK, n), dtype=np.int32)
        for r in range(ROWS_PER_BLOCK):
            for j in range(n):
                acc[r, j] = bias[j]
        for k in range(kk):
            wk = w[k]
            for r in range(nr):
                xv = x[r0 + r, k]
                a = acc[r]
                c = cnt[r]
                for j in range(n):
                    s = a[j] + xv * wk[j]
                    t = ((s - lo) & mask) + lo
                    c[j] += s != t
                    a[j] = t
        for r in range(nr):
            for j in range(n):
                acc_out[r0 + r, j] = acc[r, j]
                count_out[r0 + r, j] = cnt[r, j]


@njit(cache=True, parallel=True)
def _im2col_kernel(x, kh, kw, stride, pad, out):  # pragma: no cover - jitted
    """NCHW patches -> rows ``(b, oh, ow)``, columns in accumulation order (c, i, j).

    Zero padding writes 0 (a MAC with a zero operand: it is still counted as
    an addition, and adding 0 to an in-range accumulator never overflows).
    """
    b_, c_, h_, w_ = x.shape
    oh_, ow_ = (h_ + 2 * pad - kh) // stride + 1, (w_ + 2 * pad - kw) // stride + 1
    for b in prange(b_):
        for oh in range(oh_):
            for ow in range(ow_):
                row = (b * oh_ + oh) * ow_ + ow
                col = 0
                for c in range(c_):
                    for i in range(kh):
                        ih = oh * stride - pad + i
                        for j in range(kw):
                            iw = ow * stride - pad + j
                            if 0 <= ih < h_ and 0 <= iw < w_:
                                out[row, col] = x[b, c, ih, iw]
                            else:
                                out[row, col] = 0
                            col += 1


@njit(cache=True, parallel=True)
def _abs_row_sums(x, exact_int, out):  # pragma: no cover - jitted
    """``out[b] = sum_k |x[b, k]|`` as float64: exact int64 sums when ``exact_int``
    (the caller checked they fit), else float64 (a bound once a margin is added)."""
    for b in prange(x.shape[0]):
        if exact_int:
            si = 0
            for k in range(x.shape[1]):
                v = np.int64(x[b, k])
                si += v if v >= 0 else -v
            out[b] = float(si)
        else:
            s = 0.0
            for k in range(x.shape[1]):
                v = float(x[b, k])
                s += v if v >= 0 else -v
            out[b] = s


@njit(cache=True, parallel=True)
def _add_bias_kernel(s, bias, e_out, row_max):  # pragma: no cover - jitted
    """``e = int64(s) + bias`` (s: an exact sum, float or int) and per-row max |e|."""
    for b in prange(s.shape[0]):
        mx = 0
        for j in range(s.shape[1]):
            v = np.int64(s[b, j]) + bias[j]
            e_out[b, j] = v
            a = -v if v < 0 else v
            if a > mx:
                mx = a
        row_max[b] = mx


@njit(cache=True, inline="always")
def requantize_one(v, shift, mode, y_min, y_max, relu):  # pragma: no cover - jitted
    """One accumulator value -> output raw: round by ``shift`` (mode = Rounding.code, not
    stochastic), clip to [y_min, y_max], ReLU. ``shift <= 0``: exact left shift, saturating
    where the shifted value would leave [y_min, y_max]. Same semantics as qformat.shift_round."""
    if shift <= 0:
        hi_a = y_max >> -shift
        lo_a = -((-y_min) >> -shift)
        if v > hi_a:
            y = y_max
        elif v < lo_a:
            y = y_min
        else:
            y = v << -shift
    else:
        q = v >> shift
        rem = v - (q << shift)
        half = np.int64(1) << (shift - 1)
        if mode == 0:  # nearest-even
            up = rem > half or (rem == half and (q & 1) == 1)
        elif mode == 1:  # nearest, ties away from zero
            up = rem > half or (rem == half and v >= 0)
        elif mode == 2:  # floor
            up = False
        else:  # toward zero
            up = rem != 0 and v < 0
        y = q + up
        y = min(max(y, y_min), y_max)
    if relu and y < 0:
        y = 0
    return y


@njit(cache=True, parallel=True)
def _requantize_kernel(acc, shift, mode, y_min, y_max, relu, out):  # pragma: no cover - jitted
    """:func:`requantize_one` over flat arrays."""
    for i in prange(acc.size):
        out[i] = requantize_one(acc[i], shift, mode, y_min, y_max, relu)
