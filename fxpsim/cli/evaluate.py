"""``fxpsim eval [MODEL] [--config CFG]``: float accuracy, and fixed-point accuracy under a config."""

from __future__ import annotations

from pathlib import Path

from .common import add_model_args, load_model_and_data
from ..reports import format_table


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of a model on its test split, float and on a datapath config")
    add_model_args(p, optional=True)
    p.add_argument("--config", default=None,
                   help="per-layer datapath config (JSON written by `fxpsim search`): also run the "
                        "integer simulation and print its accuracy and per-layer overflow statistics")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import NetworkConfig
    from ..train.trainer import evaluate

    path, model, data = load_model_and_data(args)
    config = NetworkConfig.load(args.config) if args.config else None  # bad file: fail before work
    loss, acc = evaluate(model.network, model.preprocess.apply(data.x_test), data.y_test)
    print(f"{path}: {model.network.spec()} on {data.name} test split ({len(data.x_test)} images)")
    print(f"float accuracy {acc * 100:.2f} % (error {100 - acc * 100:.2f} %), loss {loss:.4f}")
    if config is None:
        return 0
    from ..simulate import Simulator

    result = Simulator(model, seed=args.seed).simulate(data.x_test, config, data.y_test)
    print(f"\nconfig {Path(args.config)}:")
    print(format_table(config.table()))
    print()
    print(format_table(result.stats_table()))
    print(f"fixed-point accuracy {result.accuracy * 100:.2f} % (error {100 - result.accuracy * 100:.2f} %), "
          f"normalized {result.accuracy / result.float_accuracy:.4f}")
    return 0
