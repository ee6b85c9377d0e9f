"""de Bruin et al.'s accumulator-constrained search (DSD 2018, Fig. 5) and its tables.

For a fixed accumulator width BW_acc, each layer in turn takes the
candidate (weight and data formats eligible under the chosen constraint,
:mod:`fxpsim.constraints`) that minimises sum |y - y_hat| at its output;
the required-accumulator table (LB_wrap / LB_clip), accuracy against BW_acc
and the wrap/clip case study are the paper's Tables and Figures 6-8.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import pandas as pd

from ..config import NetworkConfig
from ..constraints import (CONSTRAINTS, MAX_OPERAND_BITS, Candidate, LayerRanges, candidates,
                           min_acc_bits, worst_case_acc)
from ..errors import FxpsimError
from ..parallel import SERIAL, EvalSetup, Parallel, evaluator_of
from ..progress import progress_bar
from ..qformat import MAX_WIDTH, QFormat
from ..tables import new_figure
from ..simulate import Evaluator, LayerProfile
from .sweeps import set_data_format, wide_config

@dataclass(frozen=True, slots=True)
class AccChoice:
    """The solution de Bruin's heuristic kept for one layer."""

    layer: str
    fan_in: int
    candidate: Candidate
    acc_bits: int
    abs_error_sum: float
    candidates_tested: int


def layer_ranges(ev: Evaluator, prof: list[LayerProfile]) -> list[LayerRanges]:
    """What the constraints need per layer: each stage of ``ev`` with its two profiled ranges."""
    return [LayerRanges(s, p.max_abs_x, p.max_abs_acc) for s, p in zip(ev.sim.stages, prof)]


def check_acc_bits(constraint: str, ranges: list[LayerRanges], acc_bits: int,
                   max_bits: int = MAX_OPERAND_BITS, product_shift: int = 0) -> list[list[Candidate]]:
    """Every layer's candidates, or a clear error naming the first layer with none.

    ``acc_bits`` is range-checked once, by :func:`fxpsim.constraints.candidates`
    (1..MAX_WIDTH, as :class:`~fxpsim.config.LayerConfig`).
    """
    out = []
    for r in ranges:
        cands = candidates(constraint, r, acc_bits, max_bits, product_shift)
        if not cands:
            need = min_acc_bits(constraint, r, max_bits, product_shift)
            raise FxpsimError(f"layer {r.name} (K={r.fan_in}) has no solution under {constraint} with "
                              f"a {acc_bits}-bit accumulator: it needs at least {need} bits; give a wider "
                              "accumulator (acc_bits) or use the act-y constraint")
        out.append(cands)
    return out


_CANDIDATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per Evaluator: :func:`check_acc_bits` of each (profile, constraint, BW_acc, max_bits, shift) it
was asked for (the acc table asks for each point twice: to count it, then to search it)."""


def _candidates_of(ev: Evaluator, prof: list[LayerProfile], constraint: str, acc_bits: int,
                   max_bits: int = MAX_OPERAND_BITS, product_shift: int = 0) -> list[list[Candidate]]:
    """:func:`check_acc_bits` on ``ev``'s stages and ``prof``, computed once per evaluator."""
    memo = _CANDIDATES.setdefault(ev, {})
    key = (id(prof), constraint, acc_bits, max_bits, product_shift)
    if key not in memo:  # the profile is kept with its answer, so its id is not reused meanwhile
        memo[key] = (prof, check_acc_bits(constraint, layer_ranges(ev, prof), acc_bits, max_bits, product_shift))
    return memo[key][1]


