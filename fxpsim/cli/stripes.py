"""``fxpsim stripes``: Stripes (Judd et al., MICRO 2016) timing from measured or given precisions.

The layers come from a trained MODEL (its conv and fc layers, shapes from
the network) or, for a network that cannot be trained here, from
``--shapes`` (a preset such as ``lenet-caffe`` or ``alexnet``, or an
architecture spec with ``--input-shape``). The per-conv-layer activation
precisions p come from ``--profile 9-8-5-5-7``, from a config file
(``--config``: p = each conv layer's input data width), or, by default,
from the per-layer minimum-precision search (Judd et al.) at 100 % and
99 % relative accuracy (``--tolerance 0,0.01``), as in Stripes' Table I.
For each profile: layer, MACs, p, DaDianNao (bit-parallel, 16 bit) and
Stripes cycles per image, speedup, ideal speedup 16/p; totals over the conv
layers (Table I's scope) and over the whole network.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd

from . import arg_type
from .common import calibration_set, load_model_and_data, model_path, stem_for
from ..errors import FxpsimError, check
from ..reports import REPORTS_DIR, format_table, new_figure, save_figure, write_table

TOLERANCES = (0.0, 0.01)
PAPER_LENET = (("100 %", "3-3"), ("99 %", "2-3"))
"""Stripes Table I, LeNet row (Caffe's LeNet, two conv layers): profiles at 100 % and 99 %."""


def _profile(text: str) -> tuple[int, ...]:
    from ..stripes import parse_profile

    return parse_profile(text)


def _tolerances(text: str) -> tuple[float, ...]:
    values = []
    for part in str(text).split(","):
        try:
            t = float(part)
        except ValueError:
            raise FxpsimError(f"--tolerance {text!r}: {part!r} is not a number; give fractions joined by "
                              "',', e.g. 0,0.01 (0 = no loss)") from None
        check(0 <= t < 1, f"--tolerance {t:g} must be in [0, 1): 0 means no accuracy loss, 0.01 means 1 %")
        values.append(t)
    return tuple(sorted(set(values)))


def _weight_bits(text: str) -> int:
    from ..qformat import MAX_WIDTH

    try:
        b = int(text)
    except ValueError:
        raise FxpsimError(f"--weight-bits {text!r} is not a whole number of bits, e.g. 16") from None
    check(1 <= b <= MAX_WIDTH, f"--weight-bits {b} must be in 1..{MAX_WIDTH}")
    return b


def add_parser(sub) -> None:
    p = sub.add_parser("stripes", help="Stripes bit-serial timing: per-layer precisions (searched, "
                                       "--profile or --config) -> cycles and speedups vs DaDianNao")
    p.add_argument("model", nargs="?", default=None,
                   help="model file (.npz); default: the shipped digits CNN (unless --shapes)")
    p.add_argument("--shapes", default=None,
                   help="time layers given by shape instead of a model: a preset (lenet-caffe, alexnet) "
                        "or an architecture spec/name with --input-shape")
    p.add_argument("--input-shape", default=None, help="input CxHxW of a --shapes spec, e.g. 1x28x28")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--profile", type=arg_type(_profile),
                     help="activation bits per conv layer joined by '-', e.g. 9-8-5-5-7")
    src.add_argument("--config", default=None,
                     help="a config JSON (e.g. reports/<model>_tolerance1_config.json): p = each conv "
                          "layer's input data width")
    src.add_argument("--tolerance", type=arg_type(_tolerances), default=None,
                     help="search at these accuracy losses (default 0,0.01: 100 %% and 99 %% relative)")
    p.add_argument("--weight-bits", type=arg_type(_weight_bits), default=16,
                   help="search: weights held at this width, profiled integer bits (default 16: Stripes "
                        "and DaDianNao keep 16-bit weights); only the data formats are searched")
    p.add_argument("--raw-input", action="store_true",
                   help="search: fold the model's input standardization into its first layer and feed "
                        "pixels / 256 in [0, 1), as Caffe's LeNet (the same float network)")
    p.add_argument("--tiles", type=int, default=16, help="tiles (default 16, as DaDianNao)")
    p.add_argument("--filters", type=int, default=16, help="filters per tile (default 16)")
    p.add_argument("--lanes", type=int, default=16, help="synapse lanes per filter (default 16)")
    p.add_argument("--samples", type=int, default=1000,
                   help="search: calibration samples from the validation split (default 1000)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    p.add_argument("--out", default=str(REPORTS_DIR), help="folder for reports (default: reports/)")
    p.add_argument("--name", default=None, help="report file stem (default from the model/shapes)")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- building the tables

def timing_rows(label: str, shapes, profile, accel, formats=None) -> list[dict]:
    """Rows of one profile: a row per layer, then conv and network totals."""
    from ..stripes import time_network

    net = time_network(shapes, profile, accel)
    rows = []
    for s, t in zip(shapes, net.layers):
        rows.append({"profile": label, "layer": t.name, "kind": t.kind, "macs": t.macs,
                     "input_format": (formats or {}).get(s.name, ""),
                     "precision": t.precision if t.precision is not None else "",
                     "baseline_cycles": t.baseline_cycles, "stripes_cycles": t.stripes_cycles,
                     "speedup": t.speedup, "ideal_speedup": t.ideal_speedup})
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
    return rows


def plot_speedups(df: pd.DataFrame, title: str):
    """Grouped bars: per conv layer (and the conv total) the speedup of each profile."""
    import numpy as np

    part = df[(df["kind"] == "conv") | (df["layer"] == "total (conv layers)")]
    if part.empty:  # no conv layer: everything runs bit-parallel, show the network total
        part = df[df["kind"] == "total"]
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
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, [name.replace("total (conv layers)", "conv total") for name in layers])
    ax.set_ylabel("speedup over DaDianNao (16-bit)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(4, len(labels)))
    ax.grid(axis="y", alpha=0.3)
    return fig


def _fmt_profile(profile) -> str:
    return "-".join(map(str, profile)) if profile else "(no conv layers)"


# --------------------------------------------------------------------------- the command

def run(args) -> int:
    from ..stripes import AcceleratorConfig, parse_profile, parse_shapes, shapes_from_network

    t0 = time.perf_counter()
    accel = AcceleratorConfig(tiles=args.tiles, filters=args.filters, lanes=args.lanes)
    out = Path(args.out)
    if args.shapes is not None:
        check(args.model is None, "give either a MODEL or --shapes, not both")
        check(args.profile is not None or args.config is not None,
              f"--shapes {args.shapes} gives no weights to search precisions on: give --profile "
              "(e.g. --profile 3-3) or --config")
        shapes, source = parse_shapes(args.shapes, args.input_shape)
        stem = re.sub(r"[^a-z0-9.-]+", "_", args.shapes.lower())[:40]
        model = None
    else:
        check(args.input_shape is None, "--input-shape goes with --shapes (a model knows its input)")
        path = model_path(args.model)
        from ..modelfile import load_model

        model = load_model(path)
        shapes = shapes_from_network(model)
        stem, source = stem_for(path), f"model {path}"
    n_conv = sum(s.kind == "conv" for s in shapes)

    summary, rows, notes = [], [], []
    check(not args.raw_input or (args.profile is None and args.config is None and model is not None),
          "--raw-input changes the inputs the search measures precisions on: use it without "
          "--profile/--config/--shapes")
    if args.profile is not None:
        profile = parse_profile(args.profile, n_layers=n_conv, max_bits=accel.baseline_bits)
        runs = [(_fmt_profile(profile), profile, None, {})]
        name = args.name or f"{stem}_stripes_p{_fmt_profile(profile)}"
    elif args.config is not None:
        from ..config import NetworkConfig
        from ..stripes import profile_from_config

        config = NetworkConfig.load(args.config)
        profile = profile_from_config(config, shapes)
        runs = [(Path(args.config).stem, profile, None, {c.name: str(c.fmt_x) for c in config})]
        name = args.name or f"{stem}_stripes_{Path(args.config).stem}"
    else:
        name = args.name or f"{stem}_stripes{'_raw' if args.raw_input else ''}"
        runs, notes = _search_runs(args, shapes, name)
    for label, profile, accs, formats in runs:
        rows += timing_rows(label, shapes, profile, accel, formats)
        conv_t = [r for r in rows if r["profile"] == label and r["layer"] == "total (conv layers)"]
        net_t = [r for r in rows if r["profile"] == label and r["kind"] == "total"][-1]
        summary.append({"profile": label, "precisions": _fmt_profile(profile),
                        **(accs or {}),
                        "conv_speedup": conv_t[0]["speedup"] if conv_t else float("nan"),
                        "conv_ideal_speedup": conv_t[0]["ideal_speedup"] if conv_t else float("nan"),
                        "network_speedup": net_t["speedup"]})
    df = pd.DataFrame(rows)
    summ = pd.DataFrame(summary)

    text = [f"Layers: {source}. Accelerator: {accel.tiles} tiles x {accel.filters} filters x "
            f"{accel.lanes} lanes; DaDianNao computes 16-bit activations bit-parallel, Stripes "
            f"{accel.windows} windows at once, one activation bit per cycle (work padded to whole "
            "filter, lane and window groups; fully-connected layers run bit-parallel in both, "
            "speedup 1). Cycles are per image. The precision p of a conv layer is its input data "
            "width; ideal speedup = 16/p (network: weighted by DaDianNao time).",
            "", "Summary (one row per profile):", "", summ.to_markdown(index=False, floatfmt=".4g")]
    if n_conv == 2:
        text += ["", *_lenet_comparison(runs, shapes, accel, model)]
    text += notes
    write_table(df, name, out, title=f"Stripes timing: {name}", text="\n".join(text))
    write_table(summ, f"{name}_summary", out, title=f"Stripes profiles: {name}")
    fig_title = f"{name}: speedup over DaDianNao ({accel.tiles}x{accel.filters}x{accel.lanes})"
    save_figure(plot_speedups(df, fig_title), out / f"{name}.png")

    print(format_table(summ))
    print()
    print(format_table(df))
    if n_conv == 2:
        print("\n" + "\n".join(_lenet_comparison(runs, shapes, accel, model)))
    for note in notes:
        if note:
            print(note)
    print(f"wrote {out / name}.csv/.md/.png and {name}_summary.csv/.md ({time.perf_counter() - t0:.1f} s)")
    return 0


def _search_runs(args, shapes, name):
    """Search the model's precisions at each tolerance: (label, profile, accuracies, formats) runs."""
    from dataclasses import replace

    from ..config import NetworkConfig
    from ..qformat import QFormat
    from ..search import tolerance_search
    from ..sweep import wide_config
    from ..simulate import Evaluator, Simulator, profile
    from ..stripes import nonnegative_inputs, unsigned_inputs

    tolerances = args.tolerance if args.tolerance is not None else TOLERANCES
    path, model, data = load_model_and_data(args)
    if args.raw_input:
        from ..stripes import fold_input_scaling

        model = fold_input_scaling(model)
    x_cal, y_cal = calibration_set(model, data, args.samples, args.seed)
    sim = Simulator(model, seed=args.seed)
    ev = Evaluator(sim, x_cal, y_cal)
    prof = profile(sim, ev.x, prepared=True)
    is_conv = [s.kind == "conv" for s in shapes]
    check([s.name for s in shapes] == sim.names, "internal: layer names of shapes and stages differ")
    nonneg = nonnegative_inputs(sim.stages, ev.x)
    same_all = []
    out = Path(args.out)
    runs, notes = [], ["", f"Search: Judd et al.'s per-layer minimum precision (fxpsim.search."
                           f"tolerance_search) on {len(ev.y)} validation samples (seed {args.seed}), "
                           "searching each layer's input data format (integer and fraction bits) with "
                           f"the weights held at {args.weight_bits} bits (profiled integer bits): Stripes' "
                           "time depends on the activation precision only, and its weights stay 16-bit. "
                           "Accumulators ideal. Accuracies on the test split relative to the float model."
                           + (" Input: the model's standardization folded into its first layer, pixels "
                              "/ 256 in [0, 1) fed (--raw-input; the same float network up to rounding)."
                              if args.raw_input else "")]
    start = wide_config(prof)
    start = NetworkConfig(tuple(replace(c, fmt_w=QFormat.from_width(args.weight_bits, c.fmt_w.int_bits))
                                for c in start))
    for t in tolerances:
        t1 = time.perf_counter()
        r = tolerance_search(ev, prof, t, start=start, knobs=("data_int", "data_frac"))
        label = f"{100 * (1 - t):g} %"
        res = sim.simulate(data.x_test, r.config, data.y_test)
        cfg_path = r.config.save(out / f"{name}_tol{100 * t:g}_config.json")
        accs = {"val_accuracy": r.val_accuracy, "float_val_accuracy": r.float_val_accuracy,
                "test_accuracy": res.accuracy, "float_test_accuracy": res.float_accuracy,
                "relative_test_accuracy": res.accuracy / res.float_accuracy}
        widths = [c.fmt_x.width for c in r.config]
        runs.append((label, tuple(w for w, c in zip(widths, is_conv) if c), accs,
                     {c.name: str(c.fmt_x) for c in r.config}))
        print(f"tolerance {100 * t:g} %: input formats {' '.join(str(c.fmt_x) for c in r.config)}, "
              f"validation {r.val_accuracy:.4f} (float {r.float_val_accuracy:.4f}), test "
              f"{res.accuracy:.4f} (float {res.float_accuracy:.4f}); {r.evaluations} evaluations, "
              f"{time.perf_counter() - t1:.1f} s; config {cfg_path}")
        # The same values with the always-zero sign bit of non-negative inputs dropped.
        u = unsigned_inputs(r.config, nonneg)
        if any(a.fmt_x != b.fmt_x for a, b, c in zip(u, r.config, is_conv) if c):  # a conv p changes
            ures = sim.simulate(data.x_test, u, data.y_test)
            uaccs = {"val_accuracy": ev.accuracy(u), "float_val_accuracy": r.float_val_accuracy,
                     "test_accuracy": ures.accuracy, "float_test_accuracy": ures.float_accuracy,
                     "relative_test_accuracy": ures.accuracy / ures.float_accuracy}
            uwidths = [c.fmt_x.width for c in u]
            runs.append((f"{label}, no sign bit", tuple(w for w, c in zip(uwidths, is_conv) if c), uaccs,
                         {c.name: str(c.fmt_x) for c in u}))
            same_all.append(uaccs["val_accuracy"] == r.val_accuracy and ures.accuracy == res.accuracy)
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
    return runs, notes


def _lenet_comparison(runs, shapes, accel, model=None) -> list[str]:
    """The Stripes Table I LeNet row against our profiles, on both sets of shapes."""
    from ..stripes import SHAPE_PRESETS, time_network

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
    for label, prof, _, _ in runs:
        a, b = time_network(caffe, prof, accel), time_network(ours, prof, accel)
        lines.append(f"| ours {label} | {_fmt_profile(prof)} | {a.ideal_speedup:.2f} | "
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
