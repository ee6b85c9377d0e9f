"""``fxpsim eval MODEL``: float accuracy of a model file on its dataset's test split."""

from __future__ import annotations

from ..modelfile import DEFAULT_MODEL


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of a trained model on its test split")
    p.add_argument("model", nargs="?", default=str(DEFAULT_MODEL),
                   help=f"model file (default {DEFAULT_MODEL.parent.name}/{DEFAULT_MODEL.name})")
    p.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files (or $FXPSIM_DATA)")
    # A later `--config CFG` (per-layer fixed-point datapath) plugs in here: parse it, run the
    # simulator on the same preprocessed test split and print its accuracy beside the float one.
    p.set_defaults(func=run)


def run(args) -> int:
    from ..modelfile import load_model
    from ..train.data import load_dataset
    from ..train.trainer import evaluate

    model = load_model(args.model)
    md = model.metadata
    name = md.get("dataset", "digits")
    split = md.get("split") or {}
    data = load_dataset(name, args.data_dir, **{k: split[k] for k in ("test_fraction", "split_seed") if k in split})
    x_test = model.preprocess.apply(data.x_test)
    loss, acc = evaluate(model.network, x_test, data.y_test)
    print(f"{args.model}: {model.network.spec()} on {name} test split ({len(data.x_test)} images)")
    print(f"float accuracy {acc * 100:.2f} % (error {100 - acc * 100:.2f} %), loss {loss:.4f}")
    return 0
