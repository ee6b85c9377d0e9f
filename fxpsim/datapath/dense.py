"""The dense engine: bit-exact dense and 2-D conv layers with a BW_acc accumulator.

Semantics (DESIGN.md, de Bruin et al. DSD 2018): products are exact
(FL_acc = FL_w + FL_x); the accumulator holds BW_acc bits, starts at the bias
and is wrapped or clipped after EVERY addition, in the fixed order dense
k = 0..K-1, conv channel -> kernel row -> kernel column (``ideal``: an
unbounded accumulator). The output is ``shift_round(acc, FL_acc - FL_y)``,
clipped to ``fmt_y``, then the activation, all on integers. The layer's
:class:`~fxpsim.config.LayerConfig` is taken as it is; the operands are
checked, and the output requantized, by :mod:`.core`.

Statistics (:class:`~.core.OverflowStats`), identical in :mod:`.reference`:

- ``additions``: MACs performed, ``outputs * K`` (padded conv taps included).
- ``overflow_count``: additions whose exact result ``acc + p`` was outside
  the BW_acc range (so the register wrapped or saturated); 0 for ``ideal``.
- ``outputs_affected``: outputs with at least one such addition.
- ``max_abs_acc``: the largest ``|bias + sum_k p_k|`` over outputs, i.e. the
  final value of an unbounded accumulator (a Python int, exact at any
  size). It sizes accumulators: a wrap accumulator gives the ideal result
  exactly when this fits (modular arithmetic), whatever the prefix sums did;
  overflow_count tells whether clip saturated on the way.
- ``max_abs_prefix`` (only with ``prefix_stats=True``, else None): the
  largest ``|bias + sum_{k<=j} p_k|`` over outputs and every prefix j of the
  layer's order, the bias alone first: what an exact accumulator must hold
  at every step (what clip needs). Exact or absent, never an estimate.

Fast paths, all exact (PERF-NOTES): the exact sum comes from float32 BLAS
when every |partial sum| < 2**24, float64 when < 2**53, int64 matmul below
2**63, Python ints beyond. Wrap is modular, so ``wrap(exact sum)`` is the
per-step result. A cheap bound first (sum_k |x_bk w_kn| <= rowabs_b *
colmax_n): outputs whose prefix sums provably stay in range in ANY order
have no overflow and take the exact sum. Where it fails, an exact check
(bias + sum of positive products <= max, bias + sum of negative products
>= min, from T = |x| @ |w| and S) runs unless a row sample shows it
hopeless. Only the remaining outputs run the sequential kernel (clip's
value; both modes' overflow counts). When every output is at risk, the
sequential kernel runs alone: wrap rebuilds the exact sums from its
counts of upward and downward wraps, so only clip still needs the BLAS
sum (for ``max_abs_acc``). The kernels skip zero activations, which add
nothing and never overflow.

Every comparison that decides exactness is exact: the float bounds
(rowabs, colmax, bound) are upper bounds by a relative margin
(:func:`_margin`), the room to the rails is rounded DOWN to a double
(:func:`_room`), and the exact check compares int64 values only.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache, partial

import numpy as np

from ..config import LayerConfig
from ..qformat import MAX_WIDTH, Overflow
from . import jit
from .core import (DatapathResult, OverflowStats, call_config, check_operands, check_prefix_flag,
                   conv_geometry, im2col, requantize, threads_for)

__all__ = ["DatapathResult", "OverflowStats", "conv2d", "dense", "lane_plan"]

_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53
_I64_LIMIT = 1 << 63


# ----------------------------------------------------------------- exact sums and bounds

def _as_float(a: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


_SMALL_BLAS = 1 << 28
"""MACs below which BLAS runs on one thread: OpenBLAS's idle workers spin for ~0.1 s
after a call, and the next Numba parallel kernel waits 6-8 ms for a core (measured on a
2-core machine). One thread costs W / 18 GMAC/s there, two W / 36: break-even ~2**28.
Measured: dense 256x784x300 20.8 -> 4.8 ms (ideal), 33.8 -> 12.2 ms (clip BW_acc 16)."""

@lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS, made once (it scans the loaded libraries).

    First runs one small multi-threaded sgemm: until OpenBLAS has run one, its
    sgemm limited to one thread is ~3x slower (measured: 1000x784x300 41 ms,
    13 ms after a 256x256x256 warm-up, 1 ms).
    """
    from threadpoolctl import ThreadpoolController
    warm = np.ones((256, 256), np.float32)
    warm @ warm
    return ThreadpoolController()