def accumulator_search(ev: Evaluator, prof: list[LayerProfile], acc_bits: int, constraint: str = "act-w",
                       overflow="wrap", rounding="nearest-even", max_bits: int = MAX_OPERAND_BITS,
                       progress: bool = False, parallel: Parallel = SERIAL,
                       product_shift: int = 0) -> tuple[NetworkConfig, list[AccChoice]]:
    """de Bruin's layer-wise heuristic (Fig. 5) for a fixed BW_acc.

    Layer by layer, every eligible solution is run on the calibration set
    with the earlier layers already quantized (and the previous layer's
    output requantized to this layer's data format); the one with the
    smallest sum |y - y_hat| of this layer's outputs against the float
    model is kept (the first of equal ones). Later layers stay wide until
    their turn. ``parallel``: where a layer's candidates run (one task each:
    its frozen config). ``product_shift``: FL_acc - (FL_w + FL_d) of every searched layer
    (hls4ml's narrow accum_t: < 0), in the candidates' bounds and in the configs tried.
    """
    ranges = layer_ranges(ev, prof)
    all_cands = _candidates_of(ev, prof, constraint, acc_bits, max_bits, product_shift)
    config = wide_config(prof, rounding=rounding)
    choices = []
    bar = None
    if progress:  # drawn only when standard error is a terminal (fxpsim.progress)
        bar = progress_bar(sum(map(len, all_cands)), f"search {constraint} {overflow} BW_acc={acc_bits}",
                           unit="cand", leave=False)
    setup = None if parallel.serial else EvalSetup.of(ev, prof)
    for i, cands in enumerate(all_cands):
        trials = []
        for c in cands:
            trial = config.with_layer(i, fmt_w=c.fmt_w, acc_bits=acc_bits, overflow=overflow,
                                      a2q=constraint == "a2q")
            trial = set_data_format(trial, i, c.fmt_x)
            if product_shift:  # FL_acc fixed relative to this candidate's FL_w + FL_d
                trial = trial.with_layer(i, frac_acc=c.fmt_w.frac_bits + c.fmt_x.frac_bits + product_shift)
            trials.append(trial)
        if setup is None:
            errs = []
            for trial in trials:
                errs.append(ev.layer_error(trial, i))
                if bar is not None:
                    bar.update()
        else:
            errs = parallel.map(_layer_error_task, [(t, i) for t in trials], setup)
            ev.evaluations += len(trials)
            if bar is not None:
                bar.update(len(trials))
        j = min(range(len(errs)), key=errs.__getitem__)  # the first of equal errors, as a serial scan
        config = trials[j]
        choices.append(AccChoice(ranges[i].name, ranges[i].fan_in, cands[j], acc_bits, errs[j], len(cands)))
    if bar is not None:
        bar.close()
    return config, choices


def _layer_error_task(setup: EvalSetup, task) -> float:
    """A worker's :meth:`Evaluator.layer_error` of one candidate (``task = (config, layer)``)."""
    config, i = task
    return evaluator_of(setup).layer_error(config, i)


def accumulator_table(choices: list[AccChoice], stats) -> pd.DataFrame:
    """Per-layer table of the search: formats, widths, overflow events and error."""
    rows = []
    for ch, st in zip(choices, stats):
        rows.append({"layer": ch.layer, "K": ch.fan_in, "weights": str(ch.candidate.fmt_w),
                     "data": str(ch.candidate.fmt_x), "bw_w": ch.candidate.bw_w, "bw_d": ch.candidate.bw_d,
                     "acc_bits": ch.acc_bits, "worst_case_acc": ch.candidate.worst_case_acc,
                     "a2q_shrunk_channels": ch.candidate.violating_channels,
                     "overflow_count": st.overflow_count, "outputs_affected": st.outputs_affected,
                     "abs_error_sum": ch.abs_error_sum, "candidates": ch.candidates_tested})
    return pd.DataFrame(rows)


def _il_acc(acc_bits: int, fl_acc: int) -> int:
    """de Bruin's accumulator integer length (sign excluded): IL_acc = BW_acc - 1 - FL_acc."""
    return acc_bits - 1 - fl_acc


