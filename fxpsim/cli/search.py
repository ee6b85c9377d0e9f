"""``fxpsim search``: per-layer formats for a fixed accumulator or an accuracy tolerance.

- ``--acc-bits N``: de Bruin et al.'s accumulator-constrained search.
- ``--tolerance T``: Judd et al.'s per-layer minimum precisions (Table 2).
- ``--acc-table``: de Bruin's required-accumulator table, accuracy vs BW_acc
  for every constraint and overflow mode, and the wrap/clip case study
  (:func:`fxpsim.experiments.acc_table.run_acc_table`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from . import arg_type
from .common import (LR_TYPE, add_model_args, add_parallel_options, calibration_set, check_out_dir, epochs_type,
                     load_model_and_data, model_path, model_record, parallel_of, samples_type, stem_for)
from ..constraints import CONSTRAINTS, plot_solution_space
from ..errors import FxpsimError, check
from ..experiments.acc_table import AccTableStudy, run_acc_table, terminal_tables
from ..experiments.prune import Retraining, load_for_retraining
from ..experiments.qat import alternate
from ..modelfile import check_writable, save_model
from ..qformat import MAX_WIDTH
from ..tables import format_table, model_provenance, save_figure, write_table
from ..search import accumulator_search, accumulator_table, plot_acc_sweep, tolerance_search, tolerance_table
from ..simulate import Evaluator, Simulator, profile
from ..train.qat import FineTune

TOLERANCES = (0.01, 0.02, 0.05, 0.10)
JUDD_LENET = ("Judd et al. (ICLR 2016) Table 2, LeNet (Caffe's, 4 layers): at 1 % the data formats "
              "1.1-3.1-3.0-3.0 (I.F per layer) with TR 0.08.")


def _tolerance(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise FxpsimError(f"--tolerance {text!r} is not a number: give a fraction such as 0.01") from None
    check(0 < t < 1, f"--tolerance {t} must be in (0, 1): 0.01 means 1 %")
    return t


def _acc_bits(text: str) -> int:
    try:
        b = int(text)
    except ValueError:
        raise FxpsimError(f"--acc-bits {text!r} is not a whole number of bits") from None
    check(1 <= b <= MAX_WIDTH, f"--acc-bits {b} must be in 1..{MAX_WIDTH} (the int64 datapath)")
    return b


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="per-layer formats: fixed accumulator (--acc-bits) or "
                                      "accuracy tolerance (--tolerance)")
    add_model_args(p, optional=True)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--acc-bits", type=arg_type(_acc_bits),
                      help="accumulator width BW_acc in bits, sign included (de Bruin et al. 2018)")
    mode.add_argument("--tolerance", type=arg_type(_tolerance),
                      help="accuracy loss allowed, a fraction of the float accuracy: 0.01 = 1 %% "
                           "(Judd et al. 2016); 1, 2, 5 and 10 %% are searched too")
    mode.add_argument("--acc-table", action="store_true",
                      help="required accumulator per constraint, LB_wrap/LB_clip, accuracy vs BW_acc")
    p.add_argument("--constraint", default="act-w", choices=CONSTRAINTS,
                   help="eligible solutions: wc (worst case), act-w (actual weights), act-y "
                        "(profiled outputs), a2q (L1-bounded channels)")
    p.add_argument("--overflow", default="wrap", choices=("wrap", "clip"),
                   help="accumulator overflow: wrap (two's complement) or clip (saturate)")
    p.add_argument("--all", action="store_true", help="with --acc-bits: every constraint x overflow mode")
    p.add_argument("--samples", type=samples_type("--samples"), default=500,
                   help="calibration samples from the validation split (default 500)")
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                   help="no progress bar (bars are drawn only when stderr is a terminal)")
    add_parallel_options(p)
    p.add_argument("--finetune", type=epochs_type("--finetune"), default=None, metavar="N",
                   help="with --acc-bits: alternate the search and N epochs of fine-tuning to the config found, "
                        "until the config repeats or --rounds; writes the model, its config and a table per round")
    p.add_argument("--rounds", type=epochs_type("--rounds"), default=3, help="with --finetune: most fine-tunings")
    p.add_argument("--acc-aware", action="store_true", help="with --finetune: A2Q projection after every step")
    p.add_argument("--lr", type=LR_TYPE, default=None, help="with --finetune: rate (default: the model's / 10)")
    p.set_defaults(func=run)


def _setup(args):
    path, model, data = load_model_and_data(args)
    x_cal, y_cal = calibration_set(model, data, args.samples, args.seed)
    sim = Simulator(model, seed=args.seed)
    ev = Evaluator(sim, x_cal, y_cal)
    return path, model, data, sim, ev, profile(sim, ev.x, prepared=True)


def run(args) -> int:
    check_out_dir(args.out)  # a read-only reports/ is found out before the search, not after
    check(args.finetune is None or args.acc_bits is not None,
          "--finetune alternates the accumulator search with fine-tuning: give --acc-bits B too")
    if args.acc_bits is not None:
        return _run_acc(args)
    if args.tolerance is not None:
        return _run_tolerance(args)
    return _run_acc_table(args)


def _run_acc(args) -> int:
    if args.finetune is not None:
        return _run_alternate(args)
    t0 = time.perf_counter()
    path, model, data, sim, ev, prof = _setup(args)
    stem, source = stem_for(path), model_provenance(path)
    out, record = Path(args.out), model_record(path, model)
    combos = ([(c, o) for c in CONSTRAINTS for o in ("wrap", "clip")] if args.all
              else [(args.constraint, args.overflow)])
    summary = []
    for constraint, overflow in combos:
        config, choices = accumulator_search(ev, prof, args.acc_bits, constraint, overflow,
                                             progress=not args.no_progress, parallel=parallel_of(args))
        cal_stats = [st for _, _, st in ev.stage_outputs(config)]
        table = accumulator_table(choices, cal_stats)
        result = sim.simulate(data.x_test, config, data.y_test)
        norm = result.accuracy / result.float_accuracy
        name = f"{stem}_acc{args.acc_bits}_{constraint}_{overflow}"
        text = (f"Model {source}, BW_acc = {args.acc_bits}, constraint {constraint}, overflow {overflow}, "
                f"{len(ev.y)} calibration samples. Formats are I.F with the sign bit in I (de Bruin's IL "
                f"is I - 1). Test accuracy: float {result.float_accuracy:.4f}, quantized "
                f"{result.accuracy:.4f}, normalized {norm:.4f}.")
        write_table(table, name, out, title=f"Accumulator-constrained search: {name}", text=text)
        config.for_model(record).save(out / f"{name}_config.json")
        print(f"\n{constraint} / {overflow}, BW_acc = {args.acc_bits} ({len(ev.y)} calibration samples)")
        print(format_table(table))
        print(f"test accuracy: float {result.float_accuracy:.4f}  quantized {result.accuracy:.4f}  "
              f"normalized {norm:.4f}")
        print(f"config: {out / (name + '_config.json')}")
        summary.append({"constraint": constraint, "overflow": overflow, "acc_bits": args.acc_bits,
                        "float_accuracy": result.float_accuracy, "quantized_accuracy": result.accuracy,
                        "normalized_accuracy": norm,
                        "overflow_count_test": sum(s.overflow_count for s in result.layer_stats)})
    if args.all:
        df = pd.DataFrame(summary)
        write_table(df, f"{stem}_acc{args.acc_bits}_all", out,
                    title=f"Every constraint x overflow mode at BW_acc = {args.acc_bits}")
        print("\n" + format_table(df))
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _run_alternate(args) -> int:
    """``--acc-bits B --finetune N``: :func:`fxpsim.experiments.qat.alternate`, its model, config, table."""
    check(not args.all, "--finetune alternates one constraint and overflow mode: drop --all")
    path = model_path(args.model)
    setup = load_for_retraining(path, Retraining(data_dir=args.data_dir, progress=False))
    run = FineTune(epochs=args.finetune, lr=args.lr, seed=args.seed, acc_aware=args.acc_aware, sim_seed=args.seed)
    name = f"{stem_for(path)}_acc{args.acc_bits}_{args.constraint}_{args.overflow}_finetune"
    out = Path(args.out)
    model_out = out / f"{name}.npz"
    check_writable(model_out)
    alt = alternate(setup, calibration_set(setup.model, setup.data, args.samples, args.seed), args.acc_bits,
                    args.constraint, args.overflow, run, args.rounds, log=print)
    save_model(model_out, alt.model)
    alt.config.for_model(model_record(model_out, alt.model)).save(out / f"{name}_config.json")
    text = (f"Model {model_provenance(path)}, BW_acc = {args.acc_bits}, constraint {args.constraint}, overflow "
            f"{args.overflow}: de Bruin's search, then {args.finetune} epochs of fine-tuning"
            f"{' (acc-aware)' if args.acc_aware else ''} to its config, then the search again on the fine-tuned "
            f"model, ..., at most {args.rounds} rounds. Accuracies: integer runs (val: the fine-tuning's "
            "selection split; test: the test split).")
    write_table(alt.rounds, name, out, title=f"Search and fine-tuning alternated: {name}", text=text)
    print("\n" + format_table(alt.rounds))
    print(f"{'converged' if alt.converged else 'stopped at the round limit or without a solution'}; wrote "
          f"{model_out}, {out / (name + '_config.json')} and {name}.csv/.md")
    return 0


def _run_tolerance(args) -> int:
    path, model, data, sim, ev, prof = _setup(args)
    stem = stem_for(path)
    out, record = Path(args.out), model_record(path, model)
    tols = sorted(set(TOLERANCES) | {args.tolerance})
    results, test_accs, float_test, paths = [], [], None, []
    start = None
    for t in tols:  # each looser tolerance starts from the tighter one's answer: bits never grow
        r = tolerance_search(ev, prof, t, start=start)
        start = r.config
        res = sim.simulate(data.x_test, r.config, data.y_test)
        float_test = res.float_accuracy
        results.append(r)
        test_accs.append(res.accuracy)
        paths.append(out / f"{stem}_tolerance{round(100 * t, 3):g}_config.json")
        r.config.for_model(record).save(paths[-1])
    df = tolerance_table(results, test_accs, float_test)
    name = f"{stem}_tolerance" if args.tolerance in TOLERANCES else \
        f"{stem}_tolerance{'-'.join(f'{round(100 * t, 3):g}' for t in tols)}"  # its rows: never another's table
    text = (f"Model {model_provenance(path)}; search on {len(ev.y)} validation samples, accuracy on the test split "
            "(a small validation split makes the test loss exceed the tolerance: the search fits "
            "its samples). Each tolerance's search starts from the next tighter one's result. "
            "Data formats are each layer's input I.F (sign bit in I); weight bits are total widths "
            "with the profiled integer bits. TR = traffic / traffic at 32 bits (weights read, "
            "activations read and written, per image).\n\n" + JUDD_LENET)
    write_table(df, name, out, title="Per-layer minimum precision (Judd et al. Table 2)", text=text)
    i = tols.index(args.tolerance)
    chosen = results[i]
    print(f"tolerance {100 * args.tolerance:g} %: validation accuracy {chosen.val_accuracy:.4f} "
          f"(float {chosen.float_val_accuracy:.4f}), TR {chosen.traffic_ratio:.3f}")
    print(format_table(chosen.config.table()))
    print("\n" + format_table(df))
    for t, p in zip(tols, paths):
        print(f"config for {100 * t:g} %: {p}{'  <- --tolerance ' + format(args.tolerance, 'g') if p == paths[i] else ''}")
    rel = test_accs[i] / float_test
    within = "within it" if 1 - rel <= args.tolerance else (f"beyond it, as the search fits its {len(ev.y)} "
                                                            f"validation images, not the {len(data.y_test)} test ones")
    print(f"test split: relative accuracy {rel:.4f}, a {100 * (1 - rel):.1f} % loss at a {100 * args.tolerance:g} % "
          f"tolerance ({within})")
    print(f"wrote {out / name}.csv and .md; next: fxpsim eval {path} --config {paths[i]}")
    return 0


def _run_acc_table(args) -> int:
    path, model, data = load_model_and_data(args)
    study = AccTableStudy(stem_for(path), model_provenance(path), seed=args.seed, progress=not args.no_progress)
    report = run_acc_table(study, model, calibration_set(model, data, args.samples, args.seed),
                           parallel_of(args), say=print)
    out, stem = Path(args.out), study.stem
    written = []
    for name, table, title, text in report.tables():
        written += write_table(table, name, out, title=title, text=text)
    written.append(save_figure(plot_solution_space(report.space, f"{stem}: solution space at BW_acc = "
                                                                 f"{study.space_bits}"), out / f"{stem}_solution_space.png"))
    written.append(save_figure(plot_acc_sweep(report.sweep, f"{stem}: normalized accuracy vs BW_acc"),
                               out / f"{stem}_acc_sweep.png"))
    for title, table in terminal_tables(report):
        print(f"\n{title}\n{format_table(table)}")
    print(f"\nwrote {len(written)} files in {out}: {', '.join(Path(p).name for p in written)}")
    return 0
