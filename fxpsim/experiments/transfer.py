"""Augmentation and transfer learning, measured (issue 19 item 4; lecture notes, "Data Augmentation"
and "Transfer Learning").

Two library functions, testable without argv:

- :func:`train_from` (what ``fxpsim train --from MODEL`` runs): a trained network, optionally with a
  new head (:func:`fxpsim.train.transfer.new_head`) and frozen layers (``TrainConfig.freeze``),
  trained on another data set; the model file records where it came from;
- :func:`run_transfer_study`:
  1. *augmentation*: a network (the digits CNN's architecture and hyper-parameters, from its model
     file) trained from scratch without and with augmentation (:mod:`fxpsim.train.augment`), each
     tested on the test split as it is, shifted and rotated (a seeded draw per test image);
  2. *transfer*: an MNIST-trained trunk (LeNet-5) on ``digits28`` (digits upsampled to 28x28 in the
     data loader) with a new last layer: the MNIST model as it is, a network of the same
     architecture trained from scratch, the new head alone trained, the new head with the fc layers
     fine-tuned, the whole network fine-tuned; on all training images and on a few per class.

    python -m fxpsim.experiments.transfer [--aug-model M] [--trunk M] [--data-dir DIR] [--out reports]

writes ``transfer.csv`` and ``transfer.md``. Every row is a float32 training on one BLAS thread:
it repeats bit for bit on one BLAS kernel, like every training report (a FULL reproduce entry).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ..errors import FxpsimError, check
from ..modelfile import Model, load_model
from ..tables import format_table, model_provenance, write_table
from ..train.augment import Augment, parse_augment, random_rotate, random_shift
from ..train.data import Dataset, load_dataset
from ..train.trainer import TrainConfig, evaluate, train
from ..train.transfer import clone, layer_groups, new_head, trainable

__all__ = ["TransferStudy", "main", "run_transfer_study", "train_from"]


def train_from(dataset: Dataset, base: Model, base_name: str, config: TrainConfig, head: str | None = None,
               *, progress: bool = False, log=None):
    """``(Model, History)``: ``base``'s network (copied), its layer ``head`` replaced by a fresh one for
    ``dataset``'s classes if given, trained on ``dataset`` with ``config`` (``config.freeze`` left
    alone). Preprocessing is fitted anew on ``dataset``'s training split."""
    network = clone(base.network) if head is None else new_head(base.network, head, dataset.n_classes,
                                                                 seed=config.seed, init=config.init)
    model, history = train(dataset, network.spec(), config, progress=progress, log=log, start=network)
    model.metadata["transfer"] = {"from": base_name, "from_dataset": base.metadata.get("dataset"),
                                  "new_head": head, "freeze": list(config.freeze)}
    return model, history


@dataclass(frozen=True)
class TransferStudy:
    """What :func:`run_transfer_study` runs. ``aug_model``: the model whose architecture and training
    settings part 1 retrains with each of ``augments``; ``trunk``: the MNIST model of part 2, trained
    ``epochs`` epochs with ``lr`` on ``digits28``, on all training images and ``few`` per class."""

    aug_model: str = "models/digits-cnn.npz"
    augments: tuple[str, ...] = ("none", "shift=1", "shift=1,rotate=10")
    test_shift: int = 1
    test_rotate: float = 10.0
    trunk: str = "models/lenet5-mnist.npz"
    head: str = "fc3"
    epochs: int = 20
    lr: float = 1e-3
    few: int = 10
    seed: int = 0


