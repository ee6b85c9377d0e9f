"""The sparse engine: a layer run as EIE runs it, from a per-PE column schedule (Han et al., ISCA 2016).

``y = act(requant(b + sum_k x[k] * W[k, n]))`` on raw ints, exactly the
dense engine of DESIGN.md (:func:`fxpsim.datapath.dense.dense`) on the
pruned weights: bias as the initial accumulator, BW_acc bits with FL_acc =
FL_w + FL_x, wrap / clip after EVERY addition (``ideal``: unbounded), then
the core's requantization (:func:`fxpsim.datapath.core.requantize`: shift
by FL_acc - FL_y with the layer's rounding, clip to fmt_y, activation; the
same counter-based stochastic draw per output of the dense layout).

Why it is bit-exact with the dense order k = 0..K-1 although it skips work:
every output row lives in exactly one PE and the input activations are
broadcast in increasing index k, so the additions into one accumulator
happen in the dense order with the zero terms left out. A zero term never
changes the register: for an in-range ``acc``, ``acc + 0 = acc`` is in
range, so neither wrap nor clip acts and no overflow is counted. Hence
skipping zero weights (not stored) and zero activations (EIE's leading
non-zero detection) changes neither ``y``, ``acc`` nor the statistics.

Execution, EIE's order: for each non-zero activation ``x[k]`` (column k of
the EIE matrix ``W.T``) every PE walks its stored entries of column k,
decoding the relative indices into rows (``pos += z + 1``, row = ``pos *
n_pes + p``); padding entries take a cycle and add nothing. The relative
indices are decoded once into a :class:`ColumnSchedule`, what the PEs
compute on the fly (:func:`fxpsim.sparse.kernel.column_schedule` decodes a
:class:`~fxpsim.sparse.csc.CSCEncoding`). Three kernels give identical
results: ``vector`` (one input vector at a time, int64, any width),
``lanes`` (64 vectors side by side in float32/float64 lanes, exact while
every value stays below 2**24 / 2**53; a column is skipped when all 64
activations are zero, the remaining zero products add 0) and ``int`` (the
same in int16/int32/int64 lanes with the dense engine's shifted-lane
trick, when every product fits the accumulator range).

Timing (:class:`PEStats`): PE ``p`` spends one cycle per stored entry
(padding included) of each column whose activation is non-zero. Queued
model (a FIFO per PE, EIE/ESE): a vector takes the busiest PE's cycles;
lock-step per column: ``sum_k max_p entries[p, k]``. Totals over the batch
are sums over vectors (vectors run one after another).

Statistics are :class:`~fxpsim.datapath.core.OverflowStats` with the
dense engine's meaning, except ``additions``: here the additions actually
performed (non-zero weight x non-zero activation), not ``outputs * K``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from ..config import LayerConfig
from ..errors import check
from ..qformat import MAX_WIDTH, Overflow, Rounding, check_raw
from .core import (OverflowStats, call_config, check_array, check_bias, check_int64_sums, check_knobs,
                   conv_geometry, im2col, requantize)
from .dense import lane_plan
from .jit import requantize_one, sat_add, trunc_as, wrap_add

__all__ = ["ColumnSchedule", "ENGINES", "KNOBS_RUN", "PEStats", "SparseResult", "eie_conv2d", "eie_dense"]

KNOBS_RUN = ("fmt_bias", "output_overflow")
"""The knobs (:data:`fxpsim.config.KNOBS`) this engine runs off their defaults: the bias arrives in
the accumulator format, and a wrapping output is requantized by the core; the others (FL_acc, casts,
orders) are refused with one line (:func:`fxpsim.datapath.core.check_knobs`)."""


@dataclass(frozen=True, slots=True, eq=False)
class PEStats:
    """EIE timing of one layer over a batch (one stored entry per PE per cycle)."""

    entries: np.ndarray
    """(n_pes,) entries processed over the batch, padding included (= busy cycles)."""
    padding: np.ndarray
    """(n_pes,) of those, padding entries."""
    queued_cycles: int
    """Sum over vectors of the busiest PE's entries (a FIFO per PE)."""
    lockstep_cycles: int
    """Sum over vectors and non-zero activations of ``max_p entries[p, k]``."""

    @property
    def total_cycles(self) -> int:
        """Layer cycles under the queued model (EIE/ESE): the busiest PE, per vector."""
        return self.queued_cycles

    @property
    def load_imbalance(self) -> float:
        """max / mean of the PEs' entries (1.0 = balanced, and for no work), as
        :func:`fxpsim.sparse.pe.load_imbalance`."""
        mean = float(self.entries.mean()) if self.entries.size else 0.0
        return float(self.entries.max()) / mean if mean > 0 else 1.0


