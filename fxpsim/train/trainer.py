"""The fit loop: mini-batch SGD-family training with schedules and early stopping.

One iteration is the loop of Algorithms 8.1-8.7 (lecture notes): sample a
mini-batch (a seeded permutation per epoch), forward propagate, compute the
loss (softmax cross-entropy or square hinge), back propagate, update the parameters with the
optimizer (:mod:`fxpsim.train.optim`). The learning rate of each epoch
comes from a schedule (:mod:`fxpsim.train.schedules`). Early stopping
("stop training before overfitting") watches the accuracy (then the loss)
on a validation split and restores the weights of the best epoch.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from .. import __version__
from ..binary.train_layers import binary_spec, parse_method
from ..errors import FxpsimError, check
from ..graph import Network, build_network, resolve_spec
from ..modelfile import Model
from ..progress import progress_bar
from .augment import Augment, random_shift  # noqa: F401  (random_shift: moved, importable here as before)
from .data import Dataset, Preprocess, train_val_split
from .losses import LOSSES, parse_loss
from .optim import check_lr, make_optimizer, parse_optimizer
from .schedules import Schedule
from .transfer import check_fits, parse_layer_names, trainable


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (stored in the model's metadata).

    ``weight_decay`` is the L2 coefficient lambda, ``l1`` the L1 one (on
    weights only). ``schedule`` with ``decay`` (k of exponential and 1/t
    decay), ``step_every``/``step_factor`` (step decay). ``patience``: stop
    after that many epochs without a better validation epoch (None: run all
    epochs); with a validation split the best epoch's weights are kept.
    "Better": higher validation accuracy, ties broken by lower validation loss.
    ``shift``: data augmentation (lecture notes' regularisation list), each
    training image moved by a random whole number of pixels in
    ``[-shift, shift]`` along each axis (edge pixels repeated); 0 = off;
    ``rotate``: then rotated by a random angle in ``[-rotate, rotate]``
    degrees (:mod:`fxpsim.train.augment`). ``freeze``: names of layers
    (``conv1``, ``fc2``, as in configs) left out of the optimizer
    (:mod:`fxpsim.train.transfer`).
    ``threads``: BLAS threads while training (1: reproducible, and fastest
    when the cores are shared; matrix products may sum in another order
    with more threads).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    momentum: float = 0.9
    schedule: str = "constant"
    decay: float = 0.1
    step_every: int = 10
    step_factor: float = 0.5
    weight_decay: float = 0.0
    l1: float = 0.0
    val_fraction: float = 0.1
    patience: int | None = None
    shift: int = 0
    rotate: float = 0.0
    freeze: tuple[str, ...] = ()
    init: str = "he"
    preprocess: str = "standardize"
    threads: int = 1
    loss: str = "cross-entropy"
    """Training loss (fxpsim.train.losses.LOSSES): ``cross-entropy`` or ``square-hinge`` (BC/BNN papers)."""
    method: str | None = None
    """Binary/ternary variant of ``arch`` (fxpsim.binary.train_layers: bc, bcs, bnn, bwn, xnor, twn, ttq)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", parse_optimizer(self.optimizer))
        object.__setattr__(self, "lr", check_lr(self.lr))
        object.__setattr__(self, "loss", parse_loss(self.loss))
        check(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs={self.epochs!r} must be a whole number >= 1")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1,
              f"batch_size={self.batch_size!r} must be a whole number >= 1")
        check(self.patience is None or (isinstance(self.patience, int) and self.patience >= 1),
              f"patience={self.patience!r} must be a whole number of epochs >= 1 (or None: no early stop)")
        check(0 <= self.val_fraction < 1, f"val_fraction={self.val_fraction!r} must be in [0, 1)")
        check(self.weight_decay >= 0 and self.l1 >= 0,
              f"weight decay l2={self.weight_decay!r}, l1={self.l1!r} must be >= 0")
        check(isinstance(self.threads, int) and self.threads >= 1, f"threads={self.threads!r} must be >= 1")
        check(isinstance(self.shift, int) and self.shift >= 0, f"shift={self.shift!r} must be a whole number >= 0")
        self.augment  # validates rotate
        object.__setattr__(self, "freeze", parse_layer_names(self.freeze))
        self.lr_schedule()  # validates the schedule parameters
        if self.method is not None:
            object.__setattr__(self, "method", parse_method(self.method))

    @property
    def augment(self) -> Augment:
        """The training-batch augmentation of ``shift`` and ``rotate``."""
        return Augment(self.shift, self.rotate)

    def lr_schedule(self) -> Schedule:
        return Schedule(self.schedule, self.lr, k=self.decay, every=self.step_every, factor=self.step_factor)


