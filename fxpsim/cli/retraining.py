"""CLI plumbing shared by ``fxpsim prune`` and ``fxpsim compress``: the retraining options.

Not a command: :func:`add_retrain_args` registers the options and
:func:`retraining_from` builds the frozen
:class:`fxpsim.experiments.prune.Retraining` from them.
"""

from __future__ import annotations

from . import arg_type
from .common import QUIET_HELP, epochs_type, penalty_type, progress_of, real, threads_type, whole
from ..experiments.prune import Retraining, parse_sparsity


def _layers(text: str) -> list[str]:
    return text.split(",")


sparsity_arg = arg_type(parse_sparsity)
"""argparse type of ``--target-sparsity`` / ``--prune``: ``0.92`` or ``fc1=0.92,fc2=0.91``."""


def add_retrain_args(p) -> None:
    """Options shared by ``prune`` and ``compress`` for retraining."""
    p.add_argument("--iterations", type=whole(1, 100, "--iterations", "prune-retrain rounds, 1 to 100 (Han et al. "
                                                                   "use 3 to 5)"),
                   default=3, help="prune-retrain rounds (default 3)")
    p.add_argument("--retrain-epochs", type=epochs_type("--retrain-epochs", lo=0), default=2,
                   help="epochs of retraining per round (0: none)")
    p.add_argument("--final-epochs", type=epochs_type("--final-epochs", lo=0), default=0,
                   help="extra retraining epochs after the last round (default 0)")
    p.add_argument("--lr-divisor", type=real(0, 1e6, "--lr-divisor", "retrain lr = original lr / divisor: above 0 "
                                                                 "(Han: 10 for LeNet), at most 1e6", lo_open=True),
                   default=10.0,
                   help="retrain lr = original lr / this (Han: 10 for LeNet)")
    p.add_argument("--weight-decay", type=penalty_type("--weight-decay"), default=1e-5,
                   help="L2 coefficient while retraining")
    p.add_argument("--layers", type=_layers, default=None,
                   help="layers to prune, e.g. fc1,fc2 (default: every Dense/Conv2D layer)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--threads", type=threads_type(), default=1, help="BLAS threads (default 1)")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def retraining_from(args) -> Retraining:
    """The frozen retraining settings of the parsed options."""
    return Retraining(iterations=args.iterations, retrain_epochs=args.retrain_epochs,
                      final_epochs=args.final_epochs, lr_divisor=args.lr_divisor,
                      weight_decay=args.weight_decay, layers=args.layers, data_dir=args.data_dir,
                      threads=args.threads, progress=progress_of(args)[0])
