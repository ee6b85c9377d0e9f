"""``fxpsim prune``: iterative magnitude pruning with retraining (Han et al., NIPS 2015).

``fxpsim prune MODEL --target-sparsity 0.92 | --quality 1.5 [--iterations N
--retrain-epochs E] --out PRUNED.npz`` writes a pruned model file (pruned
weights are exact zeros, so the masks are recoverable; the metadata records
the sparsity per layer and each round), a per-round report and, with
``--sensitivity``, accuracy vs pruning ratio per layer (table + PNG). The
study is :func:`fxpsim.experiments.prune.run_prune`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .common import check_out_dir, check_out_file, progress_of, real
from .retraining import add_retrain_args, retraining_from, sparsity_arg
from ..experiments.prune import SENSITIVITY_TEXT, PruneStudy, error_warning, plot_sensitivity, run_prune
from ..modelfile import save_model
from ..tables import REPORTS_DIR, format_table, save_figure, write_table


MAX_QUALITY = 100.0
"""Largest quality: the threshold is quality x std of a layer's kept weights, and beyond ~10 standard
deviations no weight of a trained layer is left (Han et al. use 0.5 to 3)."""


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="iterative magnitude pruning with retraining (Han et al. 2015)")
    p.add_argument("model", help="model file (.npz) written by `fxpsim train`")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--target-sparsity", type=sparsity_arg,
                      help="fraction of weights to remove, e.g. 0.92, or per layer fc1=0.92,fc2=0.91")
    mode.add_argument("--quality", type=real(0, MAX_QUALITY, "--quality", "threshold = quality x std of each "
                                              "layer's kept weights: above 0, and beyond ~10 every weight goes "
                                              "(Han et al. use 0.5 to 3), e.g. 1.5", lo_open=True),
                      help="final quality q: threshold = q x std of each layer's kept weights")
    add_retrain_args(p)
    p.add_argument("--out", required=True, help="pruned model file to write (.npz)")
    p.add_argument("--reports", default=str(REPORTS_DIR), help="folder for reports (default reports/)")
    p.add_argument("--sensitivity", action="store_true",
                   help="also report accuracy vs pruning ratio per layer (no retraining), table + PNG")
    p.set_defaults(func=run)


def run(args) -> int:
    """Build the study from the arguments, run it, write the pruned model and the reports."""
    study = PruneStudy(args.model, args.out, target_sparsity=args.target_sparsity, quality=args.quality,
                       retraining=retraining_from(args), sensitivity=args.sensitivity)
    check_out_file(study.out)
    check_out_dir(args.reports, "--reports")
    t0 = time.perf_counter()
    report = run_prune(study, log=progress_of(args)[1])
    stem, source = study.out.stem, report.source.stem
    if report.sensitivity is not None:
        write_table(report.sensitivity, f"{source}-sensitivity", args.reports,
                    title=f"Pruning sensitivity of {source}", text=SENSITIVITY_TEXT)
        save_figure(plot_sensitivity(report.sensitivity, source), Path(args.reports) / f"{source}-sensitivity.png")
        print(format_table(report.sensitivity.pivot(index="sparsity", columns="layer", values="accuracy")
                           .reset_index(), floatfmt=".4f"))
    save_model(study.out, report.model)
    write_table(report.rounds, f"{stem}-prune", args.reports, title=report.title, text=report.text)
    print(format_table(report.rounds, floatfmt=".4f"))
    print(f"{report.source.name}: {report.summary}; saved {study.out} in {time.perf_counter() - t0:.0f} s")
    warning = error_warning(report, study)
    if warning is not None:
        print(warning, file=sys.stderr)
    return 0
