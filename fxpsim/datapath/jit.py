"""Numba leaf kernels of the integer datapath: arrays and ints in, no validation.

Conventions (STYLE.md, after stumpy/pynndescent): module-level
``@njit(cache=True)``, never ``fastmath`` (bit-exact path), ``prange`` only
on the outermost loop. The engines (:mod:`fxpsim.datapath.dense`,
:mod:`fxpsim.datapath.sparse`) validate through :mod:`fxpsim.datapath.core`,
choose the lane dtype and call these.

Lanes (PERF-NOTES: vectorise across outputs, the narrowest exact lane;
rows in blocks of 4 per parallel task): the ``*_lane_kernel`` pair keeps the BW_acc-bit
accumulator in the top bits of an int16/int32/int64 lane, so one
``llvm.sadd.sat`` (vpaddsw for int16) is the per-step clip and the lane's
own add is the per-step wrap; LLVM does not narrow Numba's int64 arithmetic
by itself (measured: int64 lanes, ~10x slower). Clip in int32 lanes wider
than BW_acc clamps an unshifted accumulator instead (:func:`clip_add`). The
plain int64 ``_dense_int64_kernel`` covers products wider than the
accumulator range.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

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


@njit(cache=True, inline="always")
def sat_add(a, p):  # pragma: no cover - jitted
    """One per-step clip in a shifted lane: (saturated sum, True if it did NOT overflow)."""
    t = sadd_sat(a, p)
    return t, t == trunc_as(a + p, a)


def clip_add(a, p, bounds):  # pragma: no cover - compiled through the overload below
    """One per-step clip: (clipped sum, True if it did NOT overflow).

    ``bounds`` None: a shifted lane (:func:`sat_add`). ``bounds = (lo, hi)``
    in the lane's type: a lane with headroom (at least one bit wider than
    BW_acc, accumulator not shifted), where ``a + p`` is exact and a clamp to
    ``[lo, hi]`` is the clip: two vpminsd/vpmaxsd for int32 lanes, where
    AVX2 has no saturating add and ``llvm.sadd.sat`` expands to five
    instructions (measured: the int32 kernel ~18 % faster).
    """
    raise NotImplementedError("called from jitted code only")


@overload(clip_add, inline="always")
def _clip_add_impl(a, p, bounds):
    if isinstance(bounds, types.NoneType):
        return lambda a, p, bounds: sat_add(a, p)

    def clamp(a, p, bounds):  # pragma: no cover - jitted
        u = trunc_as(a + p, a)
        t = min(max(u, bounds[0]), bounds[1])
        return t, t == u

    return clamp


@njit(cache=True, inline="always")
def wrap_add(a, p):  # pragma: no cover - jitted
    """One per-step wrap in a shifted lane and its two counts: (wrapped sum, True if it
    did NOT overflow, True if it wrapped downward). It overflowed where the saturating
    add differs; upward wraps = overflows - downward ones, and the exact sum is
    ``wrapped + 2**BW_acc * (up - down)``."""
    u = trunc_as(a + p, a)
    ov = sadd_sat(a, p) != u
    return u, not ov, ov & (p < 0)


@njit(cache=True, inline="always")
def _nonzero_steps(xr, idx):  # pragma: no cover - jitted
    """Indices k of the non-zero entries of ``xr`` into ``idx`` (branch-free); their count."""
    nnz = 0
    for k in range(xr.shape[0]):
        idx[nnz] = k
        nnz += xr[k] != 0
    return nnz


@njit(cache=True, inline="always")
def _finish_rows(acc, tot, sh, r0, nr, acc_out, row_count, row_affected):  # pragma: no cover
    """Store a block's accumulators (lane value >> sh) and per-row count / affected outputs."""
    for r in range(nr):
        c_sum = 0
        c_out = 0
        for j in range(acc.shape[1]):
            acc_out[r0 + r, j] = np.int64(acc[r, j]) >> sh
            c = tot[r, j]
            c_sum += c
            c_out += c > 0
        row_count[r0 + r] = c_sum
        row_affected[r0 + r] = c_out


