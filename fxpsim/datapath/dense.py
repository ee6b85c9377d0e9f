"""The dense engine: bit-exact dense and 2-D conv layers with a BW_acc accumulator.

Semantics (DESIGN.md, de Bruin et al. DSD 2018): each product is exact, then
taken to FL_acc (default FL_w + FL_x: shifted left exactly, or rounded with
``product_rounding``) and, with ``product="cast"``, wrapped or clipped to
BW_acc; the accumulator holds BW_acc bits, starts at the bias and is wrapped
or clipped after EVERY addition, in the layer's ``order``: sequential (dense
k = 0..K-1, conv channel -> kernel row -> kernel column), ``strided:RF``
(k = r, r + RF, ... for r = 0..RF-1), ``channels-last:C[+strided:RF]``
(hls4ml's channels-last tensors: K as C channels of K/C positions, added
position-major, then strided) or ``tree`` (pairwise adder tree over the
sequential order, every node BW_acc bits, the bias added last);
``ideal``: an unbounded accumulator. The output is ``shift_round(acc, FL_acc
- FL_y)``, clipped (``output_overflow="wrap"``: wrapped) to ``fmt_y``, then
the activation, all on integers. The layer's
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

The knobs keep these paths where they are provably exact (:func:`_accumulate`):

- FL_acc > FL_w + FL_x: ``w << d`` makes every product ``(x w) << d``, so the
  whole call is the plain datapath on shifted weights.
- ``product="cast"`` changes no product when ``max|x| max|w| <= acc_max``
  (or the accumulator is ideal): the exact product, the plain datapath.
- ``strided:RF`` (RF = 1 or RF >= K is sequential) and ``channels-last:C``
  are just other sequences of k (:func:`~.core.order_permutation`): the lane
  kernels on permuted im2col columns and weight rows, every fast path unchanged.
- Wrap is modular, so every order and cast gives ``wrap(exact sum)``; an
  output whose bound proves no overflow gives the exact sum in any order.
  The tree and casts need a stricter bound (partial sums without the bias,
  and single products, in range): the cheap bound implies it; the exact
  check tests it (:func:`_provably_safe` with ``strict``).
- What remains runs the knob kernels (:func:`jit._knob_seq_kernel`,
  :func:`jit._knob_tree_kernel`, vectorised across outputs): outputs at risk
  under tree order or casts, and every output when FL_acc < FL_w + FL_x
  (each product rounded on its own, which no matmul holds); their exact
  sums in int64 where ``max|bias| + K max|term| < 2**63``, else in Python
  ints (:func:`_exact_terms_object`).

``OverflowStats.cast_overflows`` counts the casts that changed a product
(0 unless ``product="cast"``); ``max_abs_acc`` and ``max_abs_prefix`` add the
products at FL_acc (rounded, never range-limited), the latter in the layer's
order (tree: the largest exact |node|).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache, partial

import numpy as np

from ..config import LayerConfig
from ..qformat import MAX_WIDTH, Overflow, shift_round
from . import jit
from .core import (DatapathResult, OverflowStats, call_config, check_operands, check_prefix_flag,
                   conv_geometry, im2col, max_abs_term, order_permutation, requantize, threads_for)

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
    (``max_abs_prefix`` only when ``prefix_stats``: one more pass, off the default path).

    The knobs (module docstring): FL_acc > FL_w + FL_x shifts w, which makes every
    product ``x * (w << d) = (x * w) << d`` exactly; FL_acc < FL_w + FL_x rounds each
    product on its own, so those calls run the knob kernels throughout.
    """
    with threads_for(x.shape[0] * x.shape[1] * w.shape[1]):
        d = cfg.product_shift
        if d < 0:
            return _accumulate_rounded(x, w, bias, cfg, prefix_stats)
        if d > 0:
            w = np.ascontiguousarray(w, dtype=np.int64) << np.int64(d)
        plan = _knob_plan(x, w, cfg)
        acc, stats = _accumulate_impl(x, w, bias, cfg, force_sequential, plan)
        if prefix_stats:
            stats = replace(stats, max_abs_prefix=_prefix_in_order(x, w, bias, cfg, plan))
    return acc, stats


# ----------------------------------------------------------------- the knobs (issue 16)

