"""Numba kernels of a compiled plan (:mod:`fxpsim.simulate.plan`): one call per step of a network.

Each kernel runs one step of :meth:`fxpsim.simulate.Simulator.simulate` on the first ``m``
rows of preallocated flat buffers (C order of the batch's arrays, so a flat index is the
counter of DESIGN.md's stochastic draw) with its operands checked once, when the plan was
built. Nothing is validated here (STYLE.md: arrays and ints in). The arithmetic is
DESIGN.md's "Fixed-point semantics", the same as the engines':

- :func:`quantize_input`: the model's preprocessing in float32 (``Preprocess.apply``), then
  :func:`fxpsim.qformat.quantize` (scale by 2**FL exactly, round, clip) in the same float
  operations; status 1 (NaN/inf) or 2 (a scaled value outside the normal doubles) sends
  the caller to the NumPy path;
- :func:`dense_step`, :func:`conv_step`: the accumulator starts at the bias and every
  product (at FL_acc: shifted left, or rounded with ``product_rounding``; ``product="cast"``:
  wrapped or clipped to BW_acc first) is added in the layer's order (sequential or
  ``strided:RF``, a permutation of k; conv taps channel -> row -> column) with the register
  wrapped or clipped after every addition (``ideal``: unbounded); then
  :func:`requantize_value`: round by FL_acc - FL_y, clip or wrap to fmt_y, ReLU. The
  registers live in lanes of the weights' dtype (int16, int32 or int64, the plan's choice:
  the narrowest that holds every operand and, for clip, every acc + product; wrap adds
  modulo the lane and wraps once at the end, modular arithmetic, DESIGN.md); zero
  activations are skipped (adding 0 changes no register);
- :func:`convert_step` (:func:`fxpsim.qformat.convert`, shifts up to 62 bits),
  :func:`pool_step` (max and average, :mod:`fxpsim.simulate.post`), :func:`relu_step`,
  :func:`logits_step` (dequantize and argmax).

Stochastic rounding draws :func:`splitmix_bits` (``fxpsim.qformat.stochastic_bits`` on
scalars). Python twins: :mod:`fxpsim.datapath.reference` (dense, conv) and
:mod:`fxpsim.datapath.plan_reference` (the rest); tests/test_plan.py compares them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .jit import (at_frac_acc, overflow_to, requantize_one, requantize_wrap_one, round_shift, sadd_sat,
                  trunc_as)

ROWS_PER_TASK = 4
"""Images per parallel task of the ``*_parallel`` kernels."""
STOCHASTIC = 4
"""``Rounding.STOCHASTIC.code``."""
WRAP, CLIP = 0, 1
"""``Overflow.code`` of wrap and clip (ideal is 2)."""

A_LO, A_HI, A_MODE, A_ADD, A_CAST, A_ENDWRAP, A_TERMS = range(7)
"""Layout of ``accp`` (:func:`acc_params`)."""
ADD_CLAMP, ADD_SAT, ADD_MASK, ADD_PLAIN, ADD_KNOB = range(5)
"""The additions of :func:`_accumulate_rows` (``ADDS``)."""
ADDS = {"clamp": ADD_CLAMP, "sat": ADD_SAT, "mask": ADD_MASK, "plain": ADD_PLAIN, "knob": ADD_KNOB}
"""clamp: clip to [lo, hi] in a lane that holds acc + p; sat: the lane's saturating add (BW_acc =
lane width); mask: wrap in int64 after every addition; plain: plain adds (ideal exact, or wrap
modulo the lane, with ``endwrap``); knob: each product rounded to FL_acc / cast, int64."""
R_SHIFT, R_MODE, R_YMIN, R_YMAX, R_WRAP, R_RELU = range(6)
"""Layout of ``req`` (:func:`req_params`)."""


def acc_params(lo: int, hi: int, mode: int, add: str, cast: bool, endwrap: bool, terms) -> np.ndarray:
    """``accp`` of :func:`dense_step` / :func:`conv_step`: the BW_acc range, Overflow.code, the
    addition (:data:`ADDS`; knob: each product rounded to FL_acc by ``terms`` =
    :func:`~.jit.term_args`, cast to BW_acc when ``cast``), and ``endwrap``: wrap once at the end."""
    return np.array([lo, hi, mode, ADDS[add], cast, endwrap, *terms], np.int64)


def req_params(shift: int, mode: int, y_min: int, y_max: int, wrap: bool, relu: bool) -> np.ndarray:
    """``req`` of :func:`requantize_value`: FL_acc - FL_y, Rounding.code, fmt_y's raw range,
    ``output_overflow="wrap"``, ReLU."""
    return np.array([shift, mode, y_min, y_max, wrap, relu], np.int64)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_M53 = 2.0 ** -53


@njit(cache=True, inline="always")
def splitmix_bits(seed, index, bits):  # pragma: no cover - jitted
    """The top ``bits`` bits of SplitMix64(``seed`` + GOLDEN (index + 1)) (``seed`` uint64):
    :func:`fxpsim.qformat.stochastic_bits` of one element."""
    z = seed + _GOLDEN * (np.uint64(index) + np.uint64(1))
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.int64(z >> np.uint64(64 - bits))


@njit(cache=True, inline="always")
def shift_round_value(v, s, mode, seed, index):  # pragma: no cover - jitted
    """``v / 2**s`` rounded by ``mode`` (Rounding.code; stochastic: up iff the draw of
    ``index`` is below the dropped bits), ``s >= 0`` (:func:`fxpsim.qformat.shift_round`)."""
    if s == 0:
        return v
    if mode != STOCHASTIC:
        return round_shift(v, s, mode)
    q = v >> s
    return q + (splitmix_bits(seed, index, s) < v - (q << s))


@njit(cache=True, inline="always")
def requantize_value(v, index, req, seed):  # pragma: no cover - jitted
    """One accumulator value -> output raw (:func:`fxpsim.datapath.core.requantize`): the
    jit twins for fixed rounding, the counter-based draw of ``index`` for stochastic."""
    s, mode, y_min, y_max = req[R_SHIFT], req[R_MODE], req[R_YMIN], req[R_YMAX]
    wrap, relu = req[R_WRAP] != 0, req[R_RELU] != 0
    if mode != STOCHASTIC or s <= 0:  # no rounding below 0 bits: stochastic is any mode
        m = 0 if mode == STOCHASTIC else mode
        return requantize_wrap_one(v, s, m, y_min, y_max, relu) if wrap else \
            requantize_one(v, s, m, y_min, y_max, relu)
    y = shift_round_value(v, s, mode, seed, index)
    y = ((y - y_min) & (y_max - y_min)) + y_min if wrap else min(max(y, y_min), y_max)
    return max(y, 0) if relu else y


@njit(cache=True, inline="always")
def _add_clamp(a, p, c):  # pragma: no cover - jitted
    """One addition, the register clipped to [lo, hi] = c[0], c[1] (the lane holds a + p exactly)."""
    return min(max(trunc_as(a + p, a), c[0]), c[1])


@njit(cache=True, inline="always")
def _add_sat(a, p, c):  # pragma: no cover - jitted
    """One addition clipped to the lane's own range (BW_acc = lane width: ``llvm.sadd.sat``)."""
    return sadd_sat(a, p)