@contextmanager
def _blasthreads_for(work: int):
    """One BLAS thread for small matmuls, the configured count otherwise."""
    if work >= _SMALL_BLAS:
        yield
        return
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


def _exact_matmul(x: np.ndarray, w: np.ndarray, bound: float) -> np.ndarray:
    """Exact ``x @ w`` given ``bound`` >= every |partial sum| (int64, or object beyond 2**63)."""
    if bound < _F64_EXACT:  # float result holding exact integers
        dt = np.float32 if bound < _F32_EXACT else np.float64
        with _blasthreads_for(x.shape[0] * x.shape[1] * w.shape[1]):
            return _as_float(x, dt) @ _as_float(w, dt)
    if bound < _I64_LIMIT:
        return x.astype(np.int64) @ w.astype(np.int64)
    return x.astype(object) @ w.astype(object)  # beyond int64: Python ints, slow but exact


def _max_abs(a: np.ndarray) -> int:
    """max |a| as a Python int, without an int64 copy of ``a``."""
    return max(-int(a.min()), int(a.max())) if a.size else 0


_LANES = ((np.int16, 16), (np.int32, 32), (np.int64, 64))


def lane_plan(acc_bits: int, max_x: int, max_w: int):
    """``(dtype, lane bits, shift x?)`` for the shifted-lane kernels, or None.

    The lane kernels need every product inside the accumulator range and one
    operand that, shifted left by ``L - BW_acc``, still fits the lane; the
    narrowest such lane wins (PERF-NOTES: int16 -> int32 -> int64).
    """
    lim = (1 << (acc_bits - 1)) - 1
    if max_x * max_w > lim:
        return None
    for dt, bits in _LANES:
        top = (1 << (bits - 1)) - 1
        if bits < acc_bits:
            continue
        if max_w <= lim and max_x <= top:
            return dt, bits, False
        if max_x <= lim and max_w <= top:
            return dt, bits, True
    return None


def _sequential(x, w, bias, cfg: LayerConfig, want_max: bool = False):
    """Run the per-step Numba kernel on all of ``x @ w``.

    Returns ``(acc int64, overflow_count, outputs_affected, max_abs)``;
    ``max_abs`` (max |bias + exact sum|) comes from the wrap lane kernel when
    ``want_max`` and it provably fits int64, else it is None.
    """
    m, kk = x.shape
    n = w.shape[1]
    max_x, max_w = _max_abs(x), _max_abs(w)
    plan = lane_plan(cfg.acc_bits, max_x, max_w)
    acc = np.empty((m, n), dtype=np.int64)
    row_count = np.empty(m, dtype=np.int64)
    row_affected = np.empty(m, dtype=np.int64)
    max_abs = None
    if plan is None:  # products wider than the accumulator: plain int64 kernels
        xl, wl, bl = (np.ascontiguousarray(a, dtype=np.int64) for a in (x, w, bias))
        jit._dense_int64_kernel(xl, wl, bl, np.int64(cfg.acc_min), np.int64(cfg.acc_max),
                                cfg.overflow is Overflow.WRAP, acc, row_count, row_affected)
    else:
        dt, bits, shift_x = plan
        # int32 lanes with headroom clip by a clamp, unshifted (jit.clip_add); others shift
        headroom = cfg.overflow is Overflow.CLIP and bits == 32 and cfg.acc_bits < bits
        bounds = (dt(cfg.acc_min), dt(cfg.acc_max)) if headroom else None
        sh = 0 if headroom else bits - cfg.acc_bits
        narrow = x.dtype.kind == "i" and x.dtype.itemsize <= np.dtype(dt).itemsize and x.flags.c_contiguous
        xl = x if narrow and not (shift_x and sh) else np.ascontiguousarray(x, dtype=dt)  # no copy of narrow x
        wl = np.ascontiguousarray(w, dtype=dt)
        if sh and shift_x:  # new arrays: never shift the caller's operands in place
            xl = xl << dt(sh)
        elif sh:
            wl = wl << dt(sh)
        bl = np.ascontiguousarray(bias, dtype=dt) << dt(sh)
        shifted = (max_x if shift_x else max_w) << sh
        if bits == 64 and max(shifted, max_x, max_w) < (1 << 31):
            # int32 operands: LLVM multiplies them with one vpmuldq (AVX2 has no 64-bit
            # lane multiply); the products and the accumulator stay in int64 lanes
            xl, wl = xl.astype(np.int32), wl.astype(np.int32)
        kchunk = min(max(kk, 1), (1 << (bits - 1)) - 1)  # per-lane counts stay below the lane max
        if cfg.overflow is Overflow.CLIP:
            jit._dense_sat_lane_kernel(xl, wl, bl, sh, kchunk, bounds, acc, row_count,
                                       row_affected)
        else:
            row_max = np.zeros(m, dtype=np.int64)
            jit._dense_wrap_lane_kernel(xl, wl, bl, sh, kchunk, cfg.acc_bits, acc, row_count,
                                        row_affected, row_max)
            # |exact| <= K * max|p| + |bias|; net wraps * 2**BW_acc stay below that + 2**BW_acc
            if want_max and kk * max_x * max_w + (1 << cfg.acc_bits) < (1 << MAX_WIDTH):
                max_abs = int(row_max.max(initial=0))
    return acc, int(row_count.sum()), int(row_affected.sum()), max_abs