@dataclass(frozen=True, slots=True)
class _Knobs:
    """What a call's ``order`` and ``product`` ask of the paths (None: neither, the datapath
    before them). ``perm``: strided order's input indices (None: 0..K-1); ``tree``: the adder
    tree; ``cast``: some product may change when cast into BW_acc."""

    perm: np.ndarray | None
    tree: bool
    cast: bool

    @property
    def strict(self) -> bool:
        """Whether the exact check must also keep every product and bias-free partial sum in
        range (tree nodes, casts), not only every prefix that starts at the bias."""
        return self.tree or self.cast


def _knob_plan(x: np.ndarray, w: np.ndarray, cfg: LayerConfig) -> _Knobs | None:
    """The knobs of a call whose products ``x * w`` are already at FL_acc. Shortcuts, exact:
    strided with RF = 1 or RF >= K is sequential; a cast cannot change a product when
    ``max|x| max|w| <= acc_max`` (or the accumulator is ideal)."""
    perm = order_permutation(cfg, x.shape[1])
    tree = cfg.order == "tree"
    cast = (cfg.product == "cast" and cfg.overflow is not Overflow.IDEAL
            and _max_abs(x) * _max_abs(w) > cfg.acc_max)
    return _Knobs(perm, tree, cast) if perm is not None or tree or cast else None


def _run_knobs(x, w, bias, cfg: LayerConfig, plan: _Knobs, d: int = 0, want_max: bool = False,
               prefix: bool = False):
    """The knob kernels (:func:`jit._knob_seq_kernel`, :func:`jit._knob_tree_kernel`) on all
    of ``x @ w`` with the products shifted by ``d``: ``(acc, overflow_count, outputs_affected,
    max_abs or None, cast_overflows, max_prefix or None)``; the exact values (``want_max``,
    ``prefix``) only where ``max|bias| + K max|term| < 2**63`` keeps them in int64."""
    m, k = x.shape
    n = w.shape[1]
    exact = (want_max or prefix) and (
        _max_abs(bias) + k * max_abs_term(_max_abs(x) * _max_abs(w), d) < _I64_LIMIT)
    acc = np.empty((m, n), dtype=np.int64)
    cnt = np.empty((m, n), dtype=np.int64)
    row_cast, row_max, row_prefix = (np.zeros(m, dtype=np.int64) for _ in range(3))
    args = tuple(np.ascontiguousarray(a, dtype=np.int64) for a in (x, w, bias))  # one compiled variant
    knobs = (jit.term_args(d, cfg.product_rounding.code), plan.cast and cfg.overflow is not Overflow.IDEAL,
             np.int64(cfg.acc_min), np.int64(cfg.acc_max), cfg.overflow.code, exact)
    outs = (acc, cnt, row_cast, row_max, row_prefix)
    if plan.tree:
        jit._knob_tree_kernel(*args, *knobs, *outs)
    else:
        perm = np.arange(k, dtype=np.int64) if plan.perm is None else plan.perm
        jit._knob_seq_kernel(*args, perm, *knobs, *outs)
    return (acc, int(cnt.sum()), int(np.count_nonzero(cnt)),
            int(row_max.max(initial=0)) if exact else None, int(row_cast.sum()),
            int(row_prefix.max(initial=0)) if exact and prefix else None)


def _runner(cfg: LayerConfig, plan: _Knobs | None):
    """The per-step path of :func:`_accumulate_impl` for ``plan``: a function ``(x, w, bias,
    want_max=False) -> (acc, overflow_count, outputs_affected, max_abs or None,
    cast_overflows)``. Strided order without casts is the lane kernels on permuted inputs
    (the order is just another sequence of k); tree and casts run the knob kernels."""
    if plan is None:
        return lambda x, w, bias, want_max=False: (*_sequential(x, w, bias, cfg, want_max), 0)
    if not plan.strict:
        perm = plan.perm
        return lambda x, w, bias, want_max=False: (*_sequential(x[:, perm], w[perm], bias, cfg,
                                                                want_max), 0)
    return lambda x, w, bias, want_max=False: _run_knobs(x, w, bias, cfg, plan, 0, want_max)[:5]


