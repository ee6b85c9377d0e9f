"""``fxpsim prune``: iterative magnitude pruning with retraining (Han et al., NIPS 2015).

``fxpsim prune MODEL --target-sparsity 0.92 | --quality 1.5 [--iterations N
--retrain-epochs E] --out PRUNED.npz`` writes a pruned model file (pruned
weights are exact zeros, so the masks are recoverable; the metadata records
the sparsity per layer and each round), a per-round report and, with
``--sensitivity``, accuracy vs pruning ratio per layer (table + PNG).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from . import arg_type
from ..errors import FxpsimError, check
from ..reports import REPORTS_DIR, format_table, save_figure, write_table

SENSITIVITY_RATIOS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


def parse_sparsity(text: str):
    """``0.92`` (all pruned layers together) or ``fc1=0.92,fc2=0.91,fc3=0.74`` (per layer)."""
    from ..sparse.prune import check_sparsity

    text = text.strip()
    if "=" not in text:
        return check_sparsity(_float(text, "--target-sparsity"))
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        check(bool(name.strip()) and bool(value.strip()),
              f"--target-sparsity part {part!r} is not LAYER=S: e.g. fc1=0.92,fc2=0.91")
        out[name.strip().lower()] = check_sparsity(_float(value, f"--target-sparsity {name.strip()}"))
    return out


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FxpsimError(f"{what} {text!r} is not a number") from None


def _quality(text: str) -> float:
    q = _float(text, "--quality")
    check(q > 0 and q < 1e3, f"--quality {q} must be > 0 (threshold = quality x std; Han's range ~0.5-3)")
    return q


def _layers(text: str) -> list[str]:
    return [t for t in text.split(",")]


def add_retrain_args(p) -> None:
    """Options shared by ``prune`` and ``compress`` for retraining."""
    p.add_argument("--iterations", type=int, default=3, help="prune-retrain rounds (default 3)")
    p.add_argument("--retrain-epochs", type=int, default=2, help="epochs of retraining per round (0: none)")
    p.add_argument("--final-epochs", type=int, default=0,
                   help="extra retraining epochs after the last round (default 0)")
    p.add_argument("--lr-divisor", type=float, default=10.0,
                   help="retrain lr = original lr / this (Han: 10 for LeNet)")
    p.add_argument("--weight-decay", type=float, default=1e-5, help="L2 coefficient while retraining")
    p.add_argument("--layers", type=_layers, default=None,
                   help="layers to prune, e.g. fc1,fc2 (default: every Dense/Conv2D layer)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="iterative magnitude pruning with retraining (Han et al. 2015)")
    p.add_argument("model", help="model file (.npz) written by `fxpsim train`")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--target-sparsity", type=arg_type(parse_sparsity),
                      help="fraction of weights to remove, e.g. 0.92, or per layer fc1=0.92,fc2=0.91")
    mode.add_argument("--quality", type=arg_type(_quality),
                      help="final quality q: threshold = q x std of each layer's kept weights")
    add_retrain_args(p)
    p.add_argument("--out", required=True, help="pruned model file to write (.npz)")
    p.add_argument("--reports", default=str(REPORTS_DIR), help="folder for reports (default reports/)")
    p.add_argument("--sensitivity", action="store_true",
                   help="also report accuracy vs pruning ratio per layer (no retraining), table + PNG")
    p.set_defaults(func=run)


def check_retrain_args(args) -> None:
    check(args.iterations >= 1, f"--iterations {args.iterations} must be >= 1")
    check(args.retrain_epochs >= 0, f"--retrain-epochs {args.retrain_epochs} must be >= 0")
    check(args.final_epochs >= 0, f"--final-epochs {args.final_epochs} must be >= 0")
    check(args.lr_divisor > 0, f"--lr-divisor {args.lr_divisor} must be > 0")
    check(args.weight_decay >= 0, f"--weight-decay {args.weight_decay} must be >= 0")
    check(args.threads >= 1, f"--threads {args.threads} must be >= 1")


def load_for_retraining(args):
    """(path, model, data, layers, splits, base TrainConfig) for a MODEL argument."""
    from ..modelfile import load_model
    from ..sparse.retrain import select_layers
    from ..train.data import load_dataset, train_val_split
    from ..train.trainer import TrainConfig

    path = Path(args.model)
    model = load_model(path)
    layers = select_layers(model.network, args.layers)
    md = model.metadata
    check("dataset" in md, f"{path} has no dataset in its metadata: retrain it with `fxpsim train`")
    split = md.get("split") or {}
    kwargs = {k: split[k] for k in ("test_fraction", "split_seed") if k in split}
    data = load_dataset(md["dataset"], args.data_dir, **kwargs)
    frac = float(md.get("val_fraction") or 0.1)
    seed = int(md.get("seed", 0))
    x_tr, y_tr, x_val, y_val = train_val_split(data.x_train, data.y_train, frac, seed)
    prep = model.preprocess
    splits = (prep.apply(x_tr), y_tr, prep.apply(x_val), y_val, prep.apply(data.x_test), data.y_test)
    base = TrainConfig(optimizer=md.get("optimizer", "adam"), lr=float(md.get("lr", 1e-3)),
                       batch_size=int(md.get("batch_size", 64)), momentum=float(md.get("momentum", 0.9)),
                       seed=seed, shift=int(md.get("shift", 0) or 0), threads=args.threads, val_fraction=frac)
    return path, model, data, layers, splits, base


def test_accuracy(network, x, y, threads: int = 1) -> float:
    from threadpoolctl import threadpool_limits

    from ..train.trainer import evaluate

    with threadpool_limits(limits=threads, user_api="blas"):
        return evaluate(network, x, y)[1]


def sensitivity_report(network, layers, x_val, y_val, stem: str, outdir, threads: int = 1):
    """Accuracy vs pruning ratio per layer: table and PNG under ``outdir``; returns the DataFrame."""
    from threadpoolctl import threadpool_limits

    from ..reports import new_figure
    from ..sparse.retrain import sensitivity

    with threadpool_limits(limits=threads, user_api="blas"):
        df = pd.DataFrame(sensitivity(network, layers, x_val, y_val, SENSITIVITY_RATIOS))
    write_table(df, f"{stem}-sensitivity", outdir, title=f"Pruning sensitivity of {stem}",
                text="Accuracy on the validation split when one layer alone is pruned by magnitude to each "
                     "ratio, without retraining (Han et al. 2015, Fig. 5).")
    fig, ax = new_figure(figsize=(6, 4))
    for name, g in df.groupby("layer", sort=False):
        ax.plot(100 * g["sparsity"], 100 * g["accuracy"], marker="o", label=name)
    ax.set_xlabel("parameters pruned away (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{stem}: sensitivity to pruning (no retraining)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, Path(outdir) / f"{stem}-sensitivity.png")
    return df


def prune_model(args, path, model, layers, splits, base, log=None):
    """Run the iterative pruning of ``args`` on ``model`` in place; returns (masks, records, config)."""
    from ..sparse.retrain import PruneConfig, iterative_prune

    target = args.target_sparsity
    if isinstance(target, dict):
        missing = [n for n in target if n not in layers]
        check(not missing, f"--target-sparsity names layer(s) {', '.join(missing)} not pruned / not in the "
                           f"model: its layers are {', '.join(layers)}")
    cfg = PruneConfig(target_sparsity=target, quality=getattr(args, "quality", None),
                      iterations=args.iterations, retrain_epochs=args.retrain_epochs,
                      lr_divisor=args.lr_divisor, weight_decay=args.weight_decay,
                      final_epochs=args.final_epochs)
    x_tr, y_tr, x_val, y_val, _, _ = splits
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads, user_api="blas"):
        masks, records = iterative_prune(model.network, layers, cfg, base, x_tr, y_tr, x_val, y_val,
                                         progress=not args.quiet, log=log)
    return masks, records, cfg


def run(args) -> int:
    from ..modelfile import Model, check_writable, save_model
    from ..sparse.prune import mask_sparsity
    from ..sparse.retrain import sparsity_of

    check_retrain_args(args)
    out = Path(args.out)
    check(out.suffix == ".npz", f"--out {out} must end in .npz (a model file)")
    check_writable(out)
    t0 = time.perf_counter()
    path, model, data, layers, splits, base = load_for_retraining(args)
    x_tr, y_tr, x_val, y_val, x_te, y_te = splits
    acc_before = test_accuracy(model.network, x_te, y_te, args.threads)
    stem = out.stem
    if args.sensitivity:
        sdf = sensitivity_report(model.network, layers, x_val, y_val, path.stem, args.reports, args.threads)
        print(format_table(sdf.pivot(index="sparsity", columns="layer", values="accuracy")
                           .reset_index(), floatfmt=".4f"))
    masks, records, cfg = prune_model(args, path, model, layers, splits, base,
                                      log=None if not args.quiet else print)
    acc_after = test_accuracy(model.network, x_te, y_te, args.threads)
    per_layer = {n: round(1 - mask_sparsity(m), 6) for n, m in masks.items()}
    md = dict(model.metadata)
    md.update({
        "test_accuracy_before_pruning": acc_before,
        "test_accuracy": acc_after,
        "pruned": {"method": "magnitude, threshold = quality x std (Han et al. 2015)",
                   "source": str(path), "layers": list(layers), "sparsity": sparsity_of(masks),
                   "kept_fraction": per_layer,
                   "target_sparsity": cfg.target_sparsity, "quality": cfg.quality,
                   "iterations": cfg.iterations, "retrain_epochs": cfg.retrain_epochs,
                   "final_epochs": cfg.final_epochs,
                   "lr_divisor": cfg.lr_divisor, "weight_decay": cfg.weight_decay,
                   "rounds": records, "seconds": round(time.perf_counter() - t0, 1)},
    })
    save_model(out, Model(model.network, model.preprocess, md))
    df = pd.DataFrame(records)
    write_table(df, f"{stem}-prune", args.reports, title=f"Iterative pruning of {path.name} -> {out.name}",
                text=f"Test error {100 * (1 - acc_before):.2f} % -> {100 * (1 - acc_after):.2f} %, "
                     f"weights kept {100 * (1 - sparsity_of(masks)):.2f} % "
                     f"({', '.join(f'{n} {100 * k:.1f} %' for n, k in per_layer.items())}).")
    print(format_table(df, floatfmt=".4f"))
    print(f"{path.name}: test error {100 * (1 - acc_before):.2f} % -> {100 * (1 - acc_after):.2f} % with "
          f"{100 * (1 - sparsity_of(masks)):.2f} % of the weights kept "
          f"({', '.join(f'{n} {100 * k:.1f} %' for n, k in per_layer.items())}); saved {out} "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0
