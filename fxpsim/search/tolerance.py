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

from ..config import NetworkConfig
from ..errors import check
from ..qformat import QFormat
from ..simulate import Evaluator, LayerProfile, Stage
from .sweeps import set_data_format, wide_config

KNOBS = ("data_int", "data_frac", "weight_bits")
MIN_DATA_INT = -4
MIN_DATA_FRAC = -4
MIN_WEIGHT_BITS = 1


LayerShape = Stage
"""The old name of a layer's per-image counts: a :class:`~fxpsim.simulate.Stage` gives them
(``weights``, ``inputs``, ``outputs``)."""


def layer_shapes(ev: Evaluator) -> list[Stage]:
    """The stages of ``ev``, whose ``weights``, ``inputs`` and ``outputs`` (per image) the traffic counts."""
    return list(ev.sim.stages)


def traffic_ratio(config: NetworkConfig, shapes: list[Stage], baseline_bits: int = 32) -> float:
    """TR = sum(weights*BW_w + inputs*BW_x + outputs*BW_y) / the same at ``baseline_bits``.

    ``shapes``: per layer, anything with ``weights``, ``inputs`` and ``outputs`` per image
    (the stages, :func:`layer_shapes`).
    """
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