@dataclass(frozen=True, slots=True, eq=False)
class SparseResult:
    """Outputs of the sparse engine: those of the dense engine plus the PE timing."""

    y: np.ndarray
    acc: np.ndarray
    stats: OverflowStats
    pe: PEStats


@dataclass(frozen=True, slots=True, eq=False)
class ColumnSchedule:
    """The work per broadcast activation of an EIE matrix of ``shape`` (outputs, inputs).

    Column k's non-zero weights are ``vals[ptr[k]:ptr[k+1]]`` at output rows
    ``rows[...]`` (all PEs, padding dropped); ``entries`` (K, n_pes) counts each
    PE's stored entries of column k (padding included), ``padding`` likewise.
    """

    ptr: np.ndarray
    rows: np.ndarray
    vals: np.ndarray
    entries: np.ndarray
    padding: np.ndarray
    shape: tuple[int, int]

    @property
    def n_pes(self) -> int:
        return int(self.entries.shape[1])


@njit(cache=True, inline="always")
def _add_pe_cycles(pc, pe_tot):  # pragma: no cover - jitted
    """Add one vector's per-PE entries ``pc`` to ``pe_tot``; return the busiest PE's (queued cycles)."""
    busiest = 0
    for p in range(pc.shape[0]):
        pe_tot[p] += pc[p]
        busiest = max(busiest, pc[p])
    return busiest


@njit(cache=True, parallel=True)
def _eie_kernel(x, ptr, rows, vals, entries, bias, lo, hi, mode, shift, rnd, y_lo, y_hi, relu,
                acc_out, y_out, th_stats, th_pe, th_active):  # pragma: no cover - jitted
    """One vector at a time, non-zero activations only, k ascending (module docstring).

    mode 0 wrap, 1 clip, 2 plain sums (ideal, or wrap/clip proven never to act);
    rnd < 0 leaves ``y_out`` to the caller.
    Per thread t: ``th_stats[t]`` = (overflows, outputs affected, max |exact
    sum|, queued cycles, lock-step cycles), ``th_pe[t, p]`` = PE p's entries,
    ``th_active[t, k]`` = vectors with a non-zero activation k.
    """
    n_b, n_k = x.shape
    n_out = bias.size
    n_pes = entries.shape[1]
    n_threads = th_stats.shape[0]
    mask = hi - lo
    emax = np.zeros(n_k, np.int64)
    for k in range(n_k):
        for p in range(n_pes):
            emax[k] = max(emax[k], entries[k, p])
    for t in prange(n_threads):
        cnt = np.empty(n_out, np.int64)
        ex = np.empty(n_out, np.int64)
        nz = np.empty(n_k, np.int64)
        pc = np.empty(n_pes, entries.dtype)
        pe_tot = th_pe[t]
        active = th_active[t]
        n_ovf = 0
        n_aff = 0
        mx = 0
        queued = 0
        lock = 0
        for b in range(t, n_b, n_threads):
            acc = acc_out[b]
            for r in range(n_out):
                acc[r] = bias[r]
                ex[r] = bias[r]
                cnt[r] = 0
            xb = x[b]
            n_nz = 0
            for k in range(n_k):  # leading non-zero detection, branch-free
                nz[n_nz] = k
                on = xb[k] != 0
                n_nz += on
                active[k] += on
            for p in range(n_pes):
                pc[p] = 0
            for i in range(n_nz):
                k = nz[i]
                ek = entries[k]
                for p in range(n_pes):
                    pc[p] += ek[p]
                lock += emax[k]
                a = np.int64(xb[k])
                for e in range(ptr[k], ptr[k + 1]):
                    r = rows[e]
                    prod = a * vals[e]
                    s = acc[r] + prod
                    if mode == 2:  # ideal, or no prefix sum can leave the range
                        acc[r] = s
                        continue
                    ex[r] += prod
                    if mode == 0:
                        u = ((s - lo) & mask) + lo
                    else:
                        u = min(max(s, lo), hi)
                    cnt[r] += s != u
                    acc[r] = u
            queued += _add_pe_cycles(pc, pe_tot)
            for r in range(n_out):
                n_ovf += cnt[r]
                n_aff += cnt[r] > 0
                mx = max(mx, abs(acc[r] if mode == 2 else ex[r]))
                if rnd >= 0:
                    y_out[b, r] = requantize_one(acc[r], shift, rnd, y_lo, y_hi, relu)
        th_stats[t, 0] = n_ovf
        th_stats[t, 1] = n_aff
        th_stats[t, 2] = mx
        th_stats[t, 3] = queued
        th_stats[t, 4] = lock


