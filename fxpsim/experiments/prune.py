"""The pruning study (Han et al., NIPS 2015): sensitivity per layer, then iterative pruning with retraining.

What ``fxpsim prune`` reports, as a library function testable without argv:
:func:`run_prune` takes a frozen :class:`PruneStudy` (the model file, the
target sparsity or quality, the :class:`Retraining` settings) and returns a
:class:`PruneReport` (the pruned model with its metadata, the per-round
table, the optional sensitivity table, the Markdown text) that the caller
writes. The pieces ``fxpsim compress`` shares live here too: loading a
model with its training splits (:func:`load_for_retraining`), the pruning
of a loaded model (:func:`prune_network`) and the test accuracy under a
BLAS thread limit (:func:`float_accuracy`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from ..compress.prune import check_sparsity, mask_sparsity
from ..compress.retrain import PruneConfig, iterative_prune, select_layers, sensitivity, sparsity_of
from ..errors import FxpsimError, check
from ..graph import Network
from ..modelfile import Model, load_model
from ..tables import new_figure
from ..train.data import Dataset, load_dataset, train_val_split
from ..train.trainer import TrainConfig, evaluate

__all__ = ["SENSITIVITY_RATIOS", "SENSITIVITY_TEXT", "WARN_POINTS", "PruneReport", "PruneStudy", "RetrainSetup",
           "Retraining", "check_targets", "error_warning", "float_accuracy", "load_for_retraining", "parse_sparsity", "plot_sensitivity",
           "prune_network", "run_prune", "sensitivity_table"]

SENSITIVITY_RATIOS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
"""Pruning ratios of the sensitivity table (Han et al. 2015, Fig. 5)."""
SENSITIVITY_TEXT = ("Accuracy on the validation split when one layer alone is pruned by magnitude to each "
                    "ratio, without retraining (Han et al. 2015, Fig. 5).")


def parse_sparsity(text: str) -> float | dict[str, float]:
    """``0.92`` (all pruned layers together) or ``fc1=0.92,fc2=0.91,fc3=0.74`` (per layer)."""
    text = str(text).strip()
    if "=" not in text:
        return check_sparsity(_number(text, "sparsity"))
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        check(bool(name.strip()) and bool(value.strip()),
              f"sparsity part {part!r} is not LAYER=S: give e.g. fc1=0.92,fc2=0.91")
        out[name.strip().lower()] = check_sparsity(_number(value, f"sparsity of {name.strip()}"))
    return out


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FxpsimError(f"{what} {text.strip()!r} is not a number: give a fraction such as 0.9") from None


@dataclass(frozen=True, slots=True)
class Retraining:
    """How pruning retrains (Han et al. 2015, Sec. 3.1-3.3), on which layers, data and threads.

    ``iterations`` prune-retrain rounds, ``retrain_epochs`` per round (0:
    prune only), ``final_epochs`` more after the last round; the original
    lr divided by ``lr_divisor`` (Han: 10 for LeNet), L2 ``weight_decay``.
    ``layers``: the layer names to prune (None: every Dense/Conv2D layer);
    ``data_dir``: the MNIST IDX folder (None: ``$FXPSIM_DATA``);
    ``threads``: BLAS threads; ``progress``: progress bars while training.
    """

    iterations: int = 3
    retrain_epochs: int = 2
    final_epochs: int = 0
    lr_divisor: float = 10.0
    weight_decay: float = 1e-5
    layers: tuple[str, ...] | None = None
    data_dir: str | None = None
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        self.prune_config(quality=1.0)  # PruneConfig checks the schedule's numbers (any quality will do)
        check(isinstance(self.threads, int) and not isinstance(self.threads, bool) and self.threads >= 1,
              f"threads={self.threads!r} must be a whole number >= 1 (BLAS threads)")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))

    def prune_config(self, target_sparsity=None, quality=None) -> PruneConfig:
        """The :class:`PruneConfig` of these settings for a target sparsity or a final quality."""
        return PruneConfig(target_sparsity=target_sparsity, quality=quality, iterations=self.iterations,
                           retrain_epochs=self.retrain_epochs, lr_divisor=self.lr_divisor,
                           weight_decay=self.weight_decay, final_epochs=self.final_epochs)


@dataclass(frozen=True, eq=False)
class RetrainSetup:
    """A model loaded for retraining: its file, the model, its dataset, the layers to prune, the
    splits ``(x_train, y_train, x_val, y_val, x_test, y_test)`` (preprocessed) and the TrainConfig
    it was trained with (before Han's changes)."""

    path: Path
    model: Model
    data: Dataset
    layers: dict[str, int]
    splits: tuple
    base: TrainConfig


def load_for_retraining(path, retraining: Retraining) -> RetrainSetup:
    """The model file at ``path`` with its dataset split as it was trained (the metadata says how)."""
    path = Path(path)
    model = load_model(path)
    layers = select_layers(model.network, retraining.layers)
    md = model.metadata
    check("dataset" in md, f"{path} has no dataset in its metadata: retrain it with `fxpsim train`")
    split = md.get("split") or {}
    kwargs = {k: split[k] for k in ("test_fraction", "split_seed") if k in split}
    data = load_dataset(md["dataset"], retraining.data_dir, **kwargs)
    frac = float(md.get("val_fraction") or 0.1)
    seed = int(md.get("seed", 0))
    x_tr, y_tr, x_val, y_val = train_val_split(data.x_train, data.y_train, frac, seed)
    prep = model.preprocess
    splits = (prep.apply(x_tr), y_tr, prep.apply(x_val), y_val, prep.apply(data.x_test), data.y_test)
    base = TrainConfig(optimizer=md.get("optimizer", "adam"), lr=float(md.get("lr", 1e-3)),
                       batch_size=int(md.get("batch_size", 64)), momentum=float(md.get("momentum", 0.9)),
                       seed=seed, shift=int(md.get("shift", 0) or 0), threads=retraining.threads,
                       val_fraction=frac)
    return RetrainSetup(path, model, data, layers, splits, base)


def float_accuracy(network: Network, x, y, threads: int = 1) -> float:
    """Accuracy of the float ``network`` on ``(x, y)`` with at most ``threads`` BLAS threads."""
    with threadpool_limits(limits=threads, user_api="blas"):
        return evaluate(network, x, y)[1]


def check_targets(target, layers: dict[str, int]) -> None:
    """A per-layer target names only layers that are pruned, or a one-line error naming them."""
    if isinstance(target, dict):
        missing = [n for n in target if n not in layers]
        check(not missing, f"target sparsity names layer(s) {', '.join(missing)} not pruned / not in the "
                           f"model: its layers are {', '.join(layers)}")


def prune_network(setup: RetrainSetup, config: PruneConfig, retraining: Retraining, log=None):
    """Iterative pruning (:func:`fxpsim.compress.retrain.iterative_prune`) of ``setup.model`` in place.

    Returns ``(masks, records)``: the masks per layer and one record per round.
    """
    check_targets(config.target_sparsity, setup.layers)
    x_tr, y_tr, x_val, y_val, _, _ = setup.splits
    with threadpool_limits(limits=retraining.threads, user_api="blas"):
        return iterative_prune(setup.model.network, setup.layers, config, setup.base, x_tr, y_tr, x_val, y_val,
                               progress=retraining.progress, log=log)


def sensitivity_table(network: Network, layers: dict[str, int], x_val, y_val, threads: int = 1) -> pd.DataFrame:
    """Accuracy vs pruning ratio per layer, no retraining (Han et al. 2015, Fig. 5): a row per (layer, ratio)."""
    with threadpool_limits(limits=threads, user_api="blas"):
        return pd.DataFrame(sensitivity(network, layers, x_val, y_val, SENSITIVITY_RATIOS))


def plot_sensitivity(df: pd.DataFrame, stem: str):
    """Validation accuracy vs parameters pruned away, a line per layer."""
    fig, ax = new_figure(figsize=(6, 4))
    for name, g in df.groupby("layer", sort=False):
        ax.plot(100 * g["sparsity"], 100 * g["accuracy"], marker="o", label=name)
    ax.set_xlabel("parameters pruned away (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{stem}: sensitivity to pruning (no retraining)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


@dataclass(frozen=True, slots=True)
class PruneStudy:
    """One pruning run: ``model`` (file), exactly one of ``target_sparsity`` (a float, or
    ``{layer: sparsity}``) and ``quality`` (threshold = quality x std), the retraining, the pruned
    model's file ``out`` (it names the reports) and whether to add the sensitivity table."""

    model: Path
    out: Path
    target_sparsity: float | dict | None = None
    quality: float | None = None
    retraining: Retraining = Retraining()
    sensitivity: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "out", Path(self.out))
        check(self.out.suffix == ".npz", f"out={self.out} must end in .npz (a model file)")
        if isinstance(self.target_sparsity, dict):
            object.__setattr__(self, "target_sparsity", {str(n).strip().lower(): check_sparsity(s)
                                                         for n, s in self.target_sparsity.items()})
        check(self.quality is None or (math.isfinite(self.quality) and 0 < self.quality < 1e3),
              f"quality={self.quality!r} must be > 0 (threshold = quality x std; Han's range ~0.5-3)")
        self.retraining.prune_config(self.target_sparsity, self.quality)  # exactly one of the two

    @property
    def config(self) -> PruneConfig:
        """The pruning schedule."""
        return self.retraining.prune_config(self.target_sparsity, self.quality)


@dataclass(frozen=True, eq=False)
class PruneReport:
    """What the study reports: the pruned ``model`` (its metadata records every round), ``rounds``
    (a row per round), ``sensitivity`` (None unless asked), the accuracies on the test split, the
    kept fraction per layer, and the report's ``title`` and ``text``."""

    source: Path
    model: Model
    rounds: pd.DataFrame
    sensitivity: pd.DataFrame | None
    accuracy_before: float
    accuracy_after: float
    sparsity: float
    kept: dict[str, float]
    title: str
    text: str

    @property
    def summary(self) -> str:
        """One line: test error before -> after and the weights kept (overall and per layer)."""
        return (f"test error {100 * (1 - self.accuracy_before):.2f} % -> {100 * (1 - self.accuracy_after):.2f} % "
                f"with {100 * (1 - self.sparsity):.2f} % of the weights kept ({_kept_list(self.kept)})")


WARN_POINTS = 5.0
"""Test-error rise (percentage points) beyond which ``fxpsim prune`` warns (issue 17)."""


def error_warning(report: PruneReport, study: PruneStudy, points: float = WARN_POINTS) -> str | None:
    """One line if the pruned test error is more than ``points`` above the dense one, naming the flag
    to change; None otherwise."""
    before, after = 100 * (1 - report.accuracy_before), 100 * (1 - report.accuracy_after)
    if after - before <= points:
        return None
    flag = ("a lower --quality" if study.quality is not None else
            "a lower --target-sparsity") + " (or more --iterations / --retrain-epochs / --final-epochs)"
    return (f"warning: pruning raised the test error by {after - before:.2f} points ({before:.2f} % -> "
            f"{after:.2f} %), more than {points:g}: try {flag}")


def _kept_list(kept: dict[str, float]) -> str:
    return ", ".join(f"{n} {100 * k:.1f} %" for n, k in kept.items())


def run_prune(study: PruneStudy, log=None) -> PruneReport:
    """Prune ``study.model`` as the study says; ``log``: called with one line per round."""
    t0 = time.perf_counter()
    setup = load_for_retraining(study.model, study.retraining)
    model, threads = setup.model, study.retraining.threads
    _, _, x_val, y_val, x_te, y_te = setup.splits
    acc_before = float_accuracy(model.network, x_te, y_te, threads)
    sens = (sensitivity_table(model.network, setup.layers, x_val, y_val, threads)
            if study.sensitivity else None)
    cfg = study.config
    masks, records = prune_network(setup, cfg, study.retraining, log=log)
    acc_after = float_accuracy(model.network, x_te, y_te, threads)
    kept = {n: round(1 - mask_sparsity(m), 6) for n, m in masks.items()}
    sparsity = sparsity_of(masks)
    md = dict(model.metadata)
    md.update({
        "test_accuracy_before_pruning": acc_before,
        "test_accuracy": acc_after,
        "pruned": {"method": "magnitude, threshold = quality x std (Han et al. 2015)",
                   "source": str(setup.path), "layers": list(setup.layers), "sparsity": sparsity,
                   "kept_fraction": kept,
                   "target_sparsity": cfg.target_sparsity, "quality": cfg.quality,
                   "iterations": cfg.iterations, "retrain_epochs": cfg.retrain_epochs,
                   "final_epochs": cfg.final_epochs,
                   "lr_divisor": cfg.lr_divisor, "weight_decay": cfg.weight_decay,
                   "rounds": records, "seconds": round(time.perf_counter() - t0, 1)},
    })
    text = (f"Test error {100 * (1 - acc_before):.2f} % -> {100 * (1 - acc_after):.2f} %, "
            f"weights kept {100 * (1 - sparsity):.2f} % ({_kept_list(kept)}).")
    return PruneReport(setup.path, Model(model.network, model.preprocess, md), pd.DataFrame(records), sens,
                       acc_before, acc_after, sparsity, kept,
                       title=f"Iterative pruning of {setup.path.name} -> {study.out.name}", text=text)
