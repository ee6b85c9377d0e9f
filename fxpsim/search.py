"""Per-layer minimum precisions within an accuracy tolerance (Judd et al., ICLR 2016, Table 2).

Knobs per layer: the integer and fraction bits of the layer's input data
(which is also the previous layer's output format) and the weights' width
(their integer bits stay at the profiled range). The search, on a
validation split:

1. *Independent minima.* Starting from the wide configuration
   (:func:`fxpsim.sweep.wide_config`), for each layer and knob alone, the
   fewest bits that keep accuracy >= (1 - tolerance) x float accuracy,
   found by bisection (accuracy is taken as monotone in one knob).
2. *Combine.* All knobs at their minima at once usually loses more than
   any one did; while accuracy is below the target, add one bit to the knob
   whose increment gains most accuracy (ties: the one costing least
   traffic), until the target is met.
3. *Descend.* Remove one bit from the knob that keeps the highest accuracy
   while staying within tolerance; repeat until no knob can lose a bit.

Traffic ratio TR (Judd Sec. 4): bits of weights read plus activations read
and written per image, summed over layers, divided by the same at 32 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .config import NetworkConfig
from .constraints import (CONSTRAINTS, MAX_OPERAND_BITS, Candidate, LayerRanges, candidates,
                          min_acc_bits, worst_case_acc)
from .errors import FxpsimError, check
from .qformat import MAX_WIDTH, QFormat
from .simulate import Evaluator, LayerProfile
from .sweep import set_data_format, wide_config

KNOBS = ("data_int", "data_frac", "weight_bits")
MIN_DATA_INT = -4
MIN_DATA_FRAC = -4
MIN_WEIGHT_BITS = 1


@dataclass(frozen=True, slots=True)
class LayerShape:
    """Counts a layer moves per image: weights, input and output activations."""

    name: str
    weights: int
    inputs: int
    outputs: int


def layer_shapes(ev: Evaluator) -> list[LayerShape]:
    """Weight and activation counts per stage, from the float trace of one image."""
    shapes = []
    n_in = int(ev.x[0].size)
    for s, (_, stage_out) in zip(ev.sim.stages, ev.trace):
        n_out = int(stage_out[0].size)
        shapes.append(LayerShape(s.name, int(s.W.size), n_in, n_out))
        n_in = n_out
    return shapes


def traffic_ratio(config: NetworkConfig, shapes: list[LayerShape], baseline_bits: int = 32) -> float:
    """TR = sum(weights*BW_w + inputs*BW_x + outputs*BW_y) / the same at ``baseline_bits``."""
    used = sum(s.weights * c.fmt_w.width + s.inputs * c.fmt_x.width + s.outputs * c.fmt_y.width
               for s, c in zip(shapes, config))
    full = sum((s.weights + s.inputs + s.outputs) * baseline_bits for s in shapes)
    return used / full


def get_knob(config: NetworkConfig, i: int, knob: str) -> int:
    cfg = config[i]
    return {"data_int": cfg.fmt_x.int_bits, "data_frac": cfg.fmt_x.frac_bits,
            "weight_bits": cfg.fmt_w.width}[knob]


def set_knob(config: NetworkConfig, i: int, knob: str, value: int) -> NetworkConfig:
    """``config`` with one knob of layer ``i`` set (raises FxpsimError if no such format)."""
    cfg = config[i]
    if knob == "weight_bits":
        return config.with_layer(i, fmt_w=QFormat.from_width(value, cfg.fmt_w.int_bits))
    fmt = (QFormat(value, cfg.fmt_x.frac_bits) if knob == "data_int"
           else QFormat(cfg.fmt_x.int_bits, value))
    return set_data_format(config, i, fmt)


def _knob_floor(config: NetworkConfig, i: int, knob: str) -> int:
    cfg = config[i]
    if knob == "weight_bits":
        return MIN_WEIGHT_BITS
    if knob == "data_int":
        return max(MIN_DATA_INT, 1 - cfg.fmt_x.frac_bits)
    return max(MIN_DATA_FRAC, 1 - cfg.fmt_x.int_bits)


@dataclass
class ToleranceResult:
    """The configuration one tolerance gave, with its accuracies."""

    tolerance: float
    config: NetworkConfig
    val_accuracy: float
    float_val_accuracy: float
    traffic_ratio: float
    evaluations: int


def tolerance_search(ev: Evaluator, prof: list[LayerProfile], tolerance: float,
                     start: NetworkConfig | None = None, max_steps: int = 200,
                     knobs: tuple[str, ...] = KNOBS) -> ToleranceResult:
    """Minimum per-layer bits keeping accuracy within ``tolerance`` (see module docstring).

    ``knobs``: the fields searched (a subset of :data:`KNOBS`); the others stay
    as in ``start``, e.g. ``("data_int", "data_frac")`` with 16-bit weights in
    ``start`` for Stripes, whose weights stay 16-bit.
    """
    check(0 <= tolerance < 1, f"tolerance {tolerance!r} must be in [0, 1), e.g. 0.01 for 1 % (0: no loss)")
    check(len(knobs) > 0 and set(knobs) <= set(KNOBS), f"knobs {knobs!r} must be some of {KNOBS}")
    target = (1 - tolerance) * ev.float_accuracy
    base = start or wide_config(prof)
    evals0 = ev.evaluations
    shapes = layer_shapes(ev)
    n = len(base)
    knobs = [(i, k) for i in range(n) for k in KNOBS if k in knobs]

    def ok(cfg):
        return ev.accuracy(cfg) >= target

    # 1. independent minima by bisection
    minima = {}
    for i, k in knobs:
        hi = get_knob(base, i, k)  # known good (the wide start)
        lo = _knob_floor(base, i, k) - 1  # treated as failing
        while hi - lo > 1:
            mid = (hi + lo) // 2
            if ok(set_knob(base, i, k, mid)):
                hi = mid
            else:
                lo = mid
        minima[(i, k)] = hi
    config = base
    for (i, k), v in minima.items():
        config = set_knob(config, i, k, max(v, _knob_floor(config, i, k)))

    # 2. grow until the target is met
    acc = ev.accuracy(config)
    steps = 0
    while acc < target and steps < max_steps:
        steps += 1
        best = None
        for i, k in knobs:
            if get_knob(config, i, k) >= get_knob(base, i, k):
                continue
            cand = set_knob(config, i, k, get_knob(config, i, k) + 1)
            a = ev.accuracy(cand)
            key = (a, -traffic_ratio(cand, shapes))
            if best is None or key > best[0]:
                best = (key, cand)
        if best is None:
            config = base
            break
        config = best[1]
        acc = best[0][0]

    # 3. descend while within tolerance
    while steps < max_steps:
        steps += 1
        best = None
        for i, k in knobs:
            v = get_knob(config, i, k)
            if v <= _knob_floor(config, i, k):
                continue
            cand = set_knob(config, i, k, v - 1)
            a = ev.accuracy(cand)
            if a >= target:
                key = (a, -traffic_ratio(cand, shapes))
                if best is None or key > best[0]:
                    best = (key, cand)
        if best is None:
            break
        config = best[1]
    return ToleranceResult(tolerance, config, ev.accuracy(config), ev.float_accuracy,
                           traffic_ratio(config, shapes), ev.evaluations - evals0)


def tolerance_table(results: list[ToleranceResult], test_accuracies: list[float],
                    float_test_accuracy: float) -> pd.DataFrame:
    """Judd Table 2 layout: a row per tolerance, per-layer data I.F and weight bits, TR."""
    rows = []
    for r, test_acc in zip(results, test_accuracies):
        cfgs = list(r.config)
        rows.append({
            "tolerance_pct": 100 * r.tolerance,
            "data_formats": "-".join(f"{c.fmt_x.int_bits}.{c.fmt_x.frac_bits}" for c in cfgs),
            "weight_bits": "-".join(str(c.fmt_w.width) for c in cfgs),
            "traffic_ratio": r.traffic_ratio,
            "val_accuracy": r.val_accuracy,
            "float_val_accuracy": r.float_val_accuracy,
            "test_accuracy": test_acc,
            "float_test_accuracy": float_test_accuracy,
            "relative_test_accuracy": test_acc / float_test_accuracy,
            "evaluations": r.evaluations,
        })
    return pd.DataFrame(rows)


# --- accumulator-constrained search (de Bruin et al., DSD 2018, Fig. 5) ---------------------


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
    """What the constraints need per layer: folded weights and profiled ranges."""
    return [LayerRanges(s.name, s.W, s.b, s.kind, p.max_abs_x, p.max_abs_acc)
            for s, p in zip(ev.sim.stages, prof)]


def check_acc_bits(constraint: str, ranges: list[LayerRanges], acc_bits: int,
                   max_bits: int = MAX_OPERAND_BITS) -> list[list[Candidate]]:
    """Every layer's candidates, or a clear error naming the first layer with none."""
    check(isinstance(acc_bits, int) and 1 <= acc_bits <= MAX_WIDTH,
          f"--acc-bits {acc_bits!r} must be in 1..{MAX_WIDTH} (the int64 datapath)")
    out = []
    for r in ranges:
        cands = candidates(constraint, r, acc_bits, max_bits)
        if not cands:
            need = min_acc_bits(constraint, r, max_bits)
            raise FxpsimError(f"layer {r.name} (K={r.fan_in}) has no solution under {constraint} with "
                              f"a {acc_bits}-bit accumulator: it needs at least {need} bits; raise "
                              "--acc-bits or try --constraint act-y")
        out.append(cands)
    return out