@njit(cache=True, inline="always")
def _block_timing(x, b0, nl, entries, emax, xb, pc, pe_tot, active):  # pragma: no cover - jitted
    """Transpose vectors b0..b0+nl-1 into ``xb`` (K, lanes); EIE timing of each on the way:
    returns (queued, lock-step) cycles and adds to ``pe_tot`` / ``active``."""
    n_k, n_pes = x.shape[1], entries.shape[1]
    queued = 0
    lock = 0
    for l in range(nl):
        for p in range(n_pes):
            pc[p] = 0
        for k in range(n_k):
            v = x[b0 + l, k]
            xb[k, l] = v
            if v != 0:
                active[k] += 1
                lock += emax[k]
                ek = entries[k]
                for p in range(n_pes):
                    pc[p] += ek[p]
        queued += _add_pe_cycles(pc, pe_tot)
    return queued, lock


@njit(cache=True, inline="always")
def _any_nonzero(xk, nl):  # pragma: no cover - jitted
    """Whether any of the first ``nl`` lanes of ``xk`` is non-zero."""
    on = False
    for l in range(nl):
        on |= xk[l] != 0
    return on


@njit(cache=True)
def _column_maxima(entries):  # pragma: no cover - jitted
    """Lock-step cycles of each column: its busiest PE's entries."""
    emax = np.zeros(entries.shape[0], np.int64)
    for k in range(entries.shape[0]):
        for p in range(entries.shape[1]):
            emax[k] = max(emax[k], entries[k, p])
    return emax