def _prefix_in_order(x, w, bias, cfg: LayerConfig, plan: _Knobs | None) -> int:
    """DESIGN.md's ``max_abs_prefix`` in the layer's order (tree: the largest exact |node|)
    of products ``x * w`` already at FL_acc."""
    if plan is None or (plan.perm is None and not plan.tree):
        return _max_abs_prefix(x, w, bias)
    if not plan.tree:
        return _max_abs_prefix(x[:, plan.perm], w[plan.perm], bias)
    best = _run_knobs(x, w, bias, cfg, plan, prefix=True)[5]
    return best if best is not None else _exact_terms_object(x, w, bias, cfg, plan, 0, True)[1]


def _accumulate_rounded(x, w, bias, cfg: LayerConfig, prefix_stats: bool):
    """FL_acc < FL_w + FL_x: every product rounded to FL_acc on its own (no matmul holds
    that), so the knob kernels run every output; exact sums beyond int64 in Python ints."""
    m, k = x.shape
    n = w.shape[1]
    plan = _Knobs(order_permutation(cfg, k), cfg.order == "tree", cfg.product == "cast")
    d = cfg.product_shift
    acc, count, affected, max_abs, casts, best = _run_knobs(x, w, bias, cfg, plan, d, True, prefix_stats)
    if max_abs is None:
        max_abs, best = _exact_terms_object(x, w, bias, cfg, plan, d, prefix_stats)
    return acc, OverflowStats(m * n * k, count, affected, max_abs, best if prefix_stats else None, casts)


def _exact_terms_object(x, w, bias, cfg: LayerConfig, plan: _Knobs, d: int, prefix: bool):
    """``(max |bias + sum of terms|, max |prefix| (tree: |node|) or None)`` in Python ints,
    row by row, for calls whose exact sums may leave int64 (each term at FL_acc, ``(x w) << d``
    or :func:`fxpsim.qformat.shift_round` of it, still fits int64)."""
    m, n = x.shape[0], w.shape[1]
    best_acc = best_pre = 0
    if n == 0:
        return 0, (0 if prefix else None)
    bo = bias.astype(object)
    wl = np.asarray(w, dtype=np.int64)
    for r in range(m):
        p = np.asarray(x[r], dtype=np.int64)[:, None] * wl
        q = (p << np.int64(d) if d >= 0 else shift_round(p, -d, cfg.product_rounding)).astype(object)
        if plan.tree:
            while len(q) > 1:
                even = len(q) - len(q) % 2
                pairs = q[0:even:2] + q[1:even:2]
                best_pre = max(best_pre, int(np.abs(pairs).max()))
                q = np.concatenate([pairs, q[even:]])
            final = q[0] + bo
            best_pre = max(best_pre, int(np.abs(final).max()))
        else:
            run = np.cumsum(q if plan.perm is None else q[plan.perm], axis=0) + bo
            final = run[-1]
            best_pre = max(best_pre, int(np.abs(bo).max()), int(np.abs(run).max()))
        best_acc = max(best_acc, int(np.abs(final).max()))
    return best_acc, (best_pre if prefix else None)


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
                     force_sequential: bool = False, plan: _Knobs | None = None):
    """Final accumulators of ``x (M, K) @ w (K, N) + bias`` (int64) and the stats.

    ``force_sequential`` runs every output through the per-step kernel (the
    path the fast path is tested against); ``plan`` (:func:`_knob_plan`) picks that
    kernel (:func:`_runner`) and, for tree and casts, the strict exact check.
    """
    run = _runner(cfg, plan)
    strict = plan is not None and plan.strict
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
        e, max_abs = _exact_sum(x, w, bias, bound, cfg.fmt_bias_acc.width)
        return (e.astype(np.int64) if e.dtype == object else e), stats(0, 0, max_abs)
    # Per-output risk: some prefix sum may leave [lo, hi] (in some order) when
    # bias + cheap > hi or bias - cheap < lo, i.e. cheap > room = min(hi - b, b - lo).
    room = _room(bias, lo, hi)
    colrisk = colmax * margin
    any_risky = not np.all(float(rowabs.max(initial=0.0)) * colrisk <= room)
    if force_sequential or (any_risky and _all_sequential_pays(x, w, bias, rowabs, colrisk,
                                                                room, bound, lo, hi, strict)):
        # e.g. BW_acc 16 on 8-bit data (PERF-NOTES): everything sequential, no gathering;
        # only the maximum of the exact sums is still needed
        acc, count, affected, max_abs, casts = run(x, w, bias, want_max=True)
        if max_abs is None:
            max_abs = _exact_sum(x, w, bias, bound, cfg.acc_bits, store=False)[1]
        return acc, stats(count, affected, max_abs, cast_overflows=casts)
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
            safe = _provably_safe(x[rows], w[:, cols], s, bias[cols], bound, lo, hi, strict)
            risky[sub] &= ~safe
    if cfg.overflow is Overflow.WRAP:
        acc = _wrap_exact(e, cfg.acc_bits)  # modular: wrapping once == wrapping every step
    else:
        acc = e if e.dtype != object else _wrap_exact(e, 63)  # safe outputs are in range
    count = affected = casts = 0
    if risky.all():  # the exact check saved nothing: no gathering
        sacc, count, affected, _, casts = run(x, w, bias)
        if cfg.overflow is Overflow.CLIP:
            acc = sacc
    elif risky.any():
        rows = np.flatnonzero(risky.any(axis=1))
        cols = np.flatnonzero(risky.any(axis=0))
        sacc, count, affected, _, casts = run(x[rows], w[:, cols], bias[cols])
        if cfg.overflow is Overflow.CLIP:
            acc[np.ix_(rows, cols)] = sacc
    return acc, stats(count, affected, max_abs, cast_overflows=casts)