@njit(cache=True, inline="always")
def _add_mask(a, p, c):  # pragma: no cover - jitted
    """One addition, the int64 register wrapped to [lo, hi] (c[2] = hi - lo = 2**BW_acc - 1)."""
    return ((a + p - c[0]) & c[2]) + c[0]


@njit(cache=True, inline="always")
def _add_plain(a, p, c):  # pragma: no cover - jitted
    """One addition in the lane: exact (ideal), or modulo the lane width (wrap, wrapped once at
    the end: only the low BW_acc bits matter)."""
    return trunc_as(a + p, a)


@njit(cache=True, inline="always")
def _add_knob(a, p, c):  # pragma: no cover - jitted
    """One addition of the product ``p`` at FL_acc (:func:`~.jit.at_frac_acc` with c[4:9]), cast
    first when c[9], with the register's Overflow.code c[3] (:func:`~.jit.overflow_to`); int64."""
    lo, hi, mode = c[0], c[1], c[3]
    q = at_frac_acc(p, c[4], c[5], c[6], c[7], c[8])
    if c[9]:
        q = overflow_to(q, lo, hi, mode)
    return overflow_to(a + q, lo, hi, mode)


@njit(cache=True, inline="always")
def _rows_pass(acc, s, rows, add, c, idx):  # pragma: no cover - jitted
    """``acc[j] = add(acc[j], s[t] * rows[t, j], c)`` for t = 0..K-1 in turn, every output j;
    ``add`` is one of the ``_add_*`` above, compiled into the loop, so the inner loop is one
    vectorised pass across the outputs in the lanes of ``acc``'s dtype (the product exact in
    int64, kept in the lane). Zero ``s[t]`` add nothing and are skipped (their indices
    listed in ``idx`` first); the rest go two per pass, the register kept in a vector register
    between them (measured: digits-CNN conv2 1.3x faster)."""
    kk, n = rows.shape
    nnz = 0
    for t in range(kk):
        idx[nnz] = t
        nnz += s[t] != 0
    for i in range(0, nnz - 1, 2):
        s1, s2 = s[idx[i]], s[idx[i + 1]]
        r1, r2 = rows[idx[i]], rows[idx[i + 1]]
        for j in range(n):
            a = add(acc[j], trunc_as(s1 * r1[j], acc[j]), c)
            acc[j] = add(a, trunc_as(s2 * r2[j], a), c)
    if nnz % 2:
        sv, r = s[idx[nnz - 1]], rows[idx[nnz - 1]]
        for j in range(n):
            acc[j] = add(acc[j], trunc_as(sv * r[j], acc[j]), c)