@njit(cache=True, parallel=True)
def _int_lanes_kernel(x, ptr, rows, vals, entries, bias, sh, acc_bits, clip, ex_like, lanes, shift, rnd,
                      y_lo, y_hi, relu, acc_out, y_out, blk_stats, blk_pe, blk_active):  # pragma: no cover
    """``lanes`` vectors side by side in integer lanes, the datapath's shifted-lane trick
    (``fxpsim.kernels.jit``): operands and bias pre-shifted by ``sh`` so the lane's
    saturating add is the per-step clip and its own add the per-step wrap; an addition
    overflowed where the two differ. Exact sums for ``max_abs``: clip keeps them in lanes
    of ``ex_like``'s type (the caller checks they fit), wrap rebuilds them from its counts
    of upward and downward wraps. Zero products (a lane's activation 0) never overflow.
    Same outputs and statistics as :func:`_lanes_kernel`.
    """
    n_b, n_k = x.shape
    n_out = bias.size
    n_blocks = (n_b + lanes - 1) // lanes
    emax = _column_maxima(entries)
    for blk in prange(n_blocks):
        b0 = blk * lanes
        nl = min(lanes, n_b - b0)
        acc = np.empty((n_out, lanes), bias.dtype)
        kept = np.zeros((n_out, lanes), bias.dtype)
        dwn = np.zeros((n_out, lanes), bias.dtype)
        ex = np.zeros((n_out, lanes), ex_like.dtype)
        steps = np.zeros(n_out, np.int64)
        xb = np.zeros((n_k, lanes), bias.dtype)
        pc = np.empty(entries.shape[1], entries.dtype)
        queued, lock = _block_timing(x, b0, nl, entries, emax, xb, pc, blk_pe[blk], blk_active[blk])
        for r in range(n_out):
            for l in range(lanes):
                acc[r, l] = bias[r]
        for k in range(n_k):
            xk = xb[k]
            if not _any_nonzero(xk, nl):  # every lane's activation k is 0: nothing to add
                continue
            for e in range(ptr[k], ptr[k + 1]):
                r = rows[e]
                steps[r] += 1
                ar = acc[r]
                cr = kept[r]
                v = vals[e]
                if clip:
                    er = ex[r]
                    for l in range(lanes):
                        a = ar[l]
                        p = trunc_as(v * xk[l], a)
                        t, ok = sat_add(a, p)
                        cr[l] += ok
                        er[l] += trunc_as(p, er[l])
                        ar[l] = t
                else:
                    dr = dwn[r]
                    for l in range(lanes):
                        a = ar[l]
                        u, ok, down = wrap_add(a, trunc_as(v * xk[l], a))
                        cr[l] += ok
                        dr[l] += down
                        ar[l] = u
        n_ovf = 0
        n_aff = 0
        mx = 0
        for l in range(nl):
            for r in range(n_out):
                a = np.int64(acc[r, l]) >> sh
                acc_out[b0 + l, r] = a
                c = steps[r] - np.int64(kept[r, l])
                n_ovf += c
                n_aff += c > 0
                if clip:
                    ev = (np.int64(ex[r, l]) >> sh) + (np.int64(bias[r]) >> sh)
                else:
                    ev = a + ((c - 2 * np.int64(dwn[r, l])) << acc_bits)
                mx = max(mx, abs(ev))
                if rnd >= 0:
                    y_out[b0 + l, r] = requantize_one(a, shift, rnd, y_lo, y_hi, relu)
        blk_stats[blk, 0] = n_ovf
        blk_stats[blk, 1] = n_aff
        blk_stats[blk, 2] = mx
        blk_stats[blk, 3] = queued
        blk_stats[blk, 4] = lock


