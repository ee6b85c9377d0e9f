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
layers (Table I's scope) and over the whole network. ``--simulate`` also
runs each config (searched or ``--config``) on the test split with every
layer on the bit-serial engine, against the bit-parallel run: accuracies,
bit-identical logits or not, and per layer the outputs that are equal.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..config import NetworkConfig, _short
from ..errors import FxpsimError, check
from ..experiments.stripes import TOLERANCES, StripesStudy, plot_speedups, run_study
from ..interop.models import read_model
from ..qformat import MAX_WIDTH
from ..tables import (
    REPORTS_DIR,
    format_table,
    model_provenance,
    save_figure,
    write_table,
)
from ..timing.stripes import (
    AcceleratorConfig,
    parse_profile,
    parse_shapes,
    shapes_from_network,
)
from . import arg_type
from .common import (
    built,
    calibration_set,
    check_made_for,
    check_out_dir,
    load_model_and_data,
    model_path,
    model_record,
    samples_type,
    seed_type,
    stem_for,
    stem_type,
    whole,
)

MAX_TOLERANCES = 8
"""Most accuracy losses one run searches (each is a whole search: 0 and 1 % take most of a run)."""


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
    check(len(set(values)) <= MAX_TOLERANCES, f"--tolerance {_short(text)} gives {len(set(values))} accuracy losses: "
                                              f"each is a search, give at most {MAX_TOLERANCES}, e.g. 0,0.01")
    return tuple(sorted(set(values)))


def _weight_bits(text: str) -> int:
    try:
        b = int(text)
    except ValueError:
        raise FxpsimError(f"--weight-bits {text!r} is not a whole number of bits, e.g. 16") from None
    check(1 <= b <= MAX_WIDTH, f"--weight-bits {b} must be in 1..{MAX_WIDTH}")
    return b


def _units(what: str):
    """Tiles, filters per tile or lanes per filter: 1 to 4096 (DaDianNao and Stripes have 16 of each)."""
    return whole(1, 4096, what, "tiles, filters and lanes are positive integers up to 4096 (DaDianNao and "
                                "Stripes have 16 x 16 x 16)")


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
    src.add_argument("--profile", type=arg_type(parse_profile),
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
    p.add_argument("--tiles", type=_units("--tiles"), default=16, help="tiles (default 16, as DaDianNao)")
    p.add_argument("--filters", type=_units("--filters"), default=16, help="filters per tile (default 16)")
    p.add_argument("--lanes", type=_units("--lanes"), default=16, help="synapse lanes per filter (default 16)")
    p.add_argument("--simulate", action="store_true",
                   help="also run each config (searched or --config) bit-serially on the test split, every "
                        "layer on the bit-serial engine (--lanes per brick), and report its accuracy and "
                        "equality with the bit-parallel run next to the timing")
    p.add_argument("--samples", type=samples_type("--samples"), default=1000,
                   help="search: calibration samples from the validation split (default 1000)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--seed", type=seed_type(), default=0, help="seed of the calibration sample")
    p.add_argument("--out", default=str(REPORTS_DIR), help="folder for reports (default: reports/)")
    p.add_argument("--name", type=stem_type("--name"), default=None,
                   help="report file stem (default from the model/shapes)")
    p.add_argument("--force", action="store_true",
                   help="time a --config made for another model (its recorded weights digest or layers differ)")
    p.add_argument("--quiet", action="store_true", help="no progress line per searched tolerance")
    p.set_defaults(func=run)


def run(args) -> int:
    """Build the study from the arguments, run it, write and print its report."""
    t0 = time.perf_counter()
    accel = AcceleratorConfig(tiles=args.tiles, filters=args.filters, lanes=args.lanes)
    out = check_out_dir(args.out)  # a read-only reports/ is found out before the search, not after
    check(not args.force or args.config, "--force times a --config made for another model: add --config CFG")
    config = NetworkConfig.load(args.config) if args.config is not None else None  # a bad file fails first
    model = data = calibration = record = None
    if args.shapes is not None:
        check(args.model is None, "give either a MODEL or --shapes, not both")
        check(args.profile is not None or args.config is not None,
              f"--shapes {args.shapes} gives no weights to search precisions on: give --profile "
              "(e.g. --profile 3-3) or --config")
        check(not args.simulate, f"--simulate runs a trained network: give a MODEL, not --shapes {args.shapes}")
        shapes, source = built("--shapes", args.shapes, lambda: parse_shapes(args.shapes, args.input_shape))
        stem = re.sub(r"[^a-z0-9.-]+", "_", args.shapes.lower())[:40]
    else:
        check(args.input_shape is None, "--input-shape goes with --shapes (a model knows its input)")
        search = args.profile is None and args.config is None
        if search or (args.simulate and args.profile is None):  # the model's data too
            path, model, data = load_model_and_data(args, config)
            if search:
                calibration = calibration_set(model, data, args.samples, args.seed)
        else:
            path = model_path(args.model)
            model = read_model(path)
            check_made_for(config, path, model, args)
        record = model_record(path, model)
        shapes = shapes_from_network(model)
        stem, source = stem_for(path), f"model {model_provenance(path)}"
    study = StripesStudy(shapes, source, stem, accel, profile=args.profile, config=config,
                         config_label=Path(args.config).stem if args.config is not None else "config",
                         tolerances=args.tolerance if args.tolerance is not None else TOLERANCES,
                         weight_bits=args.weight_bits, raw_input=args.raw_input, seed=args.seed,
                         name=args.name or None, simulate=args.simulate)
    report = run_study(study, model, data, calibration, log=None if args.quiet else print)

    name = report.name
    for cfg_stem, cfg in report.configs:
        print(f"config {cfg.for_model(record).save(out / f'{cfg_stem}.json')}")
    write_table(report.table, name, out, title=f"Stripes timing: {name}", text=report.text)
    write_table(report.summary, f"{name}_summary", out, title=f"Stripes profiles: {name}")
    fig = plot_speedups(report.table, report.figure_title)
    if fig is None:
        print("no conv layer: every layer runs bit-parallel (speedup 1.00), so no plot is drawn")
    else:
        save_figure(fig, out / f"{name}.png")
    print(format_table(report.summary))
    print()
    print(format_table(report.table))
    if report.comparison:
        print("\n" + "\n".join(report.comparison))
    for note in report.notes:
        if note:
            print(note)
    png = "/.png" if fig is not None else ""
    print(f"wrote {out / name}.csv/.md{png} and {name}_summary.csv/.md ({time.perf_counter() - t0:.1f} s)")
    return 0