@njit(cache=True, parallel=True)
def _dense_sat_lane_kernel(x, w, bias, sh, kchunk, bounds, acc_out, row_count,
                           row_affected):  # pragma: no cover - jitted
    """Per-step clip in lanes of the arrays' width L (:func:`clip_add`).

    ``bounds`` None: the caller stores the BW_acc-bit accumulator and the
    products shifted left by ``sh = L - BW_acc`` (products must lie in the
    accumulator range), so the lane's saturating add (``llvm.sadd.sat``) IS
    the clip to BW_acc bits; an addition overflowed exactly when the
    saturating and the wrapping add differ. ``bounds = (lo, hi)`` (``sh`` 0):
    lanes with headroom, clamped. Zero activations are skipped (adding 0 never overflows; EIE
    does the same) through a branch-free list of each row's non-zero k.
    Counts of additions that did NOT overflow (one vpsubw of the compare
    mask) live in lanes of width L and are flushed to int64 every ``kchunk <
    2**(L-1)`` steps. Vectorised across outputs (PERF-NOTES: narrowest lane).
    """
    m, kk = x.shape
    n = w.shape[1]
    nblk = (m + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for blk in prange(nblk):
        r0 = blk * ROWS_PER_BLOCK
        nr = min(ROWS_PER_BLOCK, m - r0)
        idx = np.empty(kk, dtype=np.int64)
        acc = np.empty((ROWS_PER_BLOCK, n), dtype=bias.dtype)
        kept = np.zeros(n, dtype=bias.dtype)
        tot = np.zeros((ROWS_PER_BLOCK, n), dtype=np.int64)
        for r in range(nr):
            xr = x[r0 + r]
            a = acc[r]
            for j in range(n):
                a[j] = bias[j]
            nnz = _nonzero_steps(xr, idx)
            for c0 in range(0, nnz, kchunk):
                c1 = min(c0 + kchunk, nnz)
                for i in range(c0, c1 - 1, 2):  # two steps per pass: a and kept stay in registers
                    xv = xr[idx[i]]
                    xv2 = xr[idx[i + 1]]
                    wk = w[idx[i]]
                    wk2 = w[idx[i + 1]]
                    for j in range(n):
                        av = a[j]
                        t, ok = clip_add(av, trunc_as(xv * wk[j], av), bounds)
                        t2, ok2 = clip_add(t, trunc_as(xv2 * wk2[j], av), bounds)
                        kept[j] += ok + ok2
                        a[j] = t2
                if (c1 - c0) % 2:
                    xv = xr[idx[c1 - 1]]
                    wk = w[idx[c1 - 1]]
                    for j in range(n):
                        av = a[j]
                        t, ok = clip_add(av, trunc_as(xv * wk[j], av), bounds)
                        kept[j] += ok
                        a[j] = t
                for j in range(n):
                    tot[r, j] += (c1 - c0) - np.int64(kept[j])
                    kept[j] = 0
        _finish_rows(acc, tot, sh, r0, nr, acc_out, row_count, row_affected)


@njit(cache=True, parallel=True)
def _dense_wrap_lane_kernel(x, w, bias, sh, kchunk, acc_bits, acc_out, row_count, row_affected,
                            row_max):  # pragma: no cover - jitted
    """Per-step wrap in lanes of width L, accumulator pre-shifted as in the clip twin.

    The lane's own two's-complement add wraps at BW_acc bits of the shifted
    value; it overflowed when the saturating add differs, upward when the
    product is positive. The exact sum is therefore ``wrapped + 2**BW_acc *
    (up - down)``, which gives ``row_max[b] = max_n |bias + sum_k p|`` without
    a second matmul (the caller checks it fits int64).
    """
    m, kk = x.shape
    n = w.shape[1]
    nblk = (m + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for blk in prange(nblk):
        r0 = blk * ROWS_PER_BLOCK
        nr = min(ROWS_PER_BLOCK, m - r0)
        idx = np.empty(kk, dtype=np.int64)
        acc = np.empty((ROWS_PER_BLOCK, n), dtype=bias.dtype)
        kept = np.zeros(n, dtype=bias.dtype)
        dwn = np.zeros(n, dtype=bias.dtype)
        tot = np.zeros((ROWS_PER_BLOCK, n), dtype=np.int64)
        net = np.zeros(n, dtype=np.int64)
        for r in range(nr):
            xr = x[r0 + r]
            a = acc[r]
            for j in range(n):
                a[j] = bias[j]
                net[j] = 0
            nnz = _nonzero_steps(xr, idx)
            for c0 in range(0, nnz, kchunk):
                c1 = min(c0 + kchunk, nnz)
                for i in range(c0, c1 - 1, 2):  # two steps per pass, as in the clip twin
                    xv = xr[idx[i]]
                    xv2 = xr[idx[i + 1]]
                    wk = w[idx[i]]
                    wk2 = w[idx[i + 1]]
                    for j in range(n):
                        av = a[j]
                        u, ok, down = wrap_add(av, trunc_as(xv * wk[j], av))
                        u2, ok2, down2 = wrap_add(u, trunc_as(xv2 * wk2[j], av))
                        kept[j] += ok + ok2
                        dwn[j] += down + down2
                        a[j] = u2
                if (c1 - c0) % 2:
                    xv = xr[idx[c1 - 1]]
                    wk = w[idx[c1 - 1]]
                    for j in range(n):
                        av = a[j]
                        u, ok, down = wrap_add(av, trunc_as(xv * wk[j], av))
                        kept[j] += ok
                        dwn[j] += down
                        a[j] = u
                for j in range(n):  # up - down = all overflows - 2 * down
                    ovf = (c1 - c0) - np.int64(kept[j])
                    tot[r, j] += ovf
                    net[j] += ovf - 2 * np.int64(dwn[j])
                    kept[j] = 0
                    dwn[j] = 0
            mx = 0
            for j in range(n):
                v = (np.int64(a[j]) >> sh) + (net[j] << acc_bits)
                v = -v if v < 0 else v
                if v > mx:
                    mx = v
            row_max[r0 + r] = mx
        _finish_rows(acc, tot, sh, r0, nr, acc_out, row_count, row_affected)


@njit(cache=True, parallel=True)
def _dense_int64_kernel(x, w, bias, lo, hi, wrap, acc_out, row_count, row_affected):  # pragma: no cover
    """Per-step wrap or clip to ``[lo, hi]`` in int64, order k = 0..K-1 (de Bruin DSD 2018).

    For products wider than the accumulator range (no lane trick): after
    every addition ``acc = ((acc + p - lo) & (hi - lo)) + lo`` (wrap,
    ``hi - lo = 2**BW_acc - 1``) or ``clip(acc + p, lo, hi)``; per row the
    additions whose exact result left ``[lo, hi]`` and the outputs they hit.
    """
    m, kk = x.shape
    n = w.shape[1]
    mask = hi - lo
    nblk = (m + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for blk in prange(nblk):
        r0 = blk * ROWS_PER_BLOCK
        nr = min(ROWS_PER_BLOCK, m - r0)
        acc = np.empty((ROWS_PER_BLOCK, n), dtype=bias.dtype)
        cnt = np.zeros((ROWS_PER_BLOCK, n), dtype=np.int64)
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
                    t = ((s - lo) & mask) + lo if wrap else min(max(s, lo), hi)
                    c[j] += s != t
                    a[j] = t
        _finish_rows(acc, cnt, 0, r0, nr, acc_out, row_count, row_affected)


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
    """``e = int64(s) + bias`` (s: an exact sum, float or int) and per-row max |e|;
    ``e_out`` of shape (0, 0) computes only the maxima."""
    store = e_out.shape[0] > 0
    for b in prange(s.shape[0]):
        mx = 0
        for j in range(s.shape[1]):
            v = np.int64(s[b, j]) + bias[j]
            if store:
                e_out[b, j] = v
            a = -v if v < 0 else v
            if a > mx:
                mx = a
        row_max[b] = mx


@njit(cache=True, inline="always")
def _running_from(bias):  # pragma: no cover - jitted
    """Three int64 arrays (running value, maximum, minimum) that start at ``bias``."""
    a = np.empty(bias.shape[0], dtype=np.int64)
    top = np.empty(bias.shape[0], dtype=np.int64)
    bot = np.empty(bias.shape[0], dtype=np.int64)
    for j in range(bias.shape[0]):
        a[j] = bias[j]
        top[j] = bias[j]
        bot[j] = bias[j]
    return a, top, bot


@njit(cache=True, parallel=True)
def _prefix_max_kernel(x, w, bias, row_max):  # pragma: no cover - jitted
    """``row_max[b]`` = max over n and over prefixes j (the bias alone first) of
    ``|bias[n] + sum_{k<=j} x[b, k] w[k, n]|``: DESIGN.md's ``max_abs_prefix``.

    Exact int64 running sums in the order k = 0..K-1 (the caller checked
    ``max|bias| + K max|x| max|w| < 2**63``); zero activations are skipped,
    they change no prefix. The running maximum and minimum are tracked (they
    vectorise across outputs), ``|prefix|`` taken once at the end.
    """
    m, kk = x.shape
    n = w.shape[1]
    for b in prange(m):
        a, top, bot = _running_from(bias)
        xr = x[b]
        for k in range(kk):
            xv = np.int64(xr[k])
            if xv != 0:
                wk = w[k]
                for j in range(n):
                    v = a[j] + xv * wk[j]
                    a[j] = v
                    top[j] = max(top[j], v)
                    bot[j] = min(bot[j], v)
        mx = 0
        for j in range(n):
            mx = max(mx, top[j], -bot[j])
        row_max[b] = mx


@njit(cache=True, inline="always")
def round_shift(v, shift, mode):  # pragma: no cover - jitted
    """``v / 2**shift`` for ``shift > 0``, rounded by ``mode`` (Rounding.code, not stochastic):
    the rounding of qformat.shift_round."""
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
    return q + up


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
        y = min(max(round_shift(v, shift, mode), y_min), y_max)
    if relu and y < 0:
        y = 0
    return y


@njit(cache=True, inline="always")
def requantize_wrap_one(v, shift, mode, y_min, y_max, relu):  # pragma: no cover - jitted
    """:func:`requantize_one` with ``output_overflow="wrap"``: the rounded (or left-shifted)
    value's low bits, two's complement in [y_min, y_max] (int64 arithmetic wraps modulo
    2**64, a multiple of the format's 2**width), then ReLU."""
    y = v << -shift if shift <= 0 else round_shift(v, shift, mode)
    y = ((y - y_min) & (y_max - y_min)) + y_min
    if relu and y < 0:
        y = 0
    return y


@njit(cache=True, parallel=True)
def _requantize_kernel(acc, shift, mode, y_min, y_max, wrap, relu, out):  # pragma: no cover - jitted
    """:func:`requantize_one` (``wrap``: :func:`requantize_wrap_one`) over flat arrays."""
    if wrap:
        for i in prange(acc.size):
            out[i] = requantize_wrap_one(acc[i], shift, mode, y_min, y_max, relu)
    else:
        for i in prange(acc.size):
            out[i] = requantize_one(acc[i], shift, mode, y_min, y_max, relu)


# ----------------------------------------------------------------- the knobs (DESIGN.md, issue 16)

def term_args(d: int, mode: int) -> tuple[int, int, int, int, int]:
    """``(left, s, a, b, c)`` of :func:`at_frac_acc` for the product shift ``d = FL_acc -
    (FL_w + FL_x)`` and ``mode`` (Rounding.code, not stochastic).

    A rounding right shift by s is ``(p + a + (b if p < 0) + (c if floor(p / 2**s) is odd))
    >> s`` (floor division): floor a = b = c = 0; nearest (ties away from zero) a = 2**(s-1),
    b = -1; nearest-even a = 2**(s-1) - 1, c = 1; toward zero b = 2**s - 1. Branch-free, so
    the kernels vectorise it; exact in int64 since every |product| < 2**62 (LayerConfig).
    """
    if d >= 0:
        return d, 0, 0, 0, 0
    sh = -d
    half = 1 << (sh - 1)
    a, b, c = {0: (half - 1, 0, 1), 1: (half, -1, 0), 2: (0, 0, 0), 3: (0, (1 << sh) - 1, 0)}[mode]
    return 0, sh, a, b, c


@njit(cache=True, inline="always")
def at_frac_acc(p, left, s, a, b, c):  # pragma: no cover - jitted
    """A product ``p`` (FL_w + FL_x fraction bits) at FL_acc: ``p << left`` exactly, or
    rounded right by ``s`` bits (:func:`term_args`; one of ``left``, ``s`` is 0)."""
    return ((p << left) + a + (b & (p >> 63)) + (c & (p >> s))) >> s


@njit(cache=True, inline="always")
def overflow_to(s, lo, hi, mode):  # pragma: no cover - jitted
    """``s`` wrapped (mode 0, Overflow.WRAP) or clipped (1, CLIP) to ``[lo, hi]`` (``hi - lo =
    2**BW_acc - 1``); ideal (2) leaves it."""
    if mode == 0:
        return ((s - lo) & (hi - lo)) + lo
    if mode == 1:
        return min(max(s, lo), hi)
    return s


@njit(cache=True, inline="always")
def _add_term(a, c, cc, j, q, cast, lo, hi, mode):  # pragma: no cover - jitted
    """One addition of the term ``q`` (a product at FL_acc) into register ``a[j]``: cast to
    BW_acc first when ``cast`` (``cc[j]`` counts the casts that changed it), then wrap / clip /
    ideal (``c[j]`` counts the additions that overflowed)."""
    v = overflow_to(q, lo, hi, mode) if cast else q
    cc[j] += v != q
    s = a[j] + v
    r = overflow_to(s, lo, hi, mode)
    c[j] += r != s
    a[j] = r


@njit(cache=True, inline="always")
def _abs_max(top, bot):  # pragma: no cover - jitted
    """max_j max(top[j], -bot[j]): the largest |value| between running maxima and minima."""
    mx = 0
    for j in range(top.shape[0]):
        mx = max(mx, top[j], -bot[j])
    return mx


@njit(cache=True, parallel=True)
def _knob_seq_kernel(x, w, bias, perm, targs, cast, lo, hi, mode, exact, acc_out, cnt_out, row_cast,
                     row_max, row_prefix):  # pragma: no cover - jitted
    """Per-step accumulation in the order ``perm`` (sequential or ``strided:RF``) of the
    products at FL_acc (:func:`at_frac_acc` with ``targs`` = :func:`term_args`), cast when
    ``cast`` and the register wrapped / clipped / ideal after every addition (``mode`` =
    Overflow.code; :func:`_add_term`).

    Per output: the register (``acc_out``) and its overflowed additions (``cnt_out``); per
    row: the casts that changed a product (``row_cast``) and, when ``exact`` (the caller
    checked ``max|bias| + K max|term| < 2**63``), the largest exact |bias + sum of terms|
    (``row_max``) and |prefix|, bias first (``row_prefix``). Zero activations are skipped: a
    zero term changes no register, count or prefix. Counts live in local arrays: a row of
    ``cnt_out`` might alias ``w`` for LLVM and stop it vectorising across outputs.
    """
    m, kk = x.shape
    n = w.shape[1]
    left, sh, ra, rb, rc = targs
    for b in prange(m):
        a, top, bot = _running_from(bias)
        e = a.copy()
        c = np.zeros(n, dtype=np.int64)
        cc = np.zeros(n, dtype=np.int64)
        xr = x[b]
        for t in range(kk):
            k = perm[t]
            xv = np.int64(xr[k])
            if xv == 0:
                continue
            wk = w[k]
            if exact:
                for j in range(n):
                    q = at_frac_acc(xv * wk[j], left, sh, ra, rb, rc)
                    _add_term(a, c, cc, j, q, cast, lo, hi, mode)
                    ev = e[j] + q
                    e[j] = ev
                    top[j] = max(top[j], ev)
                    bot[j] = min(bot[j], ev)
            else:
                for j in range(n):
                    _add_term(a, c, cc, j, at_frac_acc(xv * wk[j], left, sh, ra, rb, rc), cast, lo, hi, mode)
        nc = 0
        for j in range(n):
            acc_out[b, j] = a[j]
            cnt_out[b, j] = c[j]
            nc += cc[j]
        row_cast[b] = nc
        if exact:
            row_max[b] = _abs_max(e, e)
            row_prefix[b] = _abs_max(top, bot)


@njit(cache=True, inline="always")
def _tree_node(va, ea, vb, eb, c, top, bot, lo, hi, mode, exact):  # pragma: no cover - jitted
    """One adder level of the tree across outputs: ``(vb, eb) <- (va + vb, ea + eb)``, the
    register wrapped / clipped / ideal (``c`` counts overflows), the exact node value's
    running maximum and minimum in ``top`` / ``bot`` when ``exact``."""
    if exact:
        for j in range(vb.shape[0]):
            s = va[j] + vb[j]
            r = overflow_to(s, lo, hi, mode)
            c[j] += r != s
            vb[j] = r
            ev = ea[j] + eb[j]
            eb[j] = ev
            top[j] = max(top[j], ev)
            bot[j] = min(bot[j], ev)
    else:
        for j in range(vb.shape[0]):
            s = va[j] + vb[j]
            r = overflow_to(s, lo, hi, mode)
            c[j] += r != s
            vb[j] = r


@njit(cache=True, parallel=True)
def _knob_tree_kernel(x, w, bias, targs, cast, lo, hi, mode, exact, acc_out, cnt_out, row_cast,
                      row_max, row_prefix):  # pragma: no cover - jitted
    """``order="tree"``: the K terms (in the sequential order, cast as in
    :func:`_knob_seq_kernel`) added pairwise, adjacent pairs, an odd last one carried up
    unchanged, each node wrapped / clipped / ideal to BW_acc (``mode``); the bias added to
    the root last. Outputs as :func:`_knob_seq_kernel`, ``row_prefix`` the largest exact
    |node| (pair sums and the bias addition).

    Streamed, vectorised across outputs, with one pending node per level: node i of level
    L sums the aligned block of leaves [i 2**L, (i + 1) 2**L) (a carried node is its own
    block cut at K), so leaf k completes the blocks of its trailing one bits (merged with
    the pending nodes), and at the end the pending complete blocks, one per set bit of K,
    are added smallest first: exactly the level-by-level tree, in O(log K) memory.
    """
    m, kk = x.shape
    n = w.shape[1]
    left, sh, ra, rb, rc = targs
    levels = 1
    while (1 << levels) <= kk:
        levels += 1
    nblk = (m + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for blk in prange(nblk):
        sv = np.empty((levels, n), dtype=np.int64)  # pending node of each level: register
        se = np.empty((levels, n), dtype=np.int64)  # and exact value
        cv = np.empty(n, dtype=np.int64)
        ce = np.empty(n, dtype=np.int64)
        top = np.empty(n, dtype=np.int64)
        bot = np.empty(n, dtype=np.int64)
        c = np.empty(n, dtype=np.int64)
        cc = np.empty(n, dtype=np.int64)
        for b in range(blk * ROWS_PER_BLOCK, min(m, (blk + 1) * ROWS_PER_BLOCK)):
            xr = x[b]
            for j in range(n):
                c[j] = 0
                cc[j] = 0
                top[j] = 0
                bot[j] = 0
            for k in range(kk):
                xv = np.int64(xr[k])
                wk = w[k]
                for j in range(n):
                    q = at_frac_acc(xv * wk[j], left, sh, ra, rb, rc)
                    v = overflow_to(q, lo, hi, mode) if cast else q
                    cc[j] += v != q
                    cv[j] = v
                    ce[j] = q
                lev = 0
                while (k >> lev) & 1:  # leaf k closes the blocks of its trailing ones
                    _tree_node(sv[lev], se[lev], cv, ce, c, top, bot, lo, hi, mode, exact)
                    lev += 1
                sv[lev, :] = cv
                se[lev, :] = ce
            first = True
            for lev in range(levels):  # the pending complete blocks, smallest first
                if (kk >> lev) & 1:
                    if first:
                        cv[:] = sv[lev]
                        ce[:] = se[lev]
                        first = False
                    else:
                        _tree_node(sv[lev], se[lev], cv, ce, c, top, bot, lo, hi, mode, exact)
            nc = 0
            for j in range(n):
                s = cv[j] + bias[j]
                r = overflow_to(s, lo, hi, mode)
                acc_out[b, j] = r
                cnt_out[b, j] = c[j] + (r != s)
                nc += cc[j]
                ev = ce[j] + bias[j]
                top[j] = max(top[j], ev)
                bot[j] = min(bot[j], ev)
                ce[j] = ev
            row_cast[b] = nc
            if exact:
                row_max[b] = _abs_max(ce, ce)
                row_prefix[b] = _abs_max(top, bot)
