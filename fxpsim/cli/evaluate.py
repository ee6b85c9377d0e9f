"""``fxpsim eval [MODEL] [--config CFG] [--sparse --pes P --index-bits B]``: float accuracy, and
fixed-point accuracy under a config, each layer on the engine the config names (dense, sparse,
bitserial). ``--sparse`` is the shorthand that runs the FC layers (``--sparse-conv``: and the conv
layers) on EIE's sparse engine. A run with another engine than dense is checked against the same
config on the dense engine (exit 1 if the logits differ where the semantics say they must not), and
its engine's timing is printed per layer (sparse: PE cycles; bitserial: SIP cycles). ``--prefix-stats``
adds the exact ``max_abs_prefix`` column (DESIGN.md) to the per-layer statistics. ``--report`` writes
the per-layer table (formats and overflow statistics) under ``--out``, whatever the engines, and each
engine's timing table beside it (sparse, bit-serial: :func:`_print_engines`, where another engine's goes)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import arg_type
from .common import (add_model_args, calibration_set, check_out_dir, check_pes, int_in, load_model_and_data,
                     samples_type, stem_for)
from ..binary.stages import bnn_config, is_binary_stage
from ..config import NetworkConfig
from ..datapath.engines import BitSerialCycles
from ..errors import check
from ..modelfile import select_bn_set
from ..tables import format_table, write_table
from ..simulate import Simulator, config_from_profile, profile
from ..sparse.netsim import cycle_stats, sparse_config, sparse_stages
from ..train.trainer import evaluate

CALIBRATION_SAMPLES = 500  # validation images profiled for the default config of --sparse


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of a model on its test split, float and on a datapath config")
    add_model_args(p, optional=True)
    p.add_argument("--config", default=None,
                   help="per-layer datapath config (JSON written by `fxpsim search`; a layer may name its "
                        "engine: dense, sparse or bitserial): also run the integer simulation and print its "
                        "accuracy and per-layer overflow statistics")
    p.add_argument("--force", action="store_true",
                   help="run a --config made for another model (its recorded weights digest or layers differ)")
    p.add_argument("--images", type=samples_type("--images"), default=None,
                   help="evaluate the first N test images only (default: all)")
    p.add_argument("--prefix-stats", action="store_true",
                   help="also print per layer max_abs_prefix: the largest |running sum| over outputs and every "
                        "prefix of the layer's additions, bias first (what an exact clip accumulator must "
                        "hold; max_abs_acc is only the final sum). One more pass per layer; layers on engine "
                        "bitserial refuse it (run them on engine dense)")
    g = p.add_argument_group("sparse datapath (EIE, Han et al. ISCA 2016)")
    g.add_argument("--sparse", action="store_true",
                   help="run the FC layers on the sparse engine, from their CSC/PE encoding (zero "
                        "activations skipped): check it equals the dense integer run, print PE cycles per "
                        "layer. Without --config: 16-bit formats from a profile, 48-bit wrapping accumulators")
    g.add_argument("--pes", type=arg_type(int_in(1, None, "--pes", "give the number of PEs, e.g. 64")),
                   default=None, help="processing elements, rows interleaved (default 64)")
    g.add_argument("--index-bits", type=arg_type(int_in(1, 16, "--index-bits", "EIE uses 4 or 5 for FC")),
                   default=None, help="relative index width in bits (default 4)")
    g.add_argument("--sparse-conv", action="store_true",
                   help="run the conv layers sparse too (im2col on the (F, C*k*k) matrix; not in EIE)")
    p.add_argument("--report", action="store_true",
                   help="write the per-layer table (formats, overflow statistics) of the integer run to "
                        "OUT/<model>_eval[_<config>][_sparse].csv/.md, and each engine's timing table beside it "
                        "(sparse: <model>-<P>pe-sparse, bit-serial: <report>-bitserial)")
    p.set_defaults(func=run)


def run(args) -> int:
    extra = [o for o, v in (("--pes", args.pes), ("--index-bits", args.index_bits),
                            ("--sparse-conv", args.sparse_conv or None)) if v is not None]
    check(args.sparse or not extra, f"{', '.join(extra)} configure the sparse datapath: add --sparse")
    check(not args.prefix_stats or args.config or args.sparse,
          "--prefix-stats reports the integer simulation: add --config CFG (or --sparse)")
    check(not args.force or args.config, "--force runs a --config made for another model: add --config CFG")
    config = NetworkConfig.load(args.config) if args.config else None  # bad file: fail before work
    check(not args.report or args.sparse or config is not None,
          "--report writes the per-layer table of the integer simulation: add --config CFG (or --sparse)")
    if args.report:
        check_out_dir(args.out)
    path, model, data = load_model_and_data(args, config)  # a config for another model fails before the data
    if config is not None:  # a FlexNet model file: the BatchNorm set of the config's widths
        model = select_bn_set(model, config)
    sim = Simulator(model, seed=args.seed)
    if config is not None:
        sim.check_config(config, prefix_stats=args.prefix_stats)
    pes, index_bits = args.pes or 64, args.index_bits or 4
    if args.sparse:  # a model without FC layers, or more PEs asked than rows, fails here, before any work
        found = sparse_stages(sim.stages, args.sparse_conv)
        if args.pes is not None:
            check_pes(pes, {sim.stages[i].name: sim.stages[i].out_channels for i in found})
    x, y = data.x_test[:args.images], data.y_test[:args.images]
    loss, acc = evaluate(model.network, model.preprocess.apply(x), y)
    print(f"{path}: {model.network.spec()} on {data.name} test split ({len(x)} images)")
    print(f"float accuracy {acc * 100:.2f} % (error {100 - acc * 100:.2f} %), loss {loss:.4f}")
    bnn = any(is_binary_stage(s) for s in sim.stages)  # a BNN model runs on engine xnor by default
    if config is None and not args.sparse and not bnn:
        return 0
    if config is None and bnn:
        config = bnn_config(sim.stages)
        print("\nconfig: BNN defaults (no --config given): engine xnor, raw UQ8.0 input, ±1 in Q2.0, 32-bit "
              "wrapping registers, output BatchNorm to Q16.16:")
    elif config is None:
        x_cal, _ = calibration_set(model, data, CALIBRATION_SAMPLES, args.seed)
        config = config_from_profile(profile(sim, x_cal), weight_bits=16, data_bits=16, acc_bits=48,
                                     overflow="wrap")
        print(f"\nconfig: 16-bit formats from a profile of {len(x_cal)} validation images, 48-bit wrapping "
              "accumulators (no --config given):")
    else:
        print(f"\nconfig {Path(args.config)}:")
    if args.sparse:
        config = sparse_config(config, sim.stages, pes, index_bits, conv=args.sparse_conv)
    if all(c.engine in ("dense", "xnor") for c in config):  # xnor: BNN stages, no dense twin
        result = sim.simulate(x, config, y, prefix_stats=args.prefix_stats)
        _print_run(args, path, config, result)
        return 0
    fixed = [c.name for c in config if c.engine != "xnor"]  # the reference keeps BNN stages on xnor
    cmp = sim.compare(x, config, config.with_engine("dense", fixed), y, prefix_stats=args.prefix_stats)
    _print_run(args, path, config, cmp.result)
    return _print_engines(args, path, sim, config, cmp)


def report_stem(args, path) -> str:
    """The name of eval's per-layer report: the model, then what varies (the config file's name, less
    the model and ``_config``; ``sparse``/``sparse-conv``; the images when not all)."""
    model = stem_for(path)
    parts = [f"{model}_eval"]
    if args.config:
        parts.append(Path(args.config).stem.removeprefix(f"{model}_").removesuffix("_config") or "config")
    if args.sparse:
        parts.append("sparse-conv" if args.sparse_conv else "sparse")
    if args.images is not None:
        parts.append(f"{args.images}images")
    return "_".join(parts)


def _print_run(args, path, config, result) -> None:
    accuracy = (f"fixed-point accuracy {result.accuracy * 100:.2f} % (error {100 - result.accuracy * 100:.2f} %), "
                f"normalized {result.accuracy / result.float_accuracy:.4f}")
    print(format_table(config.table()))
    print()
    print(format_table(result.stats_table()))
    print(accuracy)
    if args.report:
        table = config.table().merge(result.stats_table(), on="layer", how="left", sort=False)
        source = Path(args.config).name if args.config else "a profile (16-bit formats, 48-bit wrapping accumulators)"
        text = (f"Model {path.name}, config {source}, {len(result.predictions)} test images, engine "
                f"{_joined(c.engine for c in config)}. F{accuracy[1:]}.")
        _write(args, table, report_stem(args, path), f"{path.name}: per-layer formats and overflow statistics", text)


def _write(args, table, stem: str, title: str, text: str) -> None:
    for f in write_table(table, stem, args.out, title=title, text=text):
        print(f"wrote {f}")


def _joined(values) -> str:
    return "/".join(str(v) for v in dict.fromkeys(values))


def _print_engines(args, path, sim, config, cmp) -> int:
    """Each engine's timing table (the sparse one optionally written) and the check against dense."""
    res, n = cmp.result, len(cmp.result.predictions)
    sparse = cycle_stats(res.engine_extras)
    if sparse:
        table = pd.DataFrame([s.record() for s in sparse])
        kinds = " and ".join(k for k, kind in (("FC", "dense"), ("conv", "conv2d"))
                             if any(s.kind == kind for s in sparse))
        pes = _joined(s.n_pes for s in sparse)
        settings = (f"{pes} PEs, relative indices {_joined(s.index_bits for s in sparse)} bits, {kinds} "
                    f"layers on the sparse kernel, {n} test images; cycle columns per image (queued model: "
                    "per input vector the busiest PE; lock-step: per column the busiest PE), load imbalance "
                    "= max / mean of the PEs' busy cycles.")
        print(f"\nsparse datapath (EIE): {settings}")
        print(format_table(table, floatfmt=".4g"))
        if args.report:
            _write(args, table, f"{stem_for(path)}-{pes.replace('/', '-')}pe-sparse",
                   f"{path.name} on the sparse datapath", settings)
    serial = [(i, e) for i, e in enumerate(res.engine_extras) if isinstance(e, BitSerialCycles)]
    if serial:
        rows = [{"layer": e.layer, "lanes": e.lanes, "precision": config[i].fmt_x.width,
                 "cycles_per_output": e.cycles_per_output, "sip_cycles": e.sip_cycles / n,
                 "outputs_equal_pct": 100.0 * cmp.stages[i].outputs_equal / max(cmp.stages[i].outputs, 1)}
                for i, e in serial]
        settings = (f"activations fed one bit per cycle (p = input width), {n} test images; sip_cycles per "
                    "image (one SIP computing every output: outputs x ceil(K / lanes) x p); outputs equal to "
                    "the dense engine's, in %")
        print(f"\nbit-serial datapath (Stripes): {settings}:")
        print(format_table(pd.DataFrame(rows), floatfmt=".4g"))
        if args.report:
            _write(args, pd.DataFrame(rows), f"{report_stem(args, path)}-bitserial",
                   f"{path.name} on the bit-serial datapath (Stripes)", settings + ".")
    # An engine with its own timing (T4's xnor engine, when it lands) prints and, with --report, writes its
    # table here, as the sparse and bit-serial ones above: f"{report_stem(args, path)}-<engine>".
    must = all(sim.engines[c.engine].equals_dense(c) for c in config)
    differ = cmp.images_differing
    same = "bit-identical to" if not differ else f"DIFFERENT from ({differ} images)"
    label = " + ".join(dict.fromkeys("bit-serial" if e == "bitserial" else e for e in
                                     (c.engine for c in config if c.engine != "dense")))
    note = "" if must or not differ else (" (allowed: clip on the bit-serial engine with signed activations, "
                                          "lanes > 1 or stripes bricks adds in another order)")
    print(f"{label} accuracy {res.accuracy * 100:.2f} %: logits {same} the dense integer run{note}")
    return 1 if differ and must else 0
