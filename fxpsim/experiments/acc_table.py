"""de Bruin et al.'s accumulator study (DSD 2018): required range, solution space, accuracy vs BW_acc, wrap vs clip.

What ``fxpsim search --acc-table`` reports, as a library function testable
without argv: :func:`run_acc_table` takes a frozen :class:`AccTableStudy`,
the model and its calibration sample, and returns an
:class:`AccTableReport` of four tables that the caller writes:

- ``required``: per layer, the accumulator integer length IL_acc each
  constraint needs and LB_wrap / LB_clip
  (:func:`fxpsim.search.required_accumulator_table`, the paper's
  "Comparison of Required Accumulator Range");
- ``space``: every (BW_w, BW_d) at ``space_bits`` classified as in Fig. 4
  (:func:`fxpsim.constraints.solution_space`);
- ``sweep``: normalized accuracy vs BW_acc for each constraint and overflow
  mode (:func:`fxpsim.search.acc_bits_sweep`);
- ``case``: formats fixed by the act-y search at ``case_search_bits``, the
  accumulator narrowed through ``case_bits``, wrap vs clip
  (:func:`fxpsim.search.overflow_case_study`).

Integer lengths follow the paper (sign excluded, BW_acc = IL_acc + FL_acc + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..constraints import MAX_OPERAND_BITS, solution_space
from ..errors import check
from ..modelfile import Model
from ..parallel import SERIAL, Parallel, one_thread
from ..search import (acc_bits_sweep, accumulator_search, layer_ranges, overflow_case_study,
                      required_accumulator_table)
from ..search.accumulator import sweep_points
from ..simulate import Evaluator, Simulator, profile

__all__ = ["AccTableReport", "AccTableStudy", "run_acc_table"]


def _bits(values, what: str) -> tuple[int, ...]:
    values = tuple(values)
    check(bool(values) and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in values),
          f"{what}={values!r} must be accumulator widths (whole numbers >= 1), e.g. 8, 10, ..., 32")
    return values


@dataclass(frozen=True, slots=True)
class AccTableStudy:
    """The study of one model: ``stem`` names the reports, ``source`` describes the model (its file
    name and sha256); ``seed`` is the simulator's (stochastic rounding); ``space_bits`` the BW_acc of
    the solution space; ``sweep_bits`` the widths of the accuracy sweep; ``case_search_bits`` the
    width whose act-y/wrap formats the case study fixes, narrowed through ``case_bits``;
    ``progress``: progress bars in the sweep."""

    stem: str
    source: str
    seed: int = 0
    space_bits: int = 16
    sweep_bits: tuple[int, ...] = tuple(range(8, 33, 2))
    case_search_bits: int = 32
    case_bits: tuple[int, ...] = tuple(range(32, 7, -2))
    progress: bool = False

    def __post_init__(self) -> None:
        _bits((self.space_bits, self.case_search_bits), "space_bits, case_search_bits")
        object.__setattr__(self, "sweep_bits", _bits(self.sweep_bits, "sweep_bits"))
        object.__setattr__(self, "case_bits", _bits(self.case_bits, "case_bits"))


@dataclass(frozen=True, eq=False)
class AccTableReport:
    """The four tables and their Markdown (``*_text``) and titles; ``samples``: calibration samples."""

    stem: str
    samples: int
    required: pd.DataFrame
    required_text: str
    space: pd.DataFrame
    space_title: str
    space_text: str
    sweep: pd.DataFrame
    case: pd.DataFrame
    case_title: str

    def tables(self) -> tuple[tuple[str, pd.DataFrame, str, str | None], ...]:
        """``(report name, table, title, text)`` of each table, in the order the study makes them."""
        s = self.stem
        return ((f"{s}_acc_required", self.required, "Required accumulator range", self.required_text),
                (f"{s}_solution_space", self.space, self.space_title, self.space_text),
                (f"{s}_acc_sweep", self.sweep, "Normalized accuracy vs BW_acc", None),
                (f"{s}_overflow_case", self.case, self.case_title, None))


ETA_AFTER = 3
"""Sweep points after which :func:`run_acc_table` says how long the rest will take."""


def run_acc_table(study: AccTableStudy, model: Model, calibration, parallel: Parallel = SERIAL,
                  say=None) -> AccTableReport:
    """Run the study on ``model`` with the calibration sample ``calibration = (x, y)`` (validation split).

    One :class:`fxpsim.simulate.Evaluator` serves every step, in the order
    required table, solution space, sweep, case study; the sweep's points run on
    ``parallel`` (the same tables for any). ``say(line)``, if given, hears how many
    evaluations the sweep makes and, after :data:`ETA_AFTER` points, how long it will take.
    This process runs its kernels on one thread (:func:`~fxpsim.parallel.one_thread`).
    """
    with one_thread():
        return _run(study, model, calibration, parallel, say)


def _run(study: AccTableStudy, model: Model, calibration, parallel: Parallel, say) -> AccTableReport:
    import time

    x_cal, y_cal = calibration
    sim = Simulator(model, seed=study.seed)
    ev = Evaluator(sim, x_cal, y_cal)
    prof = profile(sim, ev.x, prepared=True)
    points, feasible = sweep_points(ev, prof, study.sweep_bits)
    if say is not None:
        say(f"acc table: {len(points)} sweep points (constraint x overflow x BW_acc), {len(feasible)} with a "
            f"solution: {sum(feasible.values())} evaluations of {len(ev.y)} samples on {parallel.describe()}, "
            "plus the required-range table and the case study")
    req = required_accumulator_table(ev, prof)
    required_text = (
        f"Model {study.source}; 8-bit weights and data (profiled integer bits). Integer lengths IL_acc "
        "exclude the sign bit, as in de Bruin et al. (BW_acc = IL_acc + FL_acc + 1). LB_wrap / "
        "LB_clip: the smallest IL_acc of the layer alone that keeps normalized accuracy > 99 % "
        f"on {len(ev.y)} calibration samples (8-bit quantized accuracy with ideal accumulators: "
        f"{req.attrs['quantized_ideal_accuracy']:.4f}; float {req.attrs['float_accuracy']:.4f}).")
    b = study.space_bits
    space = pd.concat([solution_space(r, b) for r in layer_ranges(ev, prof)], ignore_index=True)
    space_text = (f"Every (BW_w, BW_d) up to {MAX_OPERAND_BITS} bits per layer: safe under WC_w/WC_d or "
                  "ACT_w/WC_d (checked exactly on raw integers), the ACT_w optima, the ACT_y line.")
    t0 = time.perf_counter()

    def on_point(done: int, total: int) -> None:
        if say is not None and done == ETA_AFTER and total > done:
            left = (time.perf_counter() - t0) / done * (total - done)
            say(f"acc table: {done} of {total} sweep points in {time.perf_counter() - t0:.1f} s; "
                f"about {left:.0f} s to go")

    sweep = acc_bits_sweep(ev, prof, bits=study.sweep_bits, progress=study.progress, parallel=parallel,
                           on_point=on_point)
    config, _ = accumulator_search(ev, prof, study.case_search_bits, "act-y", "wrap")
    case = overflow_case_study(ev, config, study.case_bits)
    case_title = (f"Overflow case study: formats fixed (act-y at {study.case_search_bits} bits), "
                  "accumulator narrowed, wrap vs clip")
    return AccTableReport(study.stem, len(ev.y), req, required_text, space,
                          f"Solution space at BW_acc = {b} (de Bruin Fig. 4)", space_text, sweep, case, case_title)


def sweep_grid(sweep: pd.DataFrame) -> pd.DataFrame:
    """The sweep as the terminal shows it: a row per BW_acc, a flat column ``constraint/overflow``
    of normalized accuracy each (blank where that width has no solution)."""
    cols = list(dict.fromkeys(zip(sweep["constraint"], sweep["overflow"])))
    grid = pd.DataFrame({"acc_bits": list(dict.fromkeys(sweep["acc_bits"]))})
    for c, o in cols:
        part = sweep[(sweep["constraint"] == c) & (sweep["overflow"] == o)].set_index("acc_bits")
        grid[f"{c}/{o}"] = grid["acc_bits"].map(part["normalized_accuracy"]).astype(float)
    return grid


def terminal_tables(report: AccTableReport) -> tuple[tuple[str, pd.DataFrame], ...]:
    """``(title, table)`` of what ``search --acc-table`` prints: flat columns, no NaN cells."""
    return (("Required accumulator range (IL_acc, sign excluded)", report.required),
            ("Normalized accuracy vs BW_acc (constraint/overflow; blank: no formats meet the constraint "
             "at that BW_acc)", sweep_grid(report.sweep)),
            (report.case_title, report.case))
