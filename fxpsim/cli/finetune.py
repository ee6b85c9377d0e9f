"""``fxpsim finetune MODEL --config CFG --epochs N --out M.npz [--acc-aware]``: fine-tune a model to a
datapath config (fake quantization in the forward pass, the straight-through estimator in the
backward; :mod:`fxpsim.train.qat`) and report the integer run of the test split under CFG before
and after, as ``fxpsim eval M.npz --config CFG`` measures it. ``--acc-aware`` projects every output
channel's integer weights onto the A2Q bound (Colbert et al. 2023) after each step, so the model
cannot overflow its accumulators."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import NetworkConfig
from ..errors import check
from ..tables import format_table
from . import arg_type
from .common import LR_TYPE, QUIET_HELP, check_made_for, int_in, model_record, progress_of, seed_type


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model to a datapath config (quantization-aware, "
                                        "--acc-aware: A2Q accumulator bound)")
    p.add_argument("model", help="model file (.npz) written by `fxpsim train`")
    p.add_argument("--force", action="store_true",
                   help="fine-tune to a --config made for another model (its recorded weights or layers differ)")
    p.add_argument("--config", required=True,
                   help="per-layer datapath config (JSON written by `fxpsim search`) the forward pass runs")
    p.add_argument("--epochs", type=arg_type(int_in(1, None, "--epochs", "fine-tuning runs at least one epoch, "
                                                                       "e.g. --epochs 3")), default=3,
                   help="passes over the training split")
    p.add_argument("--out", required=True, help="fine-tuned model file to write (.npz)")
    p.add_argument("--acc-aware", action="store_true",
                   help="project each output channel's integer weights onto the A2Q L1 bound for the config's "
                        "BW_acc and input format after every step: no input can overflow the accumulator")
    p.add_argument("--ideal-acc", action="store_true",
                   help="train with unbounded accumulators (default: the config's wrap/clip accumulator is "
                        "simulated, so overflow is seen in training)")
    p.add_argument("--seed", type=seed_type(), default=0, help="seed of the mini-batch order (default 0)")
    p.add_argument("--lr", type=LR_TYPE, default=None,
                   help="learning rate (default: the model's training rate / 10, as Han et al. retrain)")
    p.add_argument("--batch-size", type=arg_type(int_in(1, None, "--batch-size", "e.g. --batch-size 64")),
                   default=None, help="mini-batch size (default: the model's)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--threads", type=arg_type(int_in(1, None, "--threads", "e.g. --threads 1")), default=1,
                   help="BLAS and Numba threads (default 1: reproducible)")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.prune import Retraining, load_for_retraining
    from ..experiments.qat import finetune_model
    from ..modelfile import check_writable, load_model, save_model
    from ..simulate import Simulator
    from ..train.qat import FineTune

    run = FineTune(epochs=args.epochs, lr=args.lr, seed=args.seed, acc_aware=args.acc_aware,
                   simulate_acc=not args.ideal_acc, batch_size=args.batch_size, threads=args.threads,
                   progress=progress_of(args)[0])
    config = NetworkConfig.load(args.config)
    out = Path(args.out)
    check(out.suffix == ".npz", f"--out {out} must end in .npz (a model file)")
    out_config = out.with_name(f"{out.stem}_config.json")
    check_writable(out)
    check_writable(out_config)
    start = load_model(args.model)
    check_made_for(config, args.model, start, args)  # a config of another model fails before the data
    Simulator(start).check_config(config)
    setup = load_for_retraining(args.model, Retraining(data_dir=args.data_dir, threads=args.threads,
                                                       progress=progress_of(args)[0]))
    print(f"fine-tuning {setup.path} to {args.config} for {run.epochs} epochs"
          f"{' (accumulator-aware: A2Q projection)' if run.acc_aware else ''}"
          f"{', unbounded accumulators in training' if args.ideal_acc else ''}")
    outcome = finetune_model(setup, config, run, log=progress_of(args)[1])
    save_model(out, outcome.result.model)
    config.for_model(model_record(out, outcome.result.model)).save(out_config)  # the same formats, bound to M
    res = outcome.result
    print(f"\nkept epoch {res.kept_epoch} of {len(res.history.epochs)} (0: the starting weights); validation "
          f"accuracy of the integer run {res.start_val_accuracy:.4f} -> {res.val_accuracy:.4f}"
          + (f"; {res.rescaled_channels} channel rescalings by the A2Q projection" if run.acc_aware else ""))
    print(f"\ntest split ({len(outcome.after.predictions)} images) under {args.config}:")
    print(format_table(outcome.summary()))
    print("\naccumulator extremes over every input of the data format (the fine-tuned integer weights):")
    print(format_table(pd.DataFrame(outcome.bounds)))
    print(f"saved {out} and {out_config} (the same config, made for it: `fxpsim eval {out} --config "
          f"{out_config}` runs it)")
    return 0