@njit(cache=True, parallel=True)
def _lanes_kernel(x, ptr, rows, vals, entries, bias, lo, hi, span, inv, mode, lanes, shift, rnd, y_lo, y_hi,
                  relu, acc_out, y_out, blk_stats, blk_pe, blk_active):  # pragma: no cover - jitted
    """``lanes`` vectors at a time in float lanes, exact because every value stays below
    2**24 (float32) or 2**53 (float64), checked by the caller; a column is skipped when
    the activations of all lanes are 0, other zero products add 0 (no effect).

    mode 0 wrap, 1 clip, 2 plain sums. Per output the additions run in increasing k.
    Per block: ``blk_stats`` = (overflows, outputs affected, max |exact sum|, queued
    cycles, lock-step cycles), ``blk_pe`` PE entries, ``blk_active`` non-zero activations.
    """
    n_b, n_k = x.shape
    n_out = bias.size
    n_blocks = (n_b + lanes - 1) // lanes
    ft = vals.dtype
    n_pes = entries.shape[1]
    emax = _column_maxima(entries)
    for blk in prange(n_blocks):
        b0 = blk * lanes
        nl = min(lanes, n_b - b0)
        acc = np.empty((n_out, lanes), ft)
        cnt = np.zeros((n_out, lanes), ft)
        ex = np.empty((n_out, lanes), ft)
        xb = np.zeros((n_k, lanes), ft)
        pc = np.empty(n_pes, entries.dtype)
        pe_tot = blk_pe[blk]
        active = blk_active[blk]
        queued, lock = _block_timing(x, b0, nl, entries, emax, xb, pc, pe_tot, active)
        for r in range(n_out):
            for l in range(lanes):
                acc[r, l] = bias[r]
                ex[r, l] = bias[r]
        for k in range(n_k):
            xk = xb[k]
            if not _any_nonzero(xk, nl):  # every lane's activation k is 0: nothing to add
                continue
            for e in range(ptr[k], ptr[k + 1]):
                r = rows[e]
                ar = acc[r]
                v = vals[e]
                if mode == 2:
                    for l in range(lanes):
                        ar[l] += v * xk[l]
                    continue
                cr = cnt[r]
                er = ex[r]
                if mode == 0:
                    for l in range(lanes):
                        p = v * xk[l]
                        s = ar[l] + p
                        t = s - span * np.floor((s - lo) * inv)
                        cr[l] += s != t
                        er[l] += p
                        ar[l] = t
                else:
                    for l in range(lanes):
                        p = v * xk[l]
                        s = ar[l] + p
                        t = min(max(s, lo), hi)
                        cr[l] += s != t
                        er[l] += p
                        ar[l] = t
        n_ovf = 0
        n_aff = 0
        mx = 0
        for l in range(nl):
            for r in range(n_out):
                a = np.int64(acc[r, l])
                acc_out[b0 + l, r] = a
                c = np.int64(cnt[r, l])
                n_ovf += c
                n_aff += c > 0
                mx = max(mx, abs(a if mode == 2 else np.int64(ex[r, l])))
                if rnd >= 0:
                    y_out[b0 + l, r] = requantize_one(a, shift, rnd, y_lo, y_hi, relu)
        blk_stats[blk, 0] = n_ovf
        blk_stats[blk, 1] = n_aff
        blk_stats[blk, 2] = mx
        blk_stats[blk, 3] = queued
        blk_stats[blk, 4] = lock


ENGINES = ("auto", "int", "lanes", "vector")


def _int_lane_plan(kernel_mode: int, acc_bits: int, max_x: int, max_w: int, n_in: int, bound: float):
    """``(lane dtype, sh, shift x?, exact-sum dtype)`` for :func:`_int_lanes_kernel`, or None.

    Needs wrap or clip with every product in the accumulator range (the
    datapath's lane plan), per-lane counts below the lane maximum (K steps)
    and, for clip, exact sums (shifted by sh) inside int32 or int64.
    """
    if kernel_mode not in (0, 1):
        return None
    plan = lane_plan(acc_bits, max_x, max_w)
    if plan is None:
        return None
    dt, bits, shift_x = plan
    if n_in >= (1 << (bits - 1)) - 1:
        return None
    sh = bits - acc_bits
    top = (bound + 1.0) * 2.0 ** sh
    ex_dt = np.int32 if top < 2.0 ** 31 else np.int64 if top < 2.0 ** MAX_WIDTH else None
    return None if ex_dt is None else (dt, sh, shift_x, ex_dt)


