"""``fxpsim eval [MODEL] [--config CFG] [--sparse --pes P --index-bits B]``: float accuracy, and
fixed-point accuracy under a config; ``--sparse`` also runs the FC layers on EIE's sparse datapath
(bit-identical outputs) and prints their PE cycles per layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import arg_type
from .common import add_model_args, calibration_set, int_in, load_model_and_data, stem_for
from ..errors import check
from ..reports import format_table, write_table

CALIBRATION_SAMPLES = 500  # validation images profiled for the default config of --sparse


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of a model on its test split, float and on a datapath config")
    add_model_args(p, optional=True)
    p.add_argument("--config", default=None,
                   help="per-layer datapath config (JSON written by `fxpsim search`): also run the "
                        "integer simulation and print its accuracy and per-layer overflow statistics")
    p.add_argument("--images", type=arg_type(int_in(1, None, "--images", "e.g. --images 1000")), default=None,
                   help="evaluate the first N test images only (default: all)")
    g = p.add_argument_group("sparse datapath (EIE, Han et al. ISCA 2016)")
    g.add_argument("--sparse", action="store_true",
                   help="also run the FC layers from their CSC/PE encoding on the sparse kernel (zero "
                        "activations skipped): check it equals the dense integer run, print PE cycles per "
                        "layer. Without --config: 16-bit formats from a profile, 48-bit wrapping accumulators")
    g.add_argument("--pes", type=arg_type(int_in(1, None, "--pes", "give the number of PEs, e.g. 64")),
                   default=None, help="processing elements, rows interleaved (default 64)")
    g.add_argument("--index-bits", type=arg_type(int_in(1, 16, "--index-bits", "EIE uses 4 or 5 for FC")),
                   default=None, help="relative index width (default 4)")
    g.add_argument("--sparse-conv", action="store_true",
                   help="run the conv layers sparse too (im2col on the (F, C*k*k) matrix; not in EIE)")
    g.add_argument("--report", action="store_true",
                   help="write the cycle table to OUT/<model>-<P>pe-sparse.csv/.md")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import NetworkConfig
    from ..simulate import Simulator
    from ..train.trainer import evaluate

    extra = [o for o, v in (("--pes", args.pes), ("--index-bits", args.index_bits),
                            ("--sparse-conv", args.sparse_conv or None), ("--report", args.report or None))
             if v is not None]
    check(args.sparse or not extra, f"{', '.join(extra)} configure the sparse datapath: add --sparse")
    path, model, data = load_model_and_data(args)
    config = NetworkConfig.load(args.config) if args.config else None  # bad file: fail before work
    sim = Simulator(model, seed=args.seed)
    sparse = None
    if args.sparse:  # a model without FC layers fails here, before any work
        from ..sparse.netsim import SparseSimulator

        sparse = SparseSimulator(model, args.pes or 64, args.index_bits or 4, conv=args.sparse_conv,
                                 seed=args.seed)
    x, y = data.x_test[:args.images], data.y_test[:args.images]
    loss, acc = evaluate(model.network, model.preprocess.apply(x), y)
    print(f"{path}: {model.network.spec()} on {data.name} test split ({len(x)} images)")
    print(f"float accuracy {acc * 100:.2f} % (error {100 - acc * 100:.2f} %), loss {loss:.4f}")
    if config is None and sparse is None:
        return 0
    if config is None:
        from ..simulate import config_from_profile, profile

        x_cal, _ = calibration_set(model, data, CALIBRATION_SAMPLES, args.seed)
        config = config_from_profile(profile(sim, x_cal), weight_bits=16, data_bits=16, acc_bits=48,
                                     overflow="wrap")
        print(f"\nconfig: 16-bit formats from a profile of {len(x_cal)} validation images, 48-bit wrapping "
              "accumulators (no --config given):")
    else:
        print(f"\nconfig {Path(args.config)}:")
    result = sim.simulate(x, config, y)
    print(format_table(config.table()))
    print()
    print(format_table(result.stats_table()))
    print(f"fixed-point accuracy {result.accuracy * 100:.2f} % (error {100 - result.accuracy * 100:.2f} %), "
          f"normalized {result.accuracy / result.float_accuracy:.4f}")
    return 0 if sparse is None else _run_sparse(args, path, sparse, x, y, config, result)


def _run_sparse(args, path, sparse, x, y, config, dense) -> int:
    """The sparse run, its cycle table (printed, optionally written) and the check against ``dense``."""
    res = sparse.simulate(x, config, y)
    table = res.cycles_table()
    differ = int(np.count_nonzero((res.logits != dense.logits).any(axis=1)))
    settings = (f"{sparse.n_pes} PEs, relative indices {sparse.index_bits} bits, "
                f"{'FC and conv' if args.sparse_conv else 'FC'} layers on the sparse kernel, {len(y)} test "
                "images; cycle columns per image (queued model: per input vector the busiest PE; lock-step: "
                "per column the busiest PE), load imbalance = max / mean of the PEs' busy cycles.")
    print(f"\nsparse datapath (EIE): {settings}")
    print(format_table(table, floatfmt=".4g"))
    if args.report:
        for f in write_table(table, f"{stem_for(path)}-{sparse.n_pes}pe-sparse", args.out,
                             title=f"{path.name} on the sparse datapath", text=settings):
            print(f"wrote {f}")
    same = "bit-identical to" if not differ else f"DIFFERENT from ({differ} images)"
    print(f"sparse accuracy {res.accuracy * 100:.2f} %: logits {same} the dense integer run")
    return 0 if not differ else 1