@dataclass
class History:
    """Per-epoch records (``epoch``, ``lr``, ``loss``, ``accuracy``, ``val_loss``,
    ``val_accuracy``, ``seconds``), the best epoch and whether training stopped early."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def column(self, name: str) -> list:
        return [e[name] for e in self.epochs]

    @property
    def train_seconds(self) -> float:
        return float(sum(e["seconds"] for e in self.epochs))


def evaluate(network: Network, x: np.ndarray, y: np.ndarray, batch_size: int = 500,
             loss: str = "cross-entropy") -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``network`` in test mode on preprocessed ``x`` (cross-entropy by default)."""
    check(len(x) == len(y) and len(x) > 0, f"evaluate needs matching, non-empty x and y ({len(x)}, {len(y)})")
    loss_fn = LOSSES[parse_loss(loss)]
    total, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = network.forward(x[i:i + batch_size], training=False)
        batch_loss, _ = loss_fn(logits, y[i:i + batch_size])
        total += batch_loss * len(logits)
        correct += int((logits.argmax(axis=1) == y[i:i + batch_size]).sum())
    return total / len(x), correct / len(x)


def network_optimizer(network: Network, config: TrainConfig):
    """The optimizer of ``config`` over all trainable parameters of ``network``.

    Weight decay (L1/L2) applies to weights (keys ``<i>.W``) only, not to
    biases or BatchNorm's gamma and beta.
    """
    entries = trainable(network, config.freeze)
    return make_optimizer(config.optimizer, [p for _, p, _ in entries], config.lr, momentum=config.momentum,
                          l2=config.weight_decay, l1=config.l1, decay=[key.endswith(".W") for key, _, _ in entries])


def _diverged(loss: float, epoch: int, step: int, lr: float) -> FxpsimError:
    return FxpsimError(f"training diverged: loss is {loss} at epoch {epoch} step {step} with learning rate "
                       f"{lr:g}; use a lower learning rate, e.g. --lr {lr / 10:g}")


def fit(network: Network, x: np.ndarray, y: np.ndarray, config: TrainConfig,
        x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, *,
        progress: bool = True, log=None, after_backward=None, after_step=None) -> History:
    """Train ``network`` in place on preprocessed ``x`` and labels ``y``.

    ``after_backward()`` / ``after_step()`` (optional, no arguments) run after
    each backward pass (e.g. mask the gradients of pruned weights) and after
    each optimizer step (e.g. re-apply a pruning mask); see
    :mod:`fxpsim.sparse.retrain`.

    Mini-batches are a permutation of the training set per epoch drawn from
    a generator seeded by ``config.seed``; same seed, same data, same
    BLAS threads -> bit-identical weights. Raises :class:`FxpsimError` if
    the loss becomes NaN or infinite.
    """
    check(len(x) == len(y) and len(x) > 0, f"fit needs matching, non-empty x and y ({len(x)}, {len(y)})")
    # overflow in a diverging run is reported once, as the non-finite loss, not as numpy warnings
    with threadpool_limits(limits=config.threads, user_api="blas"), np.errstate(over="ignore", invalid="ignore"):
        return _fit(network, x, y, config, x_val, y_val, progress, log, after_backward, after_step)