def _check_call(sched: ColumnSchedule, b, cfg: LayerConfig, engine: str, lanes) -> np.ndarray:
    """The engine's own arguments, the bias (core) and the weights: the bias as int64."""
    check(isinstance(sched, ColumnSchedule),
          f"schedule={type(sched).__name__} is not a ColumnSchedule: decode the encoding with "
          "fxpsim.sparse.kernel.column_schedule(enc)")
    check(engine in ENGINES, f"engine={engine!r} is not one of {', '.join(ENGINES)}")
    check(lanes is None or (isinstance(lanes, (int, np.integer)) and lanes >= 1),
          f"lanes={lanes!r} must be an integer >= 1 (or None: the engine's default)")
    bias = check_bias(b, sched.shape[0], cfg)
    # every engine keeps the exact sums (max_abs_acc) in int64, in every overflow mode
    check_int64_sums(max(sched.shape[1], 1), cfg, bias, "sparse accumulation",
                     "use the dense datapath or narrower operands")
    check_raw(sched.vals, cfg.fmt_w, "CSC values")
    return bias


def _run(x, sched: ColumnSchedule, bias, cfg: LayerConfig, activation: str, engine: str, lanes):
    """The kernels on (B, K) ``x`` (its range checked here): acc, y (None for stochastic rounding: the caller
    requantizes in the layer's output layout), stats, PE timing."""
    n_out, n_in = sched.shape
    n_pes = sched.n_pes
    fmt_y, acc_bits, mode = cfg.fmt_y, cfg.acc_bits, cfg.overflow
    lo, hi = cfg.acc_min, cfg.acc_max
    shift = cfg.shift
    if x.dtype == np.uint64:
        x = x.astype(np.int64)  # Numba mixes uint64 with int64 in float64

    # Bounds (float64 with a relative margin: safe at any width): every |exact partial sum|
    # <= bound; the adder's inputs stay below peak.
    x_lo, x_hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
    if x_lo < cfg.fmt_x.raw_min or x_hi > cfg.fmt_x.raw_max:
        check_raw(x, cfg.fmt_x, "x")  # raises the usual out-of-range message
    max_abs_x = max(-x_lo, x_hi)
    max_abs_w = int(np.abs(sched.vals).max(initial=0))
    row_abs = np.zeros(n_out, np.float64)
    np.add.at(row_abs, sched.rows, np.abs(sched.vals).astype(np.float64))
    margin = 1.0 + 2.0 ** -40
    bound = float((np.abs(bias) + float(max_abs_x) * row_abs).max(initial=0.0)) * margin
    plain = mode is Overflow.IDEAL or bound < hi
    kernel_mode = 2 if plain else mode.code
    peak = bound if plain else max(bound, 2.0 ** acc_bits + float(max_abs_x) * max_abs_w * margin)
    lane_dt = np.float32 if peak < 2.0 ** 24 else np.float64 if peak < 2.0 ** 53 else None
    check(engine != "lanes" or lane_dt is not None,
          "engine='lanes' is not exact here (values reach 2**53): use engine='vector' or 'auto'")
    int_plan = _int_lane_plan(kernel_mode, acc_bits, max_abs_x, max_abs_w, n_in, bound)
    check(engine != "int" or int_plan is not None,
          "engine='int' needs wrap or clip with products inside the accumulator range: use 'auto'")
    use_int = engine == "int" or (engine == "auto" and int_plan is not None)
    use_lanes = not use_int and (engine == "lanes" or (engine == "auto" and lane_dt is not None))

    n_b = x.shape[0]
    acc = np.empty((n_b, n_out), np.int64)
    y = np.empty((n_b, n_out), np.int64)
    stochastic = cfg.rounding is Rounding.STOCHASTIC
    rnd = -1 if stochastic else cfg.rounding.code
    relu = activation == "relu"
    if use_int or use_lanes:
        # per-entry overhead dominates: wider blocks pay (measured on MNIST: int 256 lanes
        # 0.097 s against 64 lanes 0.117 s); float lanes keep 64
        lanes = int(lanes if lanes is not None else 256 if use_int else 64)
        n_blocks = (n_b + lanes - 1) // lanes
        blk = np.zeros((n_blocks, 5), np.int64)
        blk_pe = np.zeros((n_blocks, n_pes), np.int64)
        blk_active = np.zeros((n_blocks, n_in), np.int64)
        ent = sched.entries.astype(np.int32 if sched.entries.sum() < 2**31 else np.int64)  # narrow lanes
        if use_int:
            dt, sh, shift_x, ex_dt = int_plan
            xl = (x.astype(dt) << dt(sh)) if shift_x else x
            vl = sched.vals.astype(dt) << dt(0 if shift_x else sh)
            _int_lanes_kernel(xl, sched.ptr, sched.rows, vl, ent, bias.astype(dt) << dt(sh), sh, acc_bits,
                              mode is Overflow.CLIP, np.zeros(1, ex_dt), lanes, shift, rnd,
                              fmt_y.raw_min, fmt_y.raw_max, relu, acc, y, blk, blk_pe, blk_active)
        else:
            _lanes_kernel(x, sched.ptr, sched.rows, sched.vals.astype(lane_dt), ent, bias.astype(lane_dt),
                          lane_dt(lo), lane_dt(hi), lane_dt(2.0 ** acc_bits), lane_dt(2.0 ** -acc_bits),
                          kernel_mode, lanes,
                          shift, rnd, fmt_y.raw_min, fmt_y.raw_max, relu, acc, y, blk, blk_pe, blk_active)
        active_k = blk_active.sum(axis=0)  # vectors whose activation k is non-zero
        pe = PEStats(entries=blk_pe.sum(axis=0), padding=active_k @ sched.padding,
                     queued_cycles=int(blk[:, 3].sum()), lockstep_cycles=int(blk[:, 4].sum()))
        n_ovf, n_aff, max_abs = int(blk[:, 0].sum()), int(blk[:, 1].sum()), int(blk[:, 2].max(initial=0))
    else:
        threads = numba.get_num_threads()
        th_stats = np.zeros((threads, 5), np.int64)
        th_pe = np.zeros((threads, n_pes), np.int64)
        th_active = np.zeros((threads, n_in), np.int64)
        _eie_kernel(x, sched.ptr, sched.rows, sched.vals, sched.entries, bias, lo, hi, kernel_mode,
                    shift, rnd, fmt_y.raw_min, fmt_y.raw_max, relu, acc, y, th_stats, th_pe, th_active)
        active_k = th_active.sum(axis=0)  # vectors whose activation k is non-zero
        pe = PEStats(entries=th_pe.sum(axis=0), padding=active_k @ sched.padding,
                     queued_cycles=int(th_stats[:, 3].sum()), lockstep_cycles=int(th_stats[:, 4].sum()))
        n_ovf, n_aff, max_abs = int(th_stats[:, 0].sum()), int(th_stats[:, 1].sum()), int(th_stats[:, 2].max())
    stats = OverflowStats(int((active_k @ (sched.entries - sched.padding)).sum()),
                          0 if plain else n_ovf, 0 if plain else n_aff, max_abs)
    wrap = cfg.output_overflow is Overflow.WRAP  # the kernels' fused requantization clips
    return acc, None if stochastic or wrap else y, stats, pe