def _perturbed(x: np.ndarray, augment: Augment, seed: int) -> np.ndarray:
    """The test images each shifted or rotated by a seeded draw (the same for every model)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7465]))
    out = random_shift(x, augment.shift, rng) if augment.shift else x
    return random_rotate(out, augment.rotate, rng) if augment.rotate else out


def _errors(model: Model, data: Dataset, study: TransferStudy) -> dict:
    x = data.x_test.astype(np.float32)
    sets = {"test_error_pct": x,
            "shifted_error_pct": _perturbed(x, Augment(shift=study.test_shift), study.seed),
            "rotated_error_pct": _perturbed(x, Augment(rotate=study.test_rotate), study.seed)}
    with threadpool_limits(limits=1, user_api="blas"):
        return {k: 100 * (1 - evaluate(model.network, model.preprocess.apply(v), data.y_test)[1])
                for k, v in sets.items()}


def _few_per_class(data: Dataset, k: int, seed: int) -> Dataset:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6665]))
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(data.y_train == c))[:k]
                                   for c in np.unique(data.y_train)]))
    return replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


def _row(part, variant, model: Model, data: Dataset, study, n_params, epochs, **extra) -> dict:
    md = model.metadata
    return {"part": part, "variant": variant, **extra, "n_train": int(md.get("n_train", 0)),
            "epochs": epochs, "trained_params": int(n_params), **_errors(model, data, study)}


def run_transfer_study(study: TransferStudy, data_dir=None, log=None) -> pd.DataFrame:
    """One row per trained (or reused) model: part, variant, augmentation/frozen layers, training
    images, trained parameters, test error (%) on the test split as it is, shifted, rotated."""
    say = log or (lambda *_: None)
    rows = []
    base = load_model(study.aug_model)
    md = base.metadata
    digits = load_dataset(md["dataset"], data_dir, **(md.get("split") or {}))
    keys = ("optimizer", "lr", "epochs", "batch_size", "seed", "momentum", "schedule", "decay", "step_every",
            "step_factor", "weight_decay", "l1", "val_fraction", "init", "preprocess")
    settings = {k: md[k] for k in keys if k in md}
    for text in study.augments:
        aug = parse_augment(text)
        config = TrainConfig(**settings, shift=aug.shift, rotate=aug.rotate, threads=1)
        say(f"augmentation {text}: training {md['arch']} on {digits.name}")
        model, _ = train(digits, md["arch"], config, progress=False)
        rows.append(_row("augmentation", f"scratch, augment {text}", model, digits, study,
                         sum(p.size for _, p, _ in trainable(model.network)), config.epochs, augment=text,
                         frozen=""))
    trunk = load_model(study.trunk)
    check(trunk.metadata.get("dataset") == "mnist", f"{study.trunk} is not an MNIST model: give an MNIST trunk")
    names = [n for n in layer_groups(trunk.network) if n != study.head]
    data28 = load_dataset("digits28", data_dir, **(md.get("split") or {}))
    rows.append(_row("transfer", "MNIST model as it is (no training)", trunk, data28, study, 0, 0,
                     augment="none", frozen="all"))
    rows[-1]["n_train"] = 0
    fc = [n for n in names if n.startswith("fc")]
    conv = [n for n in names if n.startswith("conv")]
    variants = (("scratch", None, ()), ("new head only", study.head, tuple(names)),
                (f"new head, {','.join(fc + [study.head])} fine-tuned", study.head, tuple(conv)),
                ("new head, all fine-tuned", study.head, ()))
    config0 = TrainConfig(lr=study.lr, epochs=study.epochs, batch_size=32, seed=study.seed, threads=1)
    for subset in ("all", f"{study.few} per class"):
        data = data28 if subset == "all" else _few_per_class(data28, study.few, study.seed)
        for label, head, freeze in variants:
            config = replace(config0, freeze=freeze)
            say(f"transfer {label} on {subset} digits28 images")
            if head is None:
                model, _ = train(data, trunk.metadata["arch"], config, progress=False)
            else:
                model, _ = train_from(data, trunk, Path(study.trunk).name, config, head)
            rows.append(_row("transfer", f"{label} ({subset})", model, data28, study,
                             sum(p.size for _, p, _ in trainable(model.network, freeze)), config.epochs,
                             augment="none", frozen=",".join(freeze)))
    return pd.DataFrame(rows)


def _title_text(study: TransferStudy) -> tuple[str, str]:
    title = "Augmentation and transfer learning (issue 19 item 4)"
    text = (f"Part augmentation: {model_provenance(study.aug_model)}'s architecture and training settings, "
            "retrained from scratch per augmentation (shift whole pixels, rotate degrees, training batches "
            f"only). Test error on the test split as it is, each image shifted by up to {study.test_shift} "
            f"pixel, and rotated by up to {study.test_rotate:g} degrees (one seeded draw per image). "
            f"Part transfer: trunk {model_provenance(study.trunk)} on digits28 (the digits upsampled to 20x20, "
            f"0..255, centred in 28x28 by the data loader), the same test split; {study.head} replaced by a "
            f"new head; Adam lr {study.lr:g}, {study.epochs} epochs, batch 32, seed {study.seed}, one BLAS "
            "thread, the best validation epoch kept. trained_params: parameters the optimizer updates. "
            "Measured once, float32; not tuned.")
    return title, text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fxpsim.experiments.transfer", description=__doc__.splitlines()[0])
    p.add_argument("--aug-model", default=TransferStudy.aug_model, help="model whose training part 1 repeats")
    p.add_argument("--trunk", default=TransferStudy.trunk, help="MNIST-trained model of part 2")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--out", default="reports", help="report folder (default reports/)")
    p.add_argument("--epochs", type=int, default=TransferStudy.epochs, help="transfer trainings' epochs")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        study = TransferStudy(aug_model=args.aug_model, trunk=args.trunk, epochs=args.epochs)
        table = run_transfer_study(study, args.data_dir, log=None if args.quiet else print)
    except (FxpsimError, OSError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    title, text = _title_text(study)
    for f in write_table(table, "transfer", Path(args.out), title=title, text=text):
        print(f"wrote {f}")
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