def _wrap_exact(e: np.ndarray, acc_bits: int) -> np.ndarray:
    """Two's-complement wrap of exact sums (int64 or Python-int object array)."""
    half = 1 << (acc_bits - 1)
    if e.dtype == object:
        return np.array([((int(v) + half) % (2 * half)) - half for v in e.ravel()],
                        dtype=np.int64).reshape(e.shape)
    mask = np.int64((1 << acc_bits) - 1)
    return ((e + np.int64(half)) & mask) - np.int64(half)


def _accumulate(x: np.ndarray, w: np.ndarray, bias: np.ndarray, cfg: LayerConfig,
                force_sequential: bool = False, prefix_stats: bool = False):
    """Final accumulators of ``x (M, K) @ w (K, N) + bias`` (int64) and the stats
    (``max_abs_prefix`` only when ``prefix_stats``: one more pass, off the default path)."""
    with threads_for(x.shape[0] * x.shape[1] * w.shape[1]):
        acc, stats = _accumulate_impl(x, w, bias, cfg, force_sequential)
        if prefix_stats:
            stats = replace(stats, max_abs_prefix=_max_abs_prefix(x, w, bias))
    return acc, stats


def _max_abs_prefix(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> int:
    """max over outputs and prefixes (bias first) of ``|bias_n + sum_{k<=j} x_bk w_kn|``, exact.

    DESIGN.md's ``max_abs_prefix``, order k = 0..K-1 (conv: the im2col
    columns, channel -> row -> column). int64 running sums (Numba) when
    ``max|bias| + K max|x| max|w| < 2**63``, so no prefix can leave int64;
    Python ints beyond. Zero activations are skipped: they change no prefix.
    """
    m, k = x.shape
    n = w.shape[1]
    if m == 0 or n == 0:
        return 0  # no outputs
    max_b = _max_abs(bias)
    if max_b + k * _max_abs(x) * _max_abs(w) < _I64_LIMIT:
        row_max = np.empty(m, dtype=np.int64)
        jit._prefix_max_kernel(np.ascontiguousarray(x), np.ascontiguousarray(w, dtype=np.int64),
                               np.ascontiguousarray(bias, dtype=np.int64), row_max)
        return int(row_max.max())
    best = max_b  # every output's first prefix is its bias
    wo, bo = w.astype(object), bias.astype(object)
    for r in range(m):
        nz = np.flatnonzero(x[r])
        if nz.size:
            prefix = np.cumsum(x[r, nz].astype(object)[:, None] * wo[nz], axis=0) + bo
            best = max(best, int(np.abs(prefix).max()))
    return best


def _exact_sum(x, w, bias, bound: float, acc_bits: int, store: bool = True):
    """``(e = bias + x @ w exactly, max |e|)``; ``e`` is None unless ``store``.

    int64 where every value fits, a Python-int object array beyond.
    """
    m, n = x.shape[0], w.shape[1]
    s = _exact_matmul(x, w, bound)
    # exact integer test: |bias + s| <= 2**(BW_acc - 1) + bound must stay below 2**63
    if s.dtype != object and math.ceil(bound) + (1 << (acc_bits - 1)) >= _I64_LIMIT:
        s = s.astype(np.int64).astype(object)  # bias + s could leave int64: Python ints
    if s.dtype == object:
        e = s + bias.astype(object)
        return (e if store else None), (int(np.abs(e).max()) if e.size else 0)
    e = np.empty((m, n) if store else (0, 0), dtype=np.int64)
    row_max = np.zeros(m, dtype=np.int64)
    jit._add_bias_kernel(s, bias, e, row_max)
    return (e if store else None), int(row_max.max(initial=0))


def _margin(k: int) -> float:
    """Relative margin that makes float64 sums of |values| safe upper bounds.

    A float64 sum of K rounded terms is within (K + 1) * 2**-53 relative of
    the exact one; ``(K + 4) * 2**-50`` is eight times that, so each
    product of margined factors, itself rounded to nearest, still bounds
    the exact value from above.
    """
    return 1.0 + (k + 4) * 2.0 ** -50


def _room(bias: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``min(hi - bias, bias - lo)`` per output as the largest double <= it (exact int64 room,
    rounded DOWN): for a double ``c``, ``c <= _room(...)`` iff ``c <= room`` exactly.

    A plain ``astype(float64)`` rounds to nearest, up for rooms >= 2**53.
    """
    r = np.minimum(hi - bias, bias - lo)  # int64, 0 .. 2**62 - 1
    f = r.astype(np.float64)
    up = f.astype(np.int64) > r  # f <= 2**62: back to int64 exactly
    f[up] = np.nextafter(f[up], 0.0)
    return f


def _accumulate_impl(x: np.ndarray, w: np.ndarray, bias: np.ndarray, cfg: LayerConfig,
                     force_sequential: bool = False):
    """Final accumulators of ``x (M, K) @ w (K, N) + bias`` (int64) and the stats.

    ``force_sequential`` runs every output through the per-step kernel (the
    path the fast path is tested against).
    """
    m, k = x.shape
    n = w.shape[1]
    lo, hi = cfg.acc_min, cfg.acc_max
    # Cheap bound first (PERF-NOTES): sum_k |x_bk w_kn| <= rowabs_b * colmax_n.
    # float64 with a relative margin: a safe upper bound at any width.
    margin = _margin(k)
    rowabs = np.empty(m, dtype=np.float64)
    exact_int = x.dtype.itemsize <= 4 and k < (1 << 30)  # |x| < 2**32: int64 sums cannot overflow
    jit._abs_row_sums(np.ascontiguousarray(x), exact_int, rowabs)
    rowabs *= margin
    colmax = np.abs(w.astype(np.float64)).max(axis=0, initial=0.0) * margin
    bound = float(rowabs.max(initial=0.0)) * float(colmax.max(initial=0.0)) * margin
    stats = partial(OverflowStats, m * n * k)
    if cfg.overflow is Overflow.IDEAL:  # validation guarantees every sum fits int64
        e, max_abs = _exact_sum(x, w, bias, bound, cfg.fmt_bias.width)
        return (e.astype(np.int64) if e.dtype == object else e), stats(0, 0, max_abs)
    # Per-output risk: some prefix sum may leave [lo, hi] (in some order) when
    # bias + cheap > hi or bias - cheap < lo, i.e. cheap > room = min(hi - b, b - lo).
    room = _room(bias, lo, hi)
    colrisk = colmax * margin
    any_risky = not np.all(float(rowabs.max(initial=0.0)) * colrisk <= room)
    if force_sequential or (any_risky and _all_sequential_pays(x, w, bias, rowabs, colrisk,
                                                                room, bound, lo, hi)):
        # e.g. BW_acc 16 on 8-bit data (PERF-NOTES): everything sequential, no gathering;
        # only the maximum of the exact sums is still needed
        acc, count, affected, max_abs = _sequential(x, w, bias, cfg, want_max=True)
        if max_abs is None:
            max_abs = _exact_sum(x, w, bias, bound, cfg.acc_bits, store=False)[1]
        return acc, stats(count, affected, max_abs)
    e, max_abs = _exact_sum(x, w, bias, bound, cfg.acc_bits)
    if not any_risky:
        # no output can overflow: the exact sum is every mode's answer, no counts
        acc = e if e.dtype != object else _wrap_exact(e, 63)  # values are in range
        return acc, stats(0, 0, max_abs)
    risky = np.outer(rowabs, colrisk) > room
    if bound < _F64_EXACT:
        definite = risky & ((e > hi) | (e < lo)).astype(bool)  # the full sum is out of range
        open_ = risky & ~definite
        if open_.any():
            rows = np.flatnonzero(open_.any(axis=1))
            cols = np.flatnonzero(open_.any(axis=0))
            sub = np.ix_(rows, cols)
            s = (e[sub] - bias[cols]).astype(np.int64)
            safe = _provably_safe(x[rows], w[:, cols], s, bias[cols], bound, lo, hi)
            risky[sub] &= ~safe
    if cfg.overflow is Overflow.WRAP:
        acc = _wrap_exact(e, cfg.acc_bits)  # modular: wrapping once == wrapping every step
    else:
        acc = e if e.dtype != object else _wrap_exact(e, 63)  # safe outputs are in range
    count = affected = 0
    if risky.all():  # the exact check saved nothing: no gathering
        sacc, count, affected, _ = _sequential(x, w, bias, cfg)
        if cfg.overflow is Overflow.CLIP:
            acc = sacc
    elif risky.any():
        rows = np.flatnonzero(risky.any(axis=1))
        cols = np.flatnonzero(risky.any(axis=0))
        sacc, count, affected, _ = _sequential(x[rows], w[:, cols], bias[cols], cfg)
        if cfg.overflow is Overflow.CLIP:
            acc[np.ix_(rows, cols)] = sacc
    return acc, stats(count, affected, max_abs)


def _provably_safe(x, w, s, bias, bound, lo, hi) -> np.ndarray:
    """Outputs whose every prefix stays in [lo, hi] in any order (needs bound < 2**53).

    With T = |x| @ |w| and S = x @ w (both exact): sum of positive products
    = (T + S) / 2, of negative products = (S - T) / 2. All in int64 (|T|, |S|
    < 2**53, |bias| <= 2**61): a float64 ``bias + ...`` rounds above 2**53.
    """
    dt = np.float32 if bound < _F32_EXACT else np.float64
    t = _exact_matmul(np.abs(x.astype(dt)), np.abs(w.astype(dt)), bound).astype(np.int64)
    s = s.astype(np.int64)
    return (bias + (t + s) // 2 <= hi) & (bias + (s - t) // 2 >= lo)


_SMALL_SEQUENTIAL = 1 << 18
"""MACs below which outputs at risk all run sequentially without the exact check."""

_SAMPLE_ROWS = 64
"""Rows on which :func:`_all_sequential_pays` tries the exact check (small matmuls are slow)."""


def _all_sequential_pays(x, w, bias, rowabs, colrisk, room, bound, lo, hi,
                         sample=_SAMPLE_ROWS) -> bool:
    """Whether to run every output sequentially rather than the exact check (PERF-NOTES:
    skip the check when it is hopeless).

    On a row sample: the outputs still at risk after the exact check (all of
    the cheap bound's when sums may exceed 2**53) span rows x columns; when
    that rectangle, which the sequential kernel would run anyway, is over
    half of the sample, the check's matmuls and the gathering cost more than
    they save. Tiny products (``_SMALL_SEQUENTIAL``) always run sequentially;
    other small inputs take the exact path.
    """
    m, n = x.shape[0], w.shape[1]
    if m * x.shape[1] * n < _SMALL_SEQUENTIAL:
        return True  # the kernel costs less than the checks' numpy calls
    if m <= 2 * sample or n == 0:
        return False
    rows = np.linspace(0, m - 1, sample).astype(np.int64)
    risky = np.outer(rowabs[rows], colrisk) > room
    if bound < _F64_EXACT:
        e = _exact_matmul(x[rows], w, bound).astype(np.int64) + bias
        open_ = risky & (e <= hi) & (e >= lo)
        definite = risky & ~open_  # final sum out of range: no check can clear these
        if definite.any(axis=1).sum() * definite.any(axis=0).sum() > 0.5 * sample * n:
            return True  # the rectangle below can only be larger
        cols = np.flatnonzero(open_.any(axis=0))
        if cols.size:
            s = e[:, cols] - bias[cols]
            safe = _provably_safe(x[rows], w[:, cols], s, bias[cols], bound, lo, hi)
            risky[:, cols] &= ~(safe & open_[:, cols])
    rect = risky.any(axis=1).sum() * risky.any(axis=0).sum()
    return bool(rect > 0.5 * sample * n)


# ----------------------------------------------------------------- public API

def dense(x, w, b=None, cfg: LayerConfig | None = None, *, fmt_x=None, fmt_w=None, fmt_y=None,
          acc_bits=None, overflow=None, rounding=None, activation="none", seed=None,
          prefix_stats=False) -> DatapathResult:
    """Bit-exact dense layer: ``y = act(requant(acc))``, acc over k = 0..K-1.

    ``x`` (B, K) raw ints of fmt_x, ``w`` (K, N) raw ints of fmt_w, ``b`` (N,)
    raw ints in the accumulator format (``cfg.fmt_bias``: FL_w + FL_x, BW_acc
    bits) or None. ``cfg``: the layer's :class:`~fxpsim.config.LayerConfig`,
    or instead the keywords ``fmt_x, fmt_w, fmt_y, acc_bits, overflow="wrap",
    rounding="nearest-even"`` (the same results and errors). ``overflow``
    wrap | clip | ideal applies after every addition (de Bruin DSD 2018).
    Stochastic rounding needs ``seed``. ``prefix_stats=True`` adds the exact
    ``max_abs_prefix`` (DESIGN.md). See the module docstring.
    """
    cfg, seed = call_config(cfg, activation, seed, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits,
                            overflow=overflow, rounding=rounding)
    x, w, bias = check_operands(x, w, b, cfg, conv=False)
    acc, stats = _accumulate(x, w, bias, cfg, prefix_stats=check_prefix_flag(prefix_stats))
    return DatapathResult(requantize(acc, cfg, activation, seed), acc, stats)


def conv2d(x, w, b=None, cfg: LayerConfig | None = None, *, stride=1, padding=0, fmt_x=None,
           fmt_w=None, fmt_y=None, acc_bits=None, overflow=None, rounding=None, activation="none",
           seed=None, prefix_stats=False) -> DatapathResult:
    """Bit-exact 2-D convolution, NCHW, zero padding, order channel -> row -> column.

    ``x`` (B, C, H, W), ``w`` (F, C, kh, kw), ``b`` (F,) in the accumulator
    format; ``cfg`` or the keywords as :func:`dense`. Computed as im2col +
    the dense datapath (same per-step order, so ``prefix_stats`` follows it too).
    """
    cfg, seed = call_config(cfg, activation, seed, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits,
                            overflow=overflow, rounding=rounding)
    x, w, bias = check_operands(x, w, b, cfg, conv=True)
    prefix_stats = check_prefix_flag(prefix_stats)
    oh, ow = conv_geometry(x.shape, w.shape, stride, padding)
    f, _, kh, kw = w.shape
    with threads_for(x.size * kh * kw * 8):
        cols = im2col(x, kh, kw, int(stride), int(padding), oh, ow)
    wm = np.ascontiguousarray(w.reshape(f, -1).T)
    acc2, stats = _accumulate(cols, wm, bias, cfg, prefix_stats=prefix_stats)
    acc = np.ascontiguousarray(acc2.reshape(x.shape[0], oh, ow, f).transpose(0, 3, 1, 2))
    return DatapathResult(requantize(acc, cfg, activation, seed), acc, stats)