@njit(cache=True, inline="always")
def _accumulate_rows(acc, s, rows, accp, idx):  # pragma: no cover - jitted
    """``acc[j] += s[t] * rows[t, j]`` for t = 0..K-1 in turn, every output j, one addition
    each as ``accp[A_ADD]`` says (:data:`ADDS`; ``idx``: scratch of K), then the deferred wrap
    (``A_ENDWRAP``). The
    addition is chosen once, outside the loops (measured: a choice per addition, or per t,
    made the LeNet-5-sized conv 1.5x slower)."""
    z = acc[0]
    lo, hi = accp[A_LO], accp[A_HI]
    c = (trunc_as(lo, z), trunc_as(hi, z), hi - lo, accp[A_MODE], accp[A_TERMS], accp[A_TERMS + 1],
         accp[A_TERMS + 2], accp[A_TERMS + 3], accp[A_TERMS + 4], accp[A_CAST])
    add = accp[A_ADD]
    if add == ADD_KNOB:
        _rows_pass(acc, s, rows, _add_knob, c, idx)
    elif add == ADD_CLAMP:
        _rows_pass(acc, s, rows, _add_clamp, c, idx)
    elif add == ADD_SAT:
        _rows_pass(acc, s, rows, _add_sat, c, idx)
    elif add == ADD_MASK:
        _rows_pass(acc, s, rows, _add_mask, c, idx)
    else:
        _rows_pass(acc, s, rows, _add_plain, c, idx)
    if accp[A_ENDWRAP]:  # in int64: the lane value is the exact sum modulo 2**lane >= 2**BW_acc
        mask = hi - lo
        for j in range(acc.shape[0]):
            acc[j] = ((np.int64(acc[j]) - lo) & mask) + lo


@njit(cache=True)
def _dense_rows(r0, r1, x, y, w, bias, perm, accp, req, seed):  # pragma: no cover - jitted
    """Rows r0..r1-1 of :func:`dense_step`."""
    kk, n = w.shape
    acc = np.empty(n, dtype=w.dtype)  # the lane type the plan chose
    xs = np.empty(kk, dtype=w.dtype)
    idx = np.empty(kk, dtype=np.int64)
    for b in range(r0, r1):
        xo = b * kk
        for t in range(kk):
            xs[t] = x[xo + perm[t]]
        for j in range(n):
            acc[j] = bias[j]
        _accumulate_rows(acc, xs, w, accp, idx)
        yo = b * n
        for j in range(n):
            y[yo + j] = requantize_value(np.int64(acc[j]), yo + j, req, seed)


@njit(cache=True)
def dense_step(m, x, y, w, bias, perm, accp, req, seeds):  # pragma: no cover - jitted
    """Dense rows 0..m-1: ``x`` flat (m, K) raw of fmt_x, ``w`` (K, N) in the lane dtype, row t
    the weights of input ``perm[t]`` (the layer's order; FL_acc > FL_w + FL_x: already
    shifted left), ``bias`` (N,) in the accumulator format; ``y`` flat (m, N) raw of fmt_y."""
    _dense_rows(0, m, x, y, w, bias, perm, accp, req, seeds[0])