def required_accumulator_table(ev: Evaluator, prof: list[LayerProfile], weight_bits: int = 8,
                               data_bits: int = 8, threshold: float = 0.99) -> pd.DataFrame:
    """de Bruin's "Comparison of Required Accumulator Range", one row per layer.

    With every layer at ``weight_bits``/``data_bits`` (profiled int bits),
    the accumulator integer length IL_acc (sign excluded, as in the paper)
    each constraint needs, and LB_wrap / LB_clip: the smallest IL_acc of
    that layer alone (the others ideal) whose normalized accuracy stays
    above ``threshold`` when the accumulator wraps / clips.
    """
    ranges = layer_ranges(ev, prof)
    base = wide_config(prof)
    for i, r in enumerate(ranges):
        base = base.with_layer(i, fmt_w=QFormat.from_width(weight_bits, r.int_bits_w))
        base = set_data_format(base, i, QFormat.from_width(data_bits, r.int_bits_x))
    base_acc = ev.accuracy(base)
    rows = []
    for i, r in enumerate(ranges):
        cfg = base[i]
        fl = cfg.frac_acc
        wide = MAX_WIDTH
        wc = worst_case_acc(r, cfg.fmt_w, cfg.fmt_x, wide, actual_weights=False)
        act = worst_case_acc(r, cfg.fmt_w, cfg.fmt_x, wide, actual_weights=True)
        row = {"layer": r.name, "K": r.fan_in, "weights": str(cfg.fmt_w), "data": str(cfg.fmt_x),
               "fl_acc": fl, "il_wc": _il_acc(wc.bit_length() + 1, fl),
               "il_act_w": _il_acc(act.bit_length() + 1, fl),
               "il_act_y": r.int_bits_acc - 1}
        for mode in ("wrap", "clip"):
            need = act.bit_length() + 1  # never overflows: the search starts here and narrows
            lo, hi = 0, need  # hi passes; lo (0 bits) is taken to fail
            while hi - lo > 1:
                mid = (lo + hi) // 2
                ok = mid - fl >= -MAX_WIDTH and ev.accuracy(base.with_layer(
                    i, acc_bits=mid, overflow=mode)) / ev.float_accuracy > threshold
                lo, hi = (lo, mid) if ok else (mid, hi)
            row[f"lb_{mode}"] = _il_acc(hi, fl)
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["quantized_ideal_accuracy"] = base_acc
    df.attrs["float_accuracy"] = ev.float_accuracy
    return df


def acc_bits_sweep(ev: Evaluator, prof: list[LayerProfile], bits=range(8, 33, 2),
                   constraints=CONSTRAINTS, overflows=("wrap", "clip"), progress: bool = False,
                   parallel: Parallel = SERIAL, on_point=None) -> pd.DataFrame:
    """Normalized accuracy vs BW_acc for each constraint x overflow mode (the search at each width).

    Rows run constraint -> overflow -> BW_acc; widths without a solution have no accuracy (empty
    cells). The points run by BW_acc, a (BW_acc, constraint) pair's overflow modes together, one
    task of ``parallel`` (:func:`_point_groups`, :func:`acc_sweep_point`); ``on_point(done, total)``
    is called as points finish (serial runs).
    """
    points, feasible = sweep_points(ev, prof, bits, constraints, overflows)
    groups = _point_groups(feasible)
    if parallel.serial:
        got, done = {}, 0
        for group in groups:
            for p in group:
                got[p] = acc_sweep_point(ev, prof, p, progress)
                done += 1
                if on_point is not None:
                    on_point(done, len(feasible))
    else:
        accs = parallel.map(_sweep_task, groups, EvalSetup.of(ev, prof))
        got = {p: a for group, part in zip(groups, accs) for p, a in zip(group, part)}
        ev.evaluations += sum(feasible.values())
    rows = []
    for p in points:
        acc = got.get(p)
        rows.append({"constraint": p[0], "overflow": p[1], "acc_bits": p[2], "accuracy": acc,
                     "normalized_accuracy": None if acc is None else acc / ev.float_accuracy})
    return pd.DataFrame(rows)


