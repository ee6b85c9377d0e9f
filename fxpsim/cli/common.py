"""What several commands share: the model argument, its data and splits, the output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import check
from ..modelfile import DEFAULT_MODEL
from ..reports import REPORTS_DIR


def add_model_args(p, optional: bool = False) -> None:
    """MODEL (optional: the shipped default), --data-dir, --out, --samples, --seed."""
    if optional:
        p.add_argument("model", nargs="?", default=None,
                       help=f"model file (.npz); default: the shipped models/{DEFAULT_MODEL.name}")
    else:
        p.add_argument("model", help="model file (.npz) written by `fxpsim train`")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--out", default=str(REPORTS_DIR), help="folder for reports (default: reports/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")


def model_path(name: str | None) -> Path:
    """The model file named on the command line, or the shipped default."""
    if name is None:
        check(DEFAULT_MODEL.exists(), f"the default model {DEFAULT_MODEL} is missing: give a MODEL file "
                                      "(train one with `fxpsim train --arch cnn-small --dataset digits`)")
        return DEFAULT_MODEL
    return Path(name)


def load_model_and_data(args):
    """(model, dataset) for the command's MODEL, its dataset loaded as it was trained."""
    from ..modelfile import load_model
    from ..train.data import load_dataset

    path = model_path(getattr(args, "model", None))
    model = load_model(path)
    meta = model.metadata
    split = meta.get("split") or {}
    kwargs = {k: split[k] for k in ("test_fraction", "split_seed") if k in split}
    check("dataset" in meta, f"{path} does not say which data set it was trained on (no \"dataset\" in its "
                             "metadata): re-save it with fxpsim train, or give the model metadata a dataset")
    data = load_dataset(meta["dataset"], getattr(args, "data_dir", None), **kwargs)
    return path, model, data


def calibration_set(model, data, samples: int | None, seed: int):
    """A seeded sample of the training split's validation part (never the test split)."""
    from ..train.data import train_val_split

    frac = float(model.metadata.get("val_fraction") or 0.1)
    _, _, x_val, y_val = train_val_split(data.x_train, data.y_train, frac,
                                         int(model.metadata.get("seed", 0)))
    if samples is not None:
        check(samples >= 1, f"--samples {samples} must be at least 1")
        if samples < len(y_val):
            idx = np.random.default_rng(seed).choice(len(y_val), samples, replace=False)
            idx.sort()
            x_val, y_val = x_val[idx], y_val[idx]
    return x_val, y_val


def stem_for(path: Path) -> str:
    """The report name stem of a model file: ``models/lenet5-mnist.npz`` -> ``lenet5-mnist``."""
    return Path(path).stem


def int_in(lo: int, hi: int | None, what: str, hint: str):
    """An argparse type: a whole number in [lo, hi] (hi None: no upper bound), else one line."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        ok = v is not None and v >= lo and (hi is None or v <= hi)
        rule = f"is outside [{lo}, {hi}]" if hi is not None else f"is not a whole number >= {lo}"
        check(ok, f"{what} {text!r} {rule}: {hint}")
        return v

    parse.__name__ = what
    return parse
