"""Compare the optimizers of Algorithms 8.1-8.7 on one network, one seed, one dataset.

Every optimizer trains the same architecture from the same initial weights
on the same mini-batch sequence (same seed). Its learning rate is chosen
from ``base_lr * {0.3, 1, 3}`` by the best validation accuracy, ties broken
by the lower validation loss (a coarse search, as the lecture notes'
"coarse-to-fine cross-validation"; 20 % of the training split); the
table reports, for the chosen rate, the test accuracy of the best
validation epoch, that epoch, and the first epoch whose validation
accuracy reaches ``target`` (default 0.97).

    python -m fxpsim.train.compare [--epochs 30 --arch ... --seed 0 --out reports]

writes ``optimizers.csv``, ``optimizers.md`` and ``optimizers.png`` (training
loss and validation accuracy per epoch) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from ..graph.build import build_network
from ..tables import format_table, markdown_table, new_figure, save_figure, to_csv, write_text_atomic
from .data import Preprocess, load_dataset, train_val_split
from .optim import OPTIMIZERS
from .trainer import TrainConfig, evaluate, fit

#: lecture-notes starting points (Adam: "learning_rate = 1e-3 ... a great starting point")
BASE_LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.03, "rmsprop": 1e-3,
           "rmsprop-nesterov": 3e-4, "adam": 1e-3}
LR_FACTORS = (0.3, 1.0, 3.0)
DEFAULT_ARCH = "fc128-relu-fc64-relu-fc10"
VAL_FRACTION = 0.2


def compare_optimizers(dataset_name: str = "digits", arch: str = DEFAULT_ARCH, *, epochs: int = 30,
                       batch_size: int = 32, seed: int = 0, target: float = 0.97, data_dir=None,
                       optimizers=OPTIMIZERS, log=None) -> tuple[pd.DataFrame, dict]:
    """``(table, curves)``: one row per optimizer, and its per-epoch history."""
    ds = load_dataset(dataset_name, data_dir)
    x_tr, y_tr, x_val, y_val = train_val_split(ds.x_train, ds.y_train, VAL_FRACTION, seed)
    prep = Preprocess.fit(x_tr)
    x_tr, x_val, x_test = prep.apply(x_tr), prep.apply(x_val), prep.apply(ds.x_test)
    rows, curves = [], {}
    for name in optimizers:
        best = None
        for factor in LR_FACTORS:
            lr = BASE_LR[name] * factor
            net = build_network(arch, ds.input_shape, ds.n_classes, seed=seed)
            cfg = TrainConfig(optimizer=name, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
            try:
                hist = fit(net, x_tr, y_tr, cfg, x_val, y_val, progress=False)
            except ValueError:  # diverged at this rate: not a candidate
                continue
            key = (max(hist.column("val_accuracy")), -min(hist.column("val_loss")))
            if best is None or key > best[0]:
                best = (key, lr, hist, net)
        if best is None:
            continue
        (val_best, _), lr, hist, net = best
        val_acc = hist.column("val_accuracy")
        reach = next((e + 1 for e, a in enumerate(val_acc) if a >= target), None)
        rows.append({
            "optimizer": name, "lr": lr, "test_accuracy": evaluate(net, x_test, ds.y_test)[1],
            "best_val_accuracy": val_best, "best_epoch": hist.best_epoch,
            f"epochs_to_val_{target:g}": reach, "final_train_loss": hist.column("loss")[-1],
        })
        curves[name] = hist
        if log:
            log(f"{name:<17} lr {lr:<8g} test {rows[-1]['test_accuracy']:.4f} best epoch {hist.best_epoch}")
    return pd.DataFrame(rows), curves


def plot_curves(curves: dict, path: Path, title: str) -> None:
    """Training loss (log scale) and validation accuracy per epoch, one line per optimizer."""
    fig, (ax_loss, ax_acc) = new_figure(1, 2, figsize=(11, 4.2))
    for name, hist in curves.items():
        epochs = hist.column("epoch")
        ax_loss.plot(epochs, hist.column("loss"), label=name)
        ax_acc.plot(epochs, hist.column("val_accuracy"), label=name)
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss (cross-entropy)")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0.85, 1.0))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_acc.legend(loc="lower right", fontsize=8, title="optimizer", title_fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def _without_out(argv) -> list[str]:
    """The command's arguments without ``--out DIR``: the report quotes no folder of this machine."""
    argv, keep, skip = list(argv), [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            keep.append(a)
    return keep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--arch", default=DEFAULT_ARCH)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--out", default="reports")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(limits=1, user_api="blas"):
        table, curves = compare_optimizers(args.dataset, args.arch, epochs=args.epochs, batch_size=args.batch_size,
                                           seed=args.seed, target=args.target, data_dir=args.data_dir, log=print)
    title = f"{args.arch} on {args.dataset}, seed {args.seed}, batch {args.batch_size}, {args.epochs} epochs"
    write_text_atomic(out / "optimizers.csv", to_csv(table))
    plot_curves(curves, out / "optimizers.png", title)
    md = [
        "# Optimizers compared (lecture notes, Algorithms 8.1-8.7)",
        "",
        f"{title}; the same initial weights and mini-batch order for every optimizer.",
        f"Learning rate: the best of base x {{{', '.join(f'{f:g}' for f in LR_FACTORS)}}} "
        f"(base: {', '.join(f'{k} {v:g}' for k, v in BASE_LR.items())})",
        f"by validation accuracy on {VAL_FRACTION:.0%} of the training split, ties broken by validation loss.",
        "`test_accuracy` is that of the best validation epoch's weights (early-stopping selection);",
        "`epochs_to_val_*` is the first epoch whose validation accuracy reaches the target.",
        "Momentum with alpha = 0.9 and rate eps takes steps like SGD with rate eps / (1 - alpha) once the",
        "velocity settles, so (Nesterov) momentum at 0.01 and SGD at 0.1 trace nearly the same curve.",
        "",
        "Regenerate with:",
        "",
        "```",
        " ".join(["python -m fxpsim.train.compare", *_without_out(sys.argv[1:] if argv is None else argv)]),
        "```",
        "",
        markdown_table(table),
        "",
        "![training curves](optimizers.png)",
        "",
    ]
    write_text_atomic(out / "optimizers.md", "\n".join(md))
    print(format_table(table))
    print(f"wrote {out / 'optimizers.md'}, {out / 'optimizers.csv'}, {out / 'optimizers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