def sweep_points(ev: Evaluator, prof: list[LayerProfile], bits=range(8, 33, 2), constraints=CONSTRAINTS,
                 overflows=("wrap", "clip")) -> tuple[list, dict]:
    """Every ``(constraint, overflow, BW_acc)`` point of :func:`acc_bits_sweep`, and the feasible ones
    with the evaluations each makes (its candidates, plus one accuracy)."""
    points = [(constraint, mode, int(b)) for constraint in constraints for mode in overflows for b in bits]
    feasible = {}
    for p in points:
        try:
            feasible[p] = sum(map(len, _candidates_of(ev, prof, p[0], p[2]))) + 1
        except FxpsimError:
            pass
    return points, feasible


def acc_sweep_point(ev: Evaluator, prof: list[LayerProfile], point, progress: bool = False) -> float:
    """Accuracy of de Bruin's search at one ``point = (constraint, overflow, BW_acc)``."""
    constraint, mode, b = point
    config, _ = accumulator_search(ev, prof, b, constraint, mode, progress=progress)
    return ev.accuracy(config)


def _point_groups(feasible) -> list[tuple]:
    """The feasible points in the order they run: by BW_acc, then constraint, each point's two
    overflow modes together (one task of a parallel sweep). Neighbours share most of the configs
    they try (the same formats; a stage without overflow is the same in either mode), which the
    Evaluator's cache then serves; the table keeps its own row order."""
    groups: dict = {}
    for p in sorted(feasible, key=lambda p: p[2]):  # stable: constraints, then modes, in their order
        groups.setdefault((p[2], p[0]), []).append(p)
    return [tuple(g) for g in groups.values()]


def _sweep_task(setup: EvalSetup, points) -> list[float]:
    """A worker's accuracies of a group of points (:func:`_point_groups`), on its own Evaluator."""
    ev = evaluator_of(setup)
    return [acc_sweep_point(ev, setup.prof, p) for p in points]


def plot_acc_sweep(df: pd.DataFrame, title: str):
    """Normalized accuracy vs BW_acc, a line per constraint and overflow mode, on one figure.

    A colour and marker per constraint, wrap solid and filled, clip dashed and
    hollow; each line nudged right (0.2 bit per constraint, 0.1 more for clip)
    so that lines that coincide stay visible. The 99 % line labelled, the
    legend outside."""
    fig, ax = new_figure(figsize=(8, 4.5))
    order = list(dict.fromkeys(df["constraint"]))
    for (constraint, mode), part in df.groupby(["constraint", "overflow"], sort=False):
        j, clip = order.index(constraint), mode == "clip"
        colour = f"C{j}"
        ax.plot(part["acc_bits"] + 0.2 * j + (0.1 if clip else 0.0), part["normalized_accuracy"],
                marker="osD^v"[j % 5], markersize=5, color=colour, markerfacecolor="white" if clip else colour,
                linestyle="--" if clip else "-", linewidth=1.1, label=f"{constraint} / {mode}")
    ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":", label="99 % of float accuracy")
    ax.set_xlabel("accumulator width BW_acc (bits; lines nudged right by up to 0.7 bit to stay visible)")
    ax.set_ylabel("normalized accuracy (accuracy / float)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="constraint / overflow", title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title)
    return fig


def overflow_case_study(ev: Evaluator, config: NetworkConfig, bits) -> pd.DataFrame:
    """Fixed formats, shrinking accumulator: accuracy with wrap vs clip at each BW_acc."""
    rows = []
    for b in bits:
        for mode in ("wrap", "clip"):
            try:
                cfg = config.with_all(acc_bits=int(b), overflow=mode)
            except FxpsimError:
                continue
            stats = [st for _, _, st in ev.stage_outputs(cfg)]
            acc = ev.accuracy(cfg)
            rows.append({"acc_bits": int(b), "overflow": mode, "accuracy": acc,
                         "normalized_accuracy": acc / ev.float_accuracy,
                         "overflow_count": sum(s.overflow_count for s in stats),
                         "outputs_affected": sum(s.outputs_affected for s in stats)})
    return pd.DataFrame(rows)