@njit(cache=True, parallel=True)
def dense_step_parallel(m, x, y, w, bias, perm, accp, req, seeds):  # pragma: no cover - jitted
    """:func:`dense_step` with blocks of :data:`ROWS_PER_TASK` rows on Numba's threads."""
    for blk in prange((m + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        r0 = blk * ROWS_PER_TASK
        _dense_rows(r0, min(m, r0 + ROWS_PER_TASK), x, y, w, bias, perm, accp, req, seeds[0])


@njit(cache=True)
def _conv_rows(r0, r1, x, y, w, bias, taps, geo, accp, req, seed):  # pragma: no cover - jitted
    """Rows r0..r1-1 of :func:`conv_step`."""
    f_, kk = w.shape
    c_, h_, w_, oh_, ow_, stride, pad = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6]
    plane = oh_ * ow_
    patch = np.empty((kk, plane), dtype=w.dtype)  # the lane type the plan chose
    acc = np.empty(plane, dtype=w.dtype)
    idx = np.empty(kk, dtype=np.int64)
    for b in range(r0, r1):
        xb = b * c_ * h_ * w_
        for t in range(kk):
            xc = xb + taps[t, 0] * h_ * w_
            j = taps[t, 2]
            # output columns whose input column ow * stride - pad + j lies inside the image
            ow_lo = min(max(-((j - pad) // stride), 0), ow_)
            ow_hi = min(max((w_ - 1 + pad - j) // stride + 1, ow_lo), ow_)
            pt = patch[t]
            for oh in range(oh_):
                ih = oh * stride - pad + taps[t, 1]
                row = oh * ow_
                if ih < 0 or ih >= h_:
                    for ow in range(ow_):
                        pt[row + ow] = 0
                    continue
                for ow in range(ow_lo):
                    pt[row + ow] = 0
                src = xc + ih * w_ - pad + j
                for ow in range(ow_lo, ow_hi):
                    pt[row + ow] = x[src + ow * stride]
                for ow in range(ow_hi, ow_):
                    pt[row + ow] = 0
        for f in range(f_):
            for p in range(plane):
                acc[p] = bias[f]
            _accumulate_rows(acc, w[f], patch, accp, idx)
            base = (b * f_ + f) * plane
            for p in range(plane):
                y[base + p] = requantize_value(np.int64(acc[p]), base + p, req, seed)


@njit(cache=True)
def conv_step(m, x, y, w, bias, taps, geo, accp, req, seeds):  # pragma: no cover - jitted
    """Direct NCHW conv of rows 0..m-1, zero padding: ``geo`` = (C, H, W, OH, OW, stride,
    padding); ``taps`` (K, 3) the (channel, kernel row, kernel column) of each tap in the
    layer's order, ``w`` (F, K) (lane dtype) the filters' weights of those taps (shifted as in
    :func:`dense_step`); ``y`` flat (m, F, OH, OW).

    Per image, the taps' activations at every output position (K, OH*OW; padding 0) are
    gathered once; each filter's accumulators then run over the positions, which
    vectorises (PERF-NOTES: across outputs), each output still adding its taps in order."""
    _conv_rows(0, m, x, y, w, bias, taps, geo, accp, req, seeds[0])


@njit(cache=True, parallel=True)
def conv_step_parallel(m, x, y, w, bias, taps, geo, accp, req, seeds):  # pragma: no cover - jitted
    """:func:`conv_step` with blocks of :data:`ROWS_PER_TASK` rows on Numba's threads."""
    for blk in prange((m + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        r0 = blk * ROWS_PER_TASK
        _conv_rows(r0, min(m, r0 + ROWS_PER_TASK), x, y, w, bias, taps, geo, accp, req, seeds[0])


@njit(cache=True)
def convert_step(m, x, y, size, conv, seeds):  # pragma: no cover - jitted
    """:func:`fxpsim.qformat.convert` of ``m * size`` raw values: ``conv`` = (s = FL_src -
    FL_dst, Rounding.code, dst raw min, max, lo, hi): s >= 0 a rounding shift (s <= 62) then
    saturation; s < 0 an exact left shift of values in [lo, hi], the rails beyond."""
    s, mode, d_min, d_max, lo, hi = conv[0], conv[1], conv[2], conv[3], conv[4], conv[5]
    seed = seeds[0]
    k = min(-s, 62)
    for i in range(m * size):
        v = np.int64(x[i])
        if s >= 0:
            y[i] = min(max(shift_round_value(v, s, mode, seed, i), d_min), d_max)
        elif v > hi:
            y[i] = d_max
        elif v < lo:
            y[i] = d_min
        else:
            y[i] = v << k


@njit(cache=True)
def relu_step(m, x, size):  # pragma: no cover - jitted
    """ReLU in place on ``m * size`` raw values."""
    for i in range(m * size):
        if x[i] < 0:
            x[i] = 0


@njit(cache=True, inline="always")
def div_round(total, n, shift, mode, seed, index):  # pragma: no cover - jitted
    """``total / n`` with ``mode`` (average pooling, :func:`fxpsim.simulate.post._div_round`):
    ``shift >= 0``: n = 2**shift, a rounding shift (stochastic too); else fixed modes only."""
    if shift >= 0:
        return shift_round_value(total, shift, mode, seed, index)
    q = total // n
    rem = total - q * n
    if mode == 2:  # floor
        return q
    if mode == 3:  # toward zero
        return q + (rem != 0 and total < 0)
    if mode == 1:  # nearest, ties away from zero
        return q + (2 * rem > n or (2 * rem == n and total >= 0))
    return q + (2 * rem > n or (2 * rem == n and (q & 1) == 1))  # nearest-even


@njit(cache=True)
def pool_step(m, x, y, geo, seeds):  # pragma: no cover - jitted
    """Pooling over k x k windows at ``stride`` (no padding, floor mode; :mod:`fxpsim.simulate.post`):
    ``geo`` = (C, H, W, k, stride, OH, OW, average?, Rounding.code, log2(k*k) or -1); x flat
    (m, C, H, W) -> y flat (m, C, OH, OW). Max is exact; average divides the exact int64 sum
    with the layer's rounding (:func:`div_round`)."""
    c_, h_, w_, k, st, oh_, ow_ = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6]
    average, mode, shift = geo[7] != 0, geo[8], geo[9]
    seed = seeds[0]
    for p in range(m * c_):
        xo, yo = p * h_ * w_, p * oh_ * ow_
        for oh in range(oh_):
            for ow in range(ow_):
                r0 = xo + oh * st * w_ + ow * st
                idx = yo + oh * ow_ + ow
                v = x[r0]
                if average:
                    v = np.int64(0)
                    for i in range(k):
                        for j in range(k):
                            v += x[r0 + i * w_ + j]
                    y[idx] = div_round(v, k * k, shift, mode, seed, idx)
                else:
                    for i in range(k):
                        for j in range(k):
                            v = max(v, x[r0 + i * w_ + j])
                    y[idx] = v


@njit(cache=True)
def quantize_input(m, x, mean, std, pre, fq, seeds, out):  # pragma: no cover - jitted
    """Rows 0..m-1 of ``x`` (float64, flat (m, E)) -> raw ints of the first layer's fmt_x.

    ``pre``: first ``(float32(x) - mean) / std`` in float32 (``Preprocess.apply``; ``mean``,
    ``std`` float32 of E elements). ``fq`` = (frac_bits, raw_min, raw_max, Rounding.code):
    :func:`fxpsim.qformat.quantize` with overflow clip, the same float operations. Returns 0,
    1 (a value is NaN or inf) or 2 (2**frac_bits, or a nonzero scaled value, is not a normal
    double: the caller takes the NumPy path, which handles it exactly).
    """
    e = mean.shape[0]
    frac, r_min, r_max, mode = fq[0], fq[1], fq[2], fq[3]
    if not -1022 <= frac <= 1023:
        return 2  # 2**frac is no normal double: the NumPy path scales exactly
    scale = math.ldexp(1.0, frac)  # v * scale is exact whenever the result is a normal double
    f_min, f_max = np.float64(r_min), np.float64(r_max)
    seed = seeds[0]
    for b in range(m):
        for k in range(e):
            i = b * e + k
            v = x[i]
            if pre:
                v = np.float64((np.float32(v) - mean[k]) / std[k])
            if not math.isfinite(v):
                return 1
            s = v * scale
            if not (abs(s) < math.inf and (abs(s) >= 2.2250738585072014e-308 or v == 0.0)):
                return 2
            if mode == 0:  # nearest-even
                r = np.rint(s)
            elif mode == 1:  # nearest, ties away from zero
                mag = abs(s)
                low = np.floor(mag)
                r = np.copysign(low + (1.0 if mag - low >= 0.5 else 0.0), s)
            elif mode == 2:
                r = np.floor(s)
            elif mode == 3:
                r = np.trunc(s)
            else:
                low = np.floor(s)
                u = np.float64(splitmix_bits(seed, i, 53)) * _TWO_M53
                r = low + (1.0 if u < s - low else 0.0)
            r = min(max(r, f_min), f_max)
            out[i] = min(max(np.int64(r), r_min), r_max)
    return 0


@njit(cache=True)
def logits_step(m, x, n, frac, raw, logits, pred):  # pragma: no cover - jitted
    """Rows of ``x`` (flat (m, n)) into ``raw``, ``logits = raw * 2**-frac`` (float64; the
    caller checked the results are normal doubles or 0) and ``pred`` the first index of
    each row's maximum (:func:`fxpsim.qformat.dequantize`, ``argmax``)."""
    for b in range(m):
        best = 0
        for j in range(n):
            raw[b, j] = x[b * n + j]
            v = math.ldexp(np.float64(x[b * n + j]), -frac)
            logits[b, j] = v
            if v > logits[b, best]:
                best = j
        pred[b] = best
