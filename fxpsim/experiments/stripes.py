"""The Stripes study (Judd et al., MICRO 2016): per-layer precisions, then DaDianNao vs Stripes cycles.

What ``fxpsim stripes`` reports, as a library function testable without
argv: :func:`run_study` takes a frozen :class:`StripesStudy` (the layers,
the accelerator and where the precisions come from) and returns a
:class:`StripesReport` (per-layer timing table, summary, Markdown text,
searched configs) that the caller writes. The precisions p of the conv
layers come from a given profile, from a config (p = each conv layer's
input data width) or from Judd et al.'s per-layer minimum-precision search
(:func:`fxpsim.search.tolerance_search`) at each tolerance, as in Stripes'
Table I (100 % and 99 % relative accuracy). A searched config is also timed
with the always-zero sign bit of non-negative inputs dropped
(:func:`unsigned_inputs`): Stripes' precisions count magnitude bits.

With ``simulate=True`` (``fxpsim stripes --simulate``) every config (searched
or given) also runs on the test split with every layer on the bit-serial
engine (:mod:`fxpsim.datapath.engines` ``bitserial``: ``lanes`` = the
accelerator's lanes, Stripes' brick order), against the bit-parallel (dense)
engine under the same config: accuracies, whether the logits are
bit-identical, and per layer how many outputs are equal, next to the timing.

The model surgery the study needs lives here too: :func:`nonnegative_inputs`
(which stage inputs follow a ReLU), :func:`unsigned_inputs` (Q(I,F) ->
UQ(I-1,F) for them) and :func:`fold_input_scaling` (Caffe's pixels / 256
input, the preprocessing folded into the first layer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..config import NetworkConfig
from ..errors import check
from ..graph import Network
from ..modelfile import Model
from ..qformat import QFormat
from ..tables import markdown_table, new_figure
from ..search import tolerance_search
from ..simulate import Comparison, Evaluator, Simulator, StageAgreement, profile
from ..sweep import set_data_format, wide_config
from ..timing.stripes import (SHAPE_PRESETS, AcceleratorConfig, LayerShape, parse_profile,
                              profile_from_config, time_network)
from ..train.data import Preprocess

__all__ = ["PAPER_LENET", "TOLERANCES", "Accuracies", "ProfileRun", "SerialCheck", "StripesReport",
           "StripesStudy", "bit_serial_config", "check_bit_serial", "fold_input_scaling",
           "nonnegative_inputs", "plot_speedups", "run_study", "timing_rows", "unsigned_inputs"]

TOLERANCES = (0.0, 0.01)
"""Default search tolerances: 100 % and 99 % relative accuracy (Stripes' Table I)."""
PAPER_LENET = (("100 %", "3-3"), ("99 %", "2-3"))
"""Stripes Table I, LeNet row (Caffe's LeNet, two conv layers): profiles at 100 % and 99 %."""


# --------------------------------------------------------------------------- records

@dataclass(frozen=True, slots=True)
class StripesStudy:
    """One study: the layers (``shapes``, described by ``source``), the accelerator and the precisions.

    Exactly one source of precisions: ``profile`` (bits per conv layer),
    ``config`` (p = each conv layer's input width; ``config_label`` names
    its rows) or, with neither, the search at ``tolerances`` with weights
    held at ``weight_bits`` (``raw_input``: pixels / 256 fed, the input
    scaling folded; ``seed``: the simulator's). ``name`` (the report stem)
    defaults to ``<stem>_stripes`` plus ``_p<profile>``, ``_<config_label>``
    or ``_raw``.
    """

    shapes: tuple[LayerShape, ...]
    source: str
    stem: str
    accel: AcceleratorConfig = AcceleratorConfig()
    profile: tuple[int, ...] | str | None = None
    config: NetworkConfig | None = None
    config_label: str = "config"
    tolerances: tuple[float, ...] = TOLERANCES
    weight_bits: int = 16
    raw_input: bool = False
    seed: int = 0
    name: str | None = None
    simulate: bool = False
    """Also run each config bit-serially on the test split, against the bit-parallel run."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))
        check(self.profile is None or self.config is None, "give either a profile or a config, not both")
        check(not self.simulate or self.profile is None,
              "--simulate runs the network under its data formats, which a --profile does not give: use "
              "--config, or let the search find the formats")
        check(not self.raw_input or self.searches,
              "--raw-input changes the inputs the search measures precisions on: use it without "
              "--profile/--config/--shapes")
        if self.profile is not None:
            object.__setattr__(self, "profile", parse_profile(self.profile, n_layers=self.n_conv,
                                                              max_bits=self.accel.baseline_bits))
        elif self.config is not None:
            profile_from_config(self.config, self.shapes)  # the config names these layers
        object.__setattr__(self, "tolerances", tuple(self.tolerances))
        if self.name is None:
            suffix = (f"_p{_fmt_profile(self.profile)}" if self.profile is not None
                      else f"_{self.config_label}" if self.config is not None
                      else "_raw" if self.raw_input else "")
            object.__setattr__(self, "name", f"{self.stem}_stripes{suffix}")

    @property
    def n_conv(self) -> int:
        """Conv layers: one precision each (fc layers run bit-parallel)."""
        return sum(s.kind == "conv" for s in self.shapes)

    @property
    def searches(self) -> bool:
        """True when the precisions come from the search (no profile, no config)."""
        return self.profile is None and self.config is None


@dataclass(frozen=True, slots=True)
class Accuracies:
    """A searched config's accuracies: on the calibration sample and on the test split, with the float model's."""

    val_accuracy: float
    float_val_accuracy: float
    test_accuracy: float
    float_test_accuracy: float

    @property
    def relative_test_accuracy(self) -> float:
        return self.test_accuracy / self.float_test_accuracy

    def row(self) -> dict:
        """The summary columns, in order."""
        return {"val_accuracy": self.val_accuracy, "float_val_accuracy": self.float_val_accuracy,
                "test_accuracy": self.test_accuracy, "float_test_accuracy": self.float_test_accuracy,
                "relative_test_accuracy": self.relative_test_accuracy}


@dataclass(frozen=True, slots=True)
class SerialCheck:
    """One config run bit-serially against the bit-parallel run (``--simulate``), on the test split."""

    lanes: int
    bitserial_accuracy: float
    bitparallel_accuracy: float
    logits_identical: bool
    images_differing: int
    stages: tuple[StageAgreement, ...]

    @classmethod
    def of(cls, lanes: int, cmp: Comparison) -> SerialCheck:
        return cls(lanes, cmp.result.accuracy, cmp.reference.accuracy, cmp.logits_identical,
                   cmp.images_differing, cmp.stages)

    def row(self) -> dict:
        """The summary columns, in order."""
        return {"bitserial_test_accuracy": self.bitserial_accuracy,
                "bitparallel_test_accuracy": self.bitparallel_accuracy,
                "logits_identical": self.logits_identical, "images_differing": self.images_differing}


@dataclass(frozen=True, slots=True)
class ProfileRun:
    """One timed profile: its label, p per conv layer, accuracies (searched runs), input formats per
    layer, its config (searched or given) and, with ``--simulate``, the bit-serial check."""

    label: str
    profile: tuple[int, ...]
    accuracies: Accuracies | None = None
    formats: tuple[tuple[str, str], ...] = ()
    config: NetworkConfig | None = None
    serial: SerialCheck | None = None


@dataclass(frozen=True)
class StripesReport:
    """What the study reports: ``table`` (a row per layer and totals, per run), ``summary`` (a row
    per run), ``text`` (the Markdown above the table), ``comparison`` (against Table I's LeNet row;
    empty unless two conv layers), ``notes`` (on the search), ``configs`` ((file stem, config) of
    each searched config)."""

    name: str
    runs: tuple[ProfileRun, ...]
    table: pd.DataFrame
    summary: pd.DataFrame
    text: str
    comparison: tuple[str, ...]
    notes: tuple[str, ...]
    configs: tuple[tuple[str, NetworkConfig], ...]
    figure_title: str


# --------------------------------------------------------------------------- the study

def run_study(study: StripesStudy, model: Model | None = None, data=None, calibration=None,
              log=None) -> StripesReport:
    """Time every profile of ``study`` and build its report.

    ``model``: the trained model the shapes come from (None for shapes
    only); the search also needs ``data`` (its test split is reported) and
    ``calibration`` ((x, y), the validation sample the search measures on).
    ``log``: called with one progress line per searched tolerance.
    """
    accel = study.accel
    configs, notes = (), ()
    sim_model = fold_input_scaling(model) if study.raw_input and model is not None else model
    if study.profile is not None:
        runs = (ProfileRun(_fmt_profile(study.profile), study.profile),)
    elif study.config is not None:
        runs = (ProfileRun(study.config_label, profile_from_config(study.config, study.shapes), None,
                           _formats(study.config), study.config),)
    else:
        check(model is not None and data is not None and calibration is not None,
              "the precision search needs the model, its dataset and a calibration sample")
        runs, notes, configs = _search_runs(study, sim_model, data, calibration, log or (lambda line: None))
    if study.simulate:
        check(model is not None and data is not None,
              "--simulate runs the network: it needs the model and its dataset (not --shapes)")
        sim = Simulator(sim_model, seed=study.seed)
        runs = tuple(replace(run, serial=check_bit_serial(sim, run.config, data.x_test, data.y_test,
                                                          accel.lanes)) for run in runs)
        notes += _simulate_notes(runs, accel.lanes, len(data.y_test))
    rows, summary = [], []
    for run in runs:
        part = timing_rows(run.label, study.shapes, run.profile, accel, dict(run.formats), run.serial)
        rows += part
        conv_t = [r for r in part if r["layer"] == "total (conv layers)"]
        net_t = [r for r in part if r["kind"] == "total"][-1]
        summary.append({"profile": run.label, "precisions": _fmt_profile(run.profile),
                        **(run.accuracies.row() if run.accuracies else {}),
                        **(run.serial.row() if run.serial else {}),
                        "conv_speedup": conv_t[0]["speedup"] if conv_t else float("nan"),
                        "conv_ideal_speedup": conv_t[0]["ideal_speedup"] if conv_t else float("nan"),
                        "network_speedup": net_t["speedup"]})
    summ = pd.DataFrame(summary)
    comparison = tuple(_lenet_comparison(runs, study.shapes, accel, model)) if study.n_conv == 2 else ()
    text = [f"Layers: {study.source}. Accelerator: {accel.tiles} tiles x {accel.filters} filters x "
            f"{accel.lanes} lanes; DaDianNao computes 16-bit activations bit-parallel, Stripes "
            f"{accel.windows} windows at once, one activation bit per cycle (work padded to whole "
            "filter, lane and window groups; fully-connected layers run bit-parallel in both, "
            "speedup 1). Cycles are per image. The precision p of a conv layer is its input data "
            "width; ideal speedup = 16/p (network: weighted by DaDianNao time).",
            "", "Summary (one row per profile):", "", markdown_table(summ)]
    if comparison:
        text += ["", *comparison]
    text += notes
    fig_title = f"{study.name}: speedup over DaDianNao ({accel.tiles}x{accel.filters}x{accel.lanes})"
    return StripesReport(study.name, runs, pd.DataFrame(rows), summ, "\n".join(text), comparison,
                         tuple(notes), configs, fig_title)


def bit_serial_config(config: NetworkConfig, lanes: int = 16, brick_order: str = "stripes") -> NetworkConfig:
    """``config`` with every layer on the bit-serial engine: ``lanes`` activations per SIP brick,
    conv bricks in ``brick_order`` (``stripes``: lanes channels at one kernel position)."""
    return config.with_engine("bitserial", lanes=lanes, brick_order=brick_order)


def check_bit_serial(sim: Simulator, config: NetworkConfig, x, y, lanes: int = 16) -> SerialCheck:
    """``config`` run bit-serially (:func:`bit_serial_config`) against ``config`` bit-parallel, on ``x``."""
    return SerialCheck.of(lanes, sim.compare(x, bit_serial_config(config, lanes), config, y))


def _simulate_notes(runs, lanes: int, images: int) -> tuple[str, ...]:
    same = all(r.serial.logits_identical for r in runs)
    return ("", f"Simulated (--simulate): each config on the {images} test images with every layer on the "
                f"bit-serial engine (fxpsim.datapath.engines bitserial: activations fed one bit per cycle, "
                f"bricks of {lanes} lanes, conv bricks as Stripes reads them), against the bit-parallel "
                "(dense) engine under the same config: bitserial_/bitparallel_test_accuracy, "
                "logits_identical and images_differing in the summary, outputs_equal of outputs per "
                "layer in the table. Wrap and ideal accumulators give the same sums on both (DESIGN.md); "
                f"here the logits are {'bit-identical in every run' if same else 'NOT identical in every run'}.")


def _search_runs(study: StripesStudy, model, data, calibration, log):
    """Search the model's (input scaling already folded) precisions at each tolerance: (runs, notes, configs)."""
    x_cal, y_cal = calibration
    sim = Simulator(model, seed=study.seed)
    ev = Evaluator(sim, x_cal, y_cal)
    prof = profile(sim, ev.x, prepared=True)
    shapes = study.shapes
    is_conv = [s.kind == "conv" for s in shapes]
    check([s.name for s in shapes] == sim.names, "internal: layer names of shapes and stages differ")
    nonneg = nonnegative_inputs(sim.stages, ev.x)
    same_all, runs, configs = [], [], []
    notes = ["", f"Search: Judd et al.'s per-layer minimum precision (fxpsim.search."
                 f"tolerance_search) on {len(ev.y)} validation samples (seed {study.seed}), "
                 "searching each layer's input data format (integer and fraction bits) with "
                 f"the weights held at {study.weight_bits} bits (profiled integer bits): Stripes' "
                 "time depends on the activation precision only, and its weights stay 16-bit. "
                 "Accumulators ideal. Accuracies on the test split relative to the float model."
                 + (" Input: the model's standardization folded into its first layer, pixels "
                    "/ 256 in [0, 1) fed (--raw-input; the same float network up to rounding)."
                    if study.raw_input else "")]
    start = wide_config(prof)
    start = NetworkConfig(tuple(replace(c, fmt_w=QFormat.from_width(study.weight_bits, c.fmt_w.int_bits))
                                for c in start))
    for t in study.tolerances:
        t1 = time.perf_counter()
        r = tolerance_search(ev, prof, t, start=start, knobs=("data_int", "data_frac"))
        label = f"{100 * (1 - t):g} %"
        res = sim.simulate(data.x_test, r.config, data.y_test)
        configs.append((f"{study.name}_tol{100 * t:g}_config", r.config))
        accs = Accuracies(r.val_accuracy, r.float_val_accuracy, res.accuracy, res.float_accuracy)
        runs.append(ProfileRun(label, _conv_widths(r.config, is_conv), accs, _formats(r.config), r.config))
        log(f"tolerance {100 * t:g} %: input formats {' '.join(str(c.fmt_x) for c in r.config)}, "
            f"validation {r.val_accuracy:.4f} (float {r.float_val_accuracy:.4f}), test "
            f"{res.accuracy:.4f} (float {res.float_accuracy:.4f}); {r.evaluations} evaluations, "
            f"{time.perf_counter() - t1:.1f} s")
        # The same values with the always-zero sign bit of non-negative inputs dropped.
        u = unsigned_inputs(r.config, nonneg)
        if any(a.fmt_x != b.fmt_x for a, b, c in zip(u, r.config, is_conv) if c):  # a conv p changes
            ures = sim.simulate(data.x_test, u, data.y_test)
            uaccs = Accuracies(ev.accuracy(u), r.float_val_accuracy, ures.accuracy, ures.float_accuracy)
            runs.append(ProfileRun(f"{label}, no sign bit", _conv_widths(u, is_conv), uaccs, _formats(u), u))
            same_all.append(uaccs.val_accuracy == r.val_accuracy and ures.accuracy == res.accuracy)
    dropped = [s.name for s, flag in zip(shapes, nonneg) if flag and s.kind == "conv"]
    if same_all:
        notes.append(f"- \"no sign bit\" rows: the search gives signed Q formats (sign bit inside I), "
                     "and the sign bit of a value that cannot be negative is always 0. Where a layer's "
                     "input cannot be negative (it follows a ReLU, then only pooling; the first layer when its "
                     f"calibration data has no negative value) -- here the conv layers {', '.join(dropped) or 'none'} "
                     "-- the unsigned format one bit narrower, UQ(I-1).F, holds the same values, so Stripes "
                     "feeds one bit less. Simulated "
                     "accuracies of these rows "
                     f"{'equal the signed ones' if all(same_all) else 'DIFFER from the signed ones'}.")
    return tuple(runs), tuple(notes), tuple(configs)


def _conv_widths(config, is_conv) -> tuple[int, ...]:
    return tuple(c.fmt_x.width for c, conv in zip(config, is_conv) if conv)


def _formats(config) -> tuple[tuple[str, str], ...]:
    return tuple((c.name, str(c.fmt_x)) for c in config)


def _fmt_profile(profile) -> str:
    return "-".join(map(str, profile)) if profile else "(no conv layers)"


# --------------------------------------------------------------------------- tables and figure

def timing_rows(label: str, shapes, profile, accel, formats=None, serial: SerialCheck | None = None) -> list[dict]:
    """Rows of one profile: a row per layer, then conv and network totals (``serial``: plus each
    layer's simulated outputs and how many equal the bit-parallel ones)."""
    net = time_network(shapes, profile, accel)
    agree = {a.layer: a for a in serial.stages} if serial is not None else None
    rows = []
    for s, t in zip(shapes, net.layers):
        rows.append({"profile": label, "layer": t.name, "kind": t.kind, "macs": t.macs,
                     "input_format": (formats or {}).get(s.name, ""),
                     "precision": t.precision if t.precision is not None else "",
                     "baseline_cycles": t.baseline_cycles, "stripes_cycles": t.stripes_cycles,
                     "speedup": t.speedup, "ideal_speedup": t.ideal_speedup})
        if agree is not None:
            rows[-1].update(outputs=agree[s.name].outputs, outputs_equal=agree[s.name].outputs_equal)
    conv = [s for s in shapes if s.kind == "conv"]
    totals = []
    if conv:
        totals.append(("conv layers", time_network(conv, profile, accel)))
    if len(conv) < len(shapes):
        totals.append(("network", net))
    for name, t in totals:
        rows.append({"profile": label, "layer": f"total ({name})", "kind": "total",
                     "macs": sum(r.macs for r in t.layers), "input_format": "",
                     "precision": "", "baseline_cycles": t.baseline_cycles,
                     "stripes_cycles": t.stripes_cycles, "speedup": t.speedup,
                     "ideal_speedup": t.ideal_speedup})
        if agree is not None:
            part = [agree[s.name] for s in shapes if name == "network" or s.kind == "conv"]
            rows[-1].update(outputs=sum(a.outputs for a in part), outputs_equal=sum(a.outputs_equal for a in part))
    return rows


def _lenet_comparison(runs, shapes, accel, model=None) -> list[str]:
    """The Stripes Table I LeNet row against our profiles, on both sets of shapes."""
    caffe = tuple(s for s in SHAPE_PRESETS["lenet-caffe"][1]() if s.kind == "conv")
    ours = tuple(s for s in shapes if s.kind == "conv")
    lines = ["Against Stripes Table I, LeNet row (Caffe's LeNet: conv20x5 and conv50x5 on 28x28 "
             "MNIST, precisions from Judd et al.'s profiling of that network):", "",
             "| profile | precisions | ideal speedup, Caffe LeNet shapes | ideal speedup, these shapes "
             "| speedup (padded), these shapes |", "|---|---|---|---|---|"]
    for label, prof in PAPER_LENET:
        a, b = time_network(caffe, prof, accel), time_network(ours, prof, accel)
        lines.append(f"| paper {label} | {prof} | {a.ideal_speedup:.2f} | {b.ideal_speedup:.2f} | "
                     f"{b.speedup:.2f} |")
    for run in runs:
        a, b = time_network(caffe, run.profile, accel), time_network(ours, run.profile, accel)
        lines.append(f"| ours {run.label} | {_fmt_profile(run.profile)} | {a.ideal_speedup:.2f} | "
                     f"{b.ideal_speedup:.2f} | {b.speedup:.2f} |")
    lines += ["", "The two shape columns separate the precisions from the layer mix: the network "
              "speedup weights each conv layer's p by its DaDianNao time, and with "
              f"{accel.filters_in_parallel} filters per "
              "cycle a layer of few filters costs as much as one of that many. DaDianNao cycles per "
              "conv layer here: " + ", ".join(f"{t.name} {t.baseline_cycles}" for t in
                                                time_network(ours, (16,) * len(ours), accel).layers)
              + "; Caffe LeNet: " + ", ".join(f"{t.name} {t.baseline_cycles}" for t in
                                               time_network(caffe, (16, 16), accel).layers) + "."]
    if model is not None:
        md = model.metadata
        lines += ["", "Setup differences: the paper's network is Caffe's LeNet (conv20x5, conv50x5, "
                  "no ReLU after the convolutions, pixels scaled to [0, 1)); this model is "
                  f"`{md.get('spec', '?')}` trained by fxpsim on {md.get('dataset', '?')} with "
                  f"'{md.get('preprocess', '?')}' preprocessing (float test accuracy "
                  f"{md.get('test_accuracy', float('nan')):.4f}). The paper's precisions come from "
                  "Judd et al.'s profiling of that network; here they come from fxpsim's search on "
                  "this model's validation samples, and 100 % means no loss on those samples, not "
                  "on the test split."]
    return lines


def plot_speedups(df: pd.DataFrame, title: str):
    """Grouped bars: per conv layer (and the conv total) the speedup of each profile; None when
    there is no conv layer (every layer runs bit-parallel at speedup 1: nothing to show)."""
    part = df[(df["kind"] == "conv") | (df["layer"] == "total (conv layers)")]
    if part.empty:
        return None
    labels = list(dict.fromkeys(part["profile"]))
    layers = list(dict.fromkeys(part["layer"]))
    fig, ax = new_figure(figsize=(max(5.0, 1.2 * len(layers) * max(1, len(labels)) ** 0.5 + 2), 4))
    width = 0.8 / len(labels)
    x = np.arange(len(layers))
    for j, label in enumerate(labels):
        rows = part[part["profile"] == label].set_index("layer")
        vals = [float(rows.loc[name, "speedup"]) if name in rows.index else 0.0 for name in layers]
        bars = ax.bar(x + (j - (len(labels) - 1) / 2) * width, vals, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":", label="1 = DaDianNao")
    ax.set_xticks(x, [name.replace("total (conv layers)", "conv total") for name in layers])
    ax.set_xlabel("conv layer")
    ax.set_ylabel("speedup over DaDianNao (16-bit), x")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(5, len(labels) + 1),
              title="precision profile (accuracy kept)", title_fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


# --------------------------------------------------------------------------- model surgery: sign bits, input scaling

_KEEPS_SIGN = ("maxpool2d", "avgpool2d", "flatten")


def nonnegative_inputs(stages, x_first=None) -> list[bool]:
    """Per stage (:func:`fxpsim.simulate.build_stages`): is its input never negative?

    Stage ``i > 0``: by structure, when stage ``i-1`` ends in a ReLU (fused,
    or a later ``relu`` op) followed only by pooling or flatten (the integer
    max, the rounded average and a reshape of non-negative values stay
    non-negative). Stage 0: when ``x_first`` (its float input on the data at
    hand) is given and has no negative value; otherwise False.
    """
    out = [x_first is not None and bool(np.min(x_first) >= 0)]
    for s in stages[:-1]:
        nonneg = bool(s.relu)
        for op, _ in s.post:
            nonneg = True if op == "relu" else (nonneg and op in _KEEPS_SIGN)
        out.append(nonneg)
    return out


def unsigned_inputs(config, nonnegative):
    """The config with each non-negative input's sign bit dropped: Q(I,F) -> UQ(I-1,F).

    The sign bit of a value that is never negative is always 0, so a layer
    whose input is non-negative computes the same values from the unsigned
    format one bit narrower: ``Q(I,F)`` holds ``0 .. 2**(I-1) - 2**-F`` of
    its non-negative range, and so does ``UQ(I-1,F)``; quantizing or
    saturating a non-negative value gives the same raw integer in both.
    Stripes then feeds ``p - 1`` bits (its precisions count magnitude
    bits). The previous layer's output format changes with it (it is the
    same data). 1-bit formats, and layers with possibly negative inputs,
    are kept.
    """
    check(len(nonnegative) == len(config), f"{len(nonnegative)} flags for {len(config)} layers")
    for i, (cfg, nonneg) in enumerate(zip(config, nonnegative)):
        fmt = cfg.fmt_x
        if nonneg and fmt.signed and fmt.width > 1:
            config = set_data_format(config, i, QFormat(fmt.int_bits - 1, fmt.frac_bits, signed=False))
    return config


def fold_input_scaling(model, scale: float = 256.0):
    """The same network fed ``raw_pixels / scale`` (Caffe's LeNet input: [0, 1)), preprocessing folded.

    ``apply(x) = (x - mean) / std`` is per channel and affine, so the first
    compute layer absorbs it: ``W' = W * scale / std[c]``, ``b' = b - sum
    W * mean[c] / std[c]`` (exact for a Dense layer, and for a Conv2D
    without padding, whose windows never see a padded zero). The float
    network is unchanged up to float rounding; its input becomes
    non-negative, as in Caffe, where Stripes' precisions were measured.
    """
    pre, net = model.preprocess, model.network
    mean, std = np.asarray(pre.mean, np.float64), np.asarray(pre.std, np.float64)
    check(mean.shape[1:] == (1, 1), f"the model's preprocessing '{pre.mode}' subtracts a mean image: "
                                    "only per-channel scaling folds into the first layer")
    first = next(i for i, layer in enumerate(net.layers) if layer.kind in ("conv2d", "dense"))
    check(all(layer.kind in ("flatten", "dropout") for layer in net.layers[:first]),
          "layers before the first Conv2D/Dense must be flatten/dropout to fold the input scaling")
    copy = Network.from_config(net.to_config(), dtype=np.float64)
    copy.load_state_dict(net.state_dict())
    layer = copy.layers[first]
    c, h, w = net.input_shape
    gain = np.broadcast_to(scale / std.reshape(c), (c,))
    shift = (mean / std).reshape(c)
    if layer.kind == "conv2d":
        check(int(layer.padding) == 0, "the first Conv2D pads with zeros: folding the input scaling "
                                       "would change the padded values; this works for unpadded layers")
        W = layer.params["W"]
        bias_shift = np.einsum("fcuv,c->f", W, shift)
        W *= gain[None, :, None, None]
    else:
        per_input = np.repeat(np.arange(c), h * w)
        W = layer.params["W"]
        bias_shift = W.T @ shift[per_input]
        W *= gain[per_input][:, None]
    layer.params["b"] -= bias_shift
    zeros = np.zeros((c, 1, 1), np.float32)
    folded = Preprocess("none", zeros, np.full((c, 1, 1), scale, np.float32))
    return Model(copy, folded, {**model.metadata, "input_scaling": f"pixels / {scale:g}, folded"})