def _fit(network, x, y, config, x_val, y_val, progress, log, after_backward=None, after_step=None) -> History:
    has_val = x_val is not None and len(x_val) > 0
    opt = network_optimizer(network, config)
    grads = [g for _, _, g in trainable(network, config.freeze)]
    # binary layers: clip the real weights to [-1, 1] after each update (BinaryConnect, BNN)
    post_update = [layer.post_update for layer in network.layers if hasattr(layer, "post_update")]
    schedule = config.lr_schedule()
    loss_fn = LOSSES[config.loss]
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x6D62]))  # mini-batch order
    augment, aug_rng = config.augment, Augment.rng(config.seed)  # training batches only
    augment.check_images(x.shape)
    history = History()
    best_key, best_state, waited = (-math.inf, -math.inf), None, 0
    n, bs = len(x), config.batch_size
    n_batches = -(-n // bs)
    for epoch in range(config.epochs):
        opt.lr = schedule(epoch)
        start = time.perf_counter()
        order = rng.permutation(n)
        loss_sum, correct = 0.0, 0
        bar = progress_bar(n_batches, f"epoch {epoch + 1}/{config.epochs}", progress, leave=True,
                           dynamic_ncols=True)
        for step in range(n_batches):
            idx = order[step * bs:(step + 1) * bs]
            xb, yb = x[idx], y[idx]
            if augment.active:
                xb = augment(xb, aug_rng)
            opt.lookahead()
            logits = network.forward(xb, training=True)
            loss, dlogits = loss_fn(logits, yb)
            loss += opt.penalty() if (config.weight_decay or config.l1) else 0.0
            if not math.isfinite(loss):
                raise _diverged(loss, epoch + 1, step + 1, opt.lr)
            network.backward(dlogits)
            if after_backward is not None:
                after_backward()
            opt.step(grads)
            if after_step is not None:
                after_step()
            for hook in post_update:
                hook()
            loss_sum += loss * len(idx)
            correct += int((logits.argmax(axis=1) == yb).sum())
            if step % 20 == 0 or step == n_batches - 1:
                bar.set_postfix(loss=f"{loss_sum / min(n, (step + 1) * bs):.4f}",
                                acc=f"{correct / min(n, (step + 1) * bs):.4f}", refresh=False)
            bar.update(1)
        record = {"epoch": epoch + 1, "lr": opt.lr, "loss": loss_sum / n, "accuracy": correct / n,
                  "val_loss": None, "val_accuracy": None}
        record["seconds"] = time.perf_counter() - start
        if has_val:
            record["val_loss"], record["val_accuracy"] = evaluate(network, x_val, y_val, loss=config.loss)
            key = (record["val_accuracy"], -record["val_loss"])
            if key > best_key:
                best_key, best_state, waited = key, network.state_dict(), 0
                history.best_epoch = epoch + 1
            else:
                waited += 1
        history.epochs.append(record)
        summary = (f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f} acc {record['accuracy']:.4f}"
                   + (f" val_loss {record['val_loss']:.4f} val_acc {record['val_accuracy']:.4f}" if has_val else "")
                   + f" lr {opt.lr:.3g} {record['seconds']:.1f}s")
        if progress:
            bar.set_postfix_str(summary.split(": ", 1)[1])
        bar.close()
        if log is not None:
            log(summary)
        if config.patience is not None and has_val and waited >= config.patience:
            history.stopped_early = True
            break
    if best_state is not None:
        network.load_state_dict(best_state)
    return history


def train(dataset: Dataset, arch: str, config: TrainConfig, *, progress: bool = True, log=None,
          start: Network | None = None):
    """The whole pipeline: split, fit preprocessing, build, train, test.

    ``start``: train this network (in place) instead of a fresh ``arch``, e.g. a trained trunk with
    a new head (transfer learning, :mod:`fxpsim.train.transfer`); ``arch`` is then only recorded.

    Returns ``(Model, History)``; the model's metadata records the dataset
    and its split, the seed, the hyper-parameters, the float test accuracy
    and the training time.
    """
    x_tr, y_tr, x_val, y_val = train_val_split(dataset.x_train, dataset.y_train, config.val_fraction, config.seed)
    prep = Preprocess.fit(x_tr, config.preprocess)
    if config.method is not None:
        arch = binary_spec(resolve_spec(arch, dataset.input_shape, dataset.n_classes), config.method)
    network = (build_network(arch, dataset.input_shape, dataset.n_classes, seed=config.seed, init=config.init)
               if start is None else check_fits(start, dataset.name, dataset.input_shape, dataset.n_classes))
    history = fit(network, prep.apply(x_tr), y_tr, config, prep.apply(x_val), y_val, progress=progress, log=log)
    with threadpool_limits(limits=config.threads, user_api="blas"):
        test_loss, test_acc = evaluate(network, prep.apply(dataset.x_test), dataset.y_test)
    metadata = {
        "dataset": dataset.name,
        "split": dataset.split,
        "arch": arch,
        "spec": network.spec(),
        **{k: v for k, v in asdict(config).items()},
        "epochs_run": len(history.epochs),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "n_train": int(len(x_tr)),
        "n_val": int(len(x_val)),
        "n_test": int(len(dataset.x_test)),
        "test_loss": float(test_loss),
        "test_accuracy": float(test_acc),
        "train_seconds": round(history.train_seconds, 2),
        "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in e.items()}
                    for e in history.epochs],
        "fxpsim_version": __version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }
    return Model(network, prep, metadata), history