def eie_dense(x, schedule: ColumnSchedule, b=None, cfg: LayerConfig | None = None, *, fmt_x=None,
              fmt_w=None, fmt_y=None, acc_bits=None, overflow=None, rounding=None, activation="none",
              seed=None, engine: str = "auto", lanes: int | None = None) -> SparseResult:
    """A Dense layer run from its column schedule; bit-exact with :func:`fxpsim.datapath.dense.dense`.

    ``x`` (B, K) raw ints of ``fmt_x``; ``schedule`` the decoded EIE matrix
    ``W.T`` of the raw pruned weights ``W`` (K, N) of ``fmt_w``; ``b`` (N,) raw
    ints in the accumulator format (``cfg.fmt_bias``) or None; ``cfg`` or the
    keyword form as the dense engine.

    ``engine``: ``vector`` runs EIE's loop one input vector at a time on
    int64 (any width); ``lanes`` runs ``lanes`` vectors (None: 64; ``int``: 256) side by side in
    float32/float64 lanes, exact while every value stays below 2**24 / 2**53;
    ``int`` runs them in integer lanes (products inside the accumulator range);
    ``auto`` takes ``int``, else ``lanes`` when exact. When no prefix sum can leave
    the accumulator (``|b| + max|x| * sum_k |W[k, n]|`` fits), wrap and clip
    cannot act and both engines add without per-step checks. Same results.
    """
    cfg, seed = call_config(cfg, activation, seed, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits,
                            overflow=overflow, rounding=rounding)
    check_knobs(cfg, "sparse", KNOBS_RUN)
    bias = _check_call(schedule, b, cfg, engine, lanes)
    n_in = schedule.shape[1]
    x = check_array(x, cfg.fmt_x, "x", 2, f"(batch, {n_in})", in_range=False)  # range: in _run
    check(x.shape[1] == n_in,
          f"x of shape {x.shape} does not fit the layer's {n_in} inputs: pass (batch, {n_in})")
    acc, y, stats, pe = _run(x, schedule, bias, cfg, activation, engine, lanes)
    if y is None:
        y = requantize(acc, cfg, activation, seed)
    return SparseResult(y, acc, stats, pe)