def _provably_safe(x, w, s, bias, bound, lo, hi, strict: bool = False) -> np.ndarray:
    """Outputs whose every prefix stays in [lo, hi] in any order (needs bound < 2**53).

    With T = |x| @ |w| and S = x @ w (both exact): sum of positive products
    P = (T + S) / 2, of negative products N = (S - T) / 2; every prefix from the
    bias lies in [b + N, b + P]. ``strict`` (tree nodes, casts): also every partial
    sum without the bias and every product, i.e. [min(b, 0) + N, max(b, 0) + P]
    inside [lo, hi]. All in int64 (|T|, |S| < 2**53, |bias| <= 2**61): a float64
    ``bias + ...`` rounds above 2**53.
    """
    dt = np.float32 if bound < _F32_EXACT else np.float64
    t = _exact_matmul(np.abs(x.astype(dt)), np.abs(w.astype(dt)), bound).astype(np.int64)
    s = s.astype(np.int64)
    top, bot = (np.maximum(bias, 0), np.minimum(bias, 0)) if strict else (bias, bias)
    return (top + (t + s) // 2 <= hi) & (bot + (s - t) // 2 >= lo)


_SMALL_SEQUENTIAL = 1 << 18
"""MACs below which outputs at risk all run sequentially without the exact check."""

_SAMPLE_ROWS = 64
"""Rows on which :func:`_all_sequential_pays` tries the exact check (small matmuls are slow)."""


def _all_sequential_pays(x, w, bias, rowabs, colrisk, room, bound, lo, hi, strict: bool = False,
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
            safe = _provably_safe(x[rows], w[:, cols], s, bias[cols], bound, lo, hi, strict)
            risky[:, cols] &= ~(safe & open_[:, cols])
    rect = risky.any(axis=1).sum() * risky.any(axis=0).sum()
    return bool(rect > 0.5 * sample * n)


# ----------------------------------------------------------------- public API

def dense(x, w, b=None, cfg: LayerConfig | None = None, *, fmt_x=None, fmt_w=None, fmt_y=None,
          acc_bits=None, overflow=None, rounding=None, activation="none", seed=None,
          prefix_stats=False) -> DatapathResult:
    """Bit-exact dense layer: ``y = act(requant(acc))``, acc over k in the layer's order.

    ``x`` (B, K) raw ints of fmt_x, ``w`` (K, N) raw ints of fmt_w, ``b`` (N,)
    raw ints in the accumulator format (``cfg.fmt_bias_acc``: FL_acc, BW_acc
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
    """Bit-exact 2-D convolution, NCHW, zero padding, sequential order channel -> row -> column
    (strided and tree orders over that sequence; ``channels-last:C``: row -> column -> channel).

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
