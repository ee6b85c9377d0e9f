"""``fxpsim sweep [MODEL] --what weight-frac|data-int|data-frac``: Judd et al.'s uniform sweeps (Fig. 2).

The report is ``<model>_sweep`` for the default sweep (all three fields, 0:16 bits); a sweep of other
fields or bits names them, so it never overwrites another: ``<model>_sweep_data-frac_bits2to8``."""

from __future__ import annotations

from pathlib import Path

from . import arg_type
from .common import (add_model_args, add_parallel_options, calibration_set, check_out_dir, load_model_and_data,
                     parallel_of, samples_type, stem_for)
from ..errors import FxpsimError, check
from ..tables import format_table, model_provenance, save_figure, write_table
from ..search.sweeps import WHAT


def _bits(text: str) -> range:
    try:
        lo, _, hi = text.partition(":")
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise FxpsimError(f"--bits {text!r} is not LO:HI, e.g. 1:16") from None
    check(-16 <= lo <= hi <= 40, f"--bits {text} must satisfy -16 <= LO <= HI <= 40")
    return range(lo, hi + 1)


DEFAULT_BITS = range(0, 17)


def report_stem(model_stem: str, what, bits: range) -> str:
    """``<model>_sweep``, then each setting that is not the default: the fields, the bits."""
    parts = [f"{model_stem}_sweep"]
    if what and list(dict.fromkeys(what)) != list(WHAT):
        parts.append("-".join(dict.fromkeys(what)))
    if bits != DEFAULT_BITS:
        parts.append(f"bits{bits.start}to{bits.stop - 1}")
    return "_".join(parts)


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="accuracy vs one uniform bit-width field (Judd et al. Fig. 2)")
    add_model_args(p, optional=True)
    p.add_argument("--what", action="append", choices=WHAT,
                   help="field to sweep (repeatable; default: all three)")
    p.add_argument("--bits", type=arg_type(_bits), default=DEFAULT_BITS,
                   help="bits of the swept field, LO:HI (default 0:16)")
    p.add_argument("--samples", type=samples_type("--samples"), default=None,
                   help="evaluate on this many test images (default: the whole test split)")
    add_parallel_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..simulate import Evaluator, Simulator, profile
    from ..search.sweeps import plot_sweeps, sweep

    check_out_dir(args.out)  # a read-only reports/ is found out before the sweep, not after
    path, model, data = load_model_and_data(args)
    x_cal, y_cal = calibration_set(model, data, 500, args.seed)
    sim = Simulator(model, seed=args.seed)
    prof = profile(sim, x_cal)
    x, y = data.x_test, data.y_test
    if args.samples is not None:
        x, y = x[: args.samples], y[: args.samples]
    ev = Evaluator(sim, x, y)
    df = sweep(ev, prof, tuple(args.what or WHAT), args.bits, parallel_of(args))
    stem = report_stem(stem_for(path), args.what, args.bits)
    out = Path(args.out)
    write_table(df, stem, out, title="Uniform sweeps (Judd et al. Fig. 2)",
                text=f"Model {model_provenance(path)}, {len(y)} test samples, float accuracy {ev.float_accuracy:.4f}. "
                     "Held fields: profiled integer bits and 14 fraction bits; ideal accumulator.")
    save_figure(plot_sweeps(df, f"{stem_for(path)}: accuracy vs bits"), out / f"{stem}.png")
    print(format_table(df))
    print(f"wrote {out / stem}.csv, .md and .png")
    return 0