def accumulator_search(ev: Evaluator, prof: list[LayerProfile], acc_bits: int, constraint: str = "act-w",
                       overflow="wrap", rounding="nearest-even", max_bits: int = MAX_OPERAND_BITS,
                       progress: bool = False) -> tuple[NetworkConfig, list[AccChoice]]:
    """de Bruin's layer-wise heuristic (Fig. 5) for a fixed BW_acc.

    Layer by layer, every eligible solution is run on the calibration set
    with the earlier layers already quantized (and the previous layer's
    output requantized to this layer's data format); the one with the
    smallest sum |y - y_hat| of this layer's outputs against the float
    model is kept. Later layers stay wide until their turn.
    """
    ranges = layer_ranges(ev, prof)
    all_cands = check_acc_bits(constraint, ranges, acc_bits, max_bits)
    config = wide_config(prof, rounding=rounding)
    choices = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(map(len, all_cands)), desc=f"search {constraint} {overflow} BW_acc={acc_bits}",
                   unit="cand", leave=False)
    for i, cands in enumerate(all_cands):
        best = None
        for c in cands:
            trial = config.with_layer(i, fmt_w=c.fmt_w, acc_bits=acc_bits, overflow=overflow,
                                      a2q=constraint == "a2q")
            trial = set_data_format(trial, i, c.fmt_x)
            err = ev.layer_error(trial, i)
            if best is None or err < best[0]:
                best = (err, c, trial)
            if bar is not None:
                bar.update()
        err, c, config = best
        choices.append(AccChoice(ranges[i].name, ranges[i].fan_in, c, acc_bits, err, len(cands)))
    if bar is not None:
        bar.close()
    return config, choices


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
                   constraints=CONSTRAINTS, overflows=("wrap", "clip"), progress: bool = False) -> pd.DataFrame:
    """Normalized accuracy vs BW_acc for each constraint x overflow mode (the search at each width)."""
    rows = []
    ranges = layer_ranges(ev, prof)
    for constraint in constraints:
        for mode in overflows:
            for b in bits:
                try:
                    check_acc_bits(constraint, ranges, int(b))
                except FxpsimError:
                    rows.append({"constraint": constraint, "overflow": mode, "acc_bits": int(b),
                                 "accuracy": float("nan"), "normalized_accuracy": float("nan")})
                    continue
                config, _ = accumulator_search(ev, prof, int(b), constraint, mode, progress=progress)
                acc = ev.accuracy(config)
                rows.append({"constraint": constraint, "overflow": mode, "acc_bits": int(b),
                             "accuracy": acc, "normalized_accuracy": acc / ev.float_accuracy})
    return pd.DataFrame(rows)


def plot_acc_sweep(df: pd.DataFrame, title: str):
    """Normalized accuracy vs BW_acc, a line per constraint and overflow mode, on one figure."""
    from .reports import new_figure

    fig, ax = new_figure(figsize=(7, 4.5))
    for (constraint, mode), part in df.groupby(["constraint", "overflow"], sort=False):
        ax.plot(part["acc_bits"], part["normalized_accuracy"], marker="o" if mode == "wrap" else "x",
                linestyle="-" if mode == "wrap" else "--", label=f"{constraint} / {mode}")
    ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("accumulator bits BW_acc")
    ax.set_ylabel("normalized accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
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