def eie_conv2d(x, schedule: ColumnSchedule, b=None, cfg: LayerConfig | None = None, *,
               kernel_size: int, stride: int = 1, padding: int = 0, fmt_x=None, fmt_w=None, fmt_y=None,
               acc_bits=None, overflow=None, rounding=None, activation="none", seed=None,
               engine: str = "auto", lanes: int | None = None) -> SparseResult:
    """A Conv2D run from the column schedule of its (F, C*kh*kw) EIE matrix; bit-exact with
    :func:`fxpsim.datapath.dense.conv2d` (not in EIE, which runs FC layers only).

    im2col makes one input vector per output position, its columns in the
    conv's accumulation order (channel, kernel row, kernel column) = the EIE
    matrix's columns, so the same terms are added in the same order. ``x``
    (B, C, H, W) raw ints; zero padding adds nothing. Returns ``y``/``acc``
    as (B, F, OH, OW), requantized in that layout (so stochastic rounding
    draws the dense engine's bits); PE timing sums over the B*OH*OW vectors.
    """
    cfg, seed = call_config(cfg, activation, seed, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits,
                            overflow=overflow, rounding=rounding)
    check_knobs(cfg, "sparse", KNOBS_RUN)
    bias = _check_call(schedule, b, cfg, engine, lanes)
    x = check_array(x, cfg.fmt_x, "x", 4, "(batch, channels, height, width)", in_range=False)
    check(isinstance(kernel_size, (int, np.integer)) and not isinstance(kernel_size, bool)
          and kernel_size >= 1, f"kernel_size={kernel_size!r} must be an integer >= 1")
    k = int(kernel_size)
    n_out, n_in = schedule.shape
    check(x.shape[1] * k * k == n_in,
          f"x has {x.shape[1]} channels x {k}x{k} kernel = {x.shape[1] * k * k} inputs per output, the "
          f"encoding {n_in}: encode eie_matrix(w) of this layer's (F, C, {k}, {k}) weights")
    oh, ow = conv_geometry(x.shape, (n_out, x.shape[1], k, k), stride, padding)
    cols = im2col(x, k, k, int(stride), int(padding), oh, ow)
    acc, y, stats, pe = _run(cols, schedule, bias, cfg, activation, engine, lanes)

    def nchw(a):
        return np.ascontiguousarray(a.reshape(x.shape[0], oh, ow, -1).transpose(0, 3, 1, 2))

    acc = nchw(acc)
    y = requantize(acc, cfg, activation, seed) if y is None else nchw(y)
    return SparseResult(y, acc, stats, pe)
