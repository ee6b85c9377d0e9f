"""FlexNet: bit-progressive training with one BatchNorm set per width (lecture notes, "FlexNet":
"bit-by-bit progressive training"; one model used at 3, 2 or 1 bit, Fig. 2/3 against baselines
trained at one width).

:func:`train_flexnet` trains the network at the widest width first, then steps the weight and
activation width down (8 -> 6 -> 4 -> 3 bits, uniform over the layers), each step fine-tuning the
previous step's network (:class:`fxpsim.train.qat.QATNetwork`: the forward pass is fxpsim's
integer run of the width's config, the backward the straight-through estimator). The conv/fc
weights are shared: the last step's serve every width. Each width keeps its own BatchNorm set
(gamma, beta and the running statistics, folded into the compute layer as the simulator folds
them): the set a step ends with, then re-fitted to the shared weights with those weights frozen
(:class:`BatchNormOnly`, ``bn_epochs``). Every fine-tuning at a width starts by re-estimating the
running statistics at that width (:func:`recalibrate_bn`: each BatchNorm's mean and variance of
its input as the width's integer run feeds it, over the training images; BatchNorm re-calibration
as in switchable/slimmable networks, Yu et al. 2019), since fine-tuning itself keeps them frozen.
The model file stores the sets keyed by width
(:func:`fxpsim.modelfile.select_bn_set` picks the one a config's widths name).

A width's config is what :func:`fxpsim.simulate.config_from_profile` gives the float model's profile
on calibration images (Judd et al.: integer bits from each layer's max |value|, the rest fraction
bits), with a ``acc_bits``-bit wrapping accumulator, so only the operand widths vary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from ..config import NetworkConfig
from ..errors import check
from ..modelfile import Model, bn_set_key, bn_state_keys
from ..qformat import dequantize, quantize
from ..simulate import Simulator, config_from_profile, convert_raw, profile
from .qat import QATNetwork, _Parts, numba_threads
from .trainer import TrainConfig, evaluate, fit
from .transfer import clone

__all__ = ["BatchNormOnly", "FlexNetResult", "FlexNetRun", "bn_state", "recalibrate_bn", "train_at_width",
           "train_flexnet", "width_config"]


@dataclass(frozen=True)
class FlexNetRun:
    """How to train a FlexNet: ``widths`` (bits of weights and activations, strictly decreasing, the
    order of the steps), ``epochs`` per step, ``bn_epochs`` of the BatchNorm-only re-fit of every width
    but the last to the shared weights (0: none), Adam ``lr``, ``seed`` (mini-batch order),
    ``acc_bits`` of every layer's wrapping accumulator, ``threads`` (BLAS and Numba), ``recalibrate``
    (re-estimate the running statistics at the width before each fine-tuning: :func:`recalibrate_bn`)."""

    widths: tuple[int, ...] = (8, 6, 4, 3)
    epochs: int = 3
    bn_epochs: int = 1
    lr: float = 1e-3
    seed: int = 0
    acc_bits: int = 32
    threads: int = 1
    recalibrate: bool = True

    def __post_init__(self) -> None:
        widths = tuple(self.widths)
        check(bool(widths) and all(isinstance(b, int) and not isinstance(b, bool) and 2 <= b <= 16 for b in widths)
              and all(a > b for a, b in zip(widths, widths[1:])),
              f"widths={widths!r} must be strictly decreasing whole numbers of bits in 2..16, e.g. 8, 6, 4, 3 "
              "(FlexNet trains the widest first)")
        object.__setattr__(self, "widths", widths)
        for name, low in (("epochs", 1), ("bn_epochs", 0), ("seed", 0), ("threads", 1)):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                  f"{name}={value!r} must be a whole number >= {low}")
        check(isinstance(self.recalibrate, bool), f"recalibrate={self.recalibrate!r} must be True or False")
        check(isinstance(self.lr, (int, float)) and 0 < self.lr < 1, f"lr={self.lr!r} must be in (0, 1), e.g. 1e-3")
        check(isinstance(self.acc_bits, int) and 8 <= self.acc_bits <= 62,
              f"acc_bits={self.acc_bits!r} must be 8..62 (a wide accumulator: FlexNet varies the operand widths)")

    def train_config(self, base: TrainConfig, epochs: int) -> TrainConfig:
        """``base`` (the model's training settings) with this run's rate, seed and ``epochs``; no weight
        decay, no early stop (the best validation epoch of the integer run is kept), nothing frozen."""
        return replace(base, epochs=epochs, lr=self.lr, seed=self.seed, threads=self.threads, weight_decay=0.0,
                       l1=0.0, patience=None, freeze=())


def width_config(model: Model, x_cal: np.ndarray, bits: int, acc_bits: int = 32) -> NetworkConfig:
    """The config of ``bits``-bit weights and activations for ``model``: formats from its profile on the
    calibration images ``x_cal`` (:func:`fxpsim.simulate.config_from_profile`), wrapping accumulators."""
    return config_from_profile(profile(Simulator(model), x_cal), weight_bits=bits, data_bits=bits,
                               acc_bits=acc_bits, overflow="wrap")


def recalibrate_bn(network, config: NetworkConfig, x: np.ndarray, batch_size: int = 500) -> int:
    """Set each BatchNorm's running mean and (biased) variance, in place, to those of its input over the
    prepared images ``x`` as the integer run of ``config`` feeds it: stage by stage, the stage's raw input
    (dequantized) through the float compute layer (``z = W x + b``, BatchNorm's input), then the stage
    run on the integer datapath with the new statistics folded, for the next stage. Returns the
    BatchNorm layers set."""
    sim = Simulator(network)
    sim.require_chain("FlexNet's BatchNorm re-calibration")
    done, prev = 0, None
    for i, (stage, cfg) in enumerate(zip(sim.stages, config)):
        outs, sums = [], None
        part = _Parts(network, stage)
        for lo in range(0, len(x), batch_size):
            h = (quantize(np.asarray(x[lo:lo + batch_size], np.float64), cfg.fmt_x, cfg.rounding, "clip", sim.seed)
                 if i == 0 else convert_raw(prev[lo // batch_size], config[i - 1].fmt_y, cfg.fmt_x, cfg.rounding,
                                            sim.seed))
            outs.append(h)
            if part.bn is not None:
                xin = dequantize(h, cfg.fmt_x)
                z = np.asarray(part.comp.forward(xin.reshape(len(xin), -1) if stage.kind == "dense" else xin),
                               np.float64)
                axes = (0,) if z.ndim == 2 else (0, 2, 3)
                n = z.size // z.shape[1]
                part_sums = np.stack([z.sum(axis=axes), (z * z).sum(axis=axes), np.full(z.shape[1], n, float)])
                sums = part_sums if sums is None else sums + part_sums
        if part.bn is not None:
            mean = sums[0] / sums[2]
            part.bn.buffers["running_mean"][...] = mean
            part.bn.buffers["running_var"][...] = np.maximum(sums[1] / sums[2] - mean * mean, 0.0)
            sim = Simulator(network)  # fold the new statistics before this stage runs
            done += 1
        prev = [sim.run_stage(i, h, cfg)[1] for h in outs]
    return done


def bn_state(network) -> dict[str, np.ndarray]:
    """A copy of ``network``'s BatchNorm state (gamma, beta, running statistics of every BatchNorm layer)."""
    state = network.state_dict()
    return {k: np.array(state[k], copy=True) for k in bn_state_keys(network)}


class BatchNormOnly:
    """``qnet`` with only its BatchNorm layers' parameters trainable (gamma, beta): the optimizer of
    :func:`fit` sees nothing else, so the shared weights stay bit-identical. The gradients are
    QATNetwork's (folded BatchNorm, straight-through estimator)."""

    def __init__(self, qnet: QATNetwork):
        self.qnet = qnet

    def __getattr__(self, name):
        return getattr(self.qnet, name)

    def params_and_grads(self):
        layers = self.qnet.layers
        return [e for e in self.qnet.params_and_grads() if layers[int(e[0].split(".", 1)[0])].kind == "batchnorm"]


def _copy(model: Model) -> Model:
    return Model(clone(model.network), model.preprocess, dict(model.metadata))


def train_at_width(model: Model, config: NetworkConfig, splits, base: TrainConfig, run: FlexNetRun,
                   epochs: int | None = None, bn_only: bool = False) -> tuple[Model, float]:
    """``(model, val_accuracy)``: a copy of ``model`` fine-tuned ``epochs`` (default ``run.epochs``) to
    ``config`` through its integer run (QATNetwork), the best validation epoch kept; ``bn_only``: only
    the BatchNorm parameters move. ``splits = (x_train, y_train, x_val, y_val)``, preprocessed."""
    x_tr, y_tr, x_val, y_val = splits
    check(len(x_val) > 0, "FlexNet training needs a validation split (it keeps the best epoch): give x_val, y_val")
    out = _copy(model)
    if run.recalibrate:
        recalibrate_bn(out.network, config, x_tr)
    qnet = QATNetwork(out.network, config, seed=0)
    target = BatchNormOnly(qnet) if bn_only else qnet
    if bn_only:
        check(bool(target.params_and_grads()), "the network has no BatchNorm layer: FlexNet keeps one BatchNorm "
                                               "set per width, so train a network with BatchNorm (spec token bn)")
    cfg = run.train_config(base, run.epochs if epochs is None else epochs)
    with threadpool_limits(limits=run.threads, user_api="blas"), numba_threads(run.threads):
        history = fit(target, x_tr, y_tr, cfg, x_val, y_val, progress=False)
        val = evaluate(qnet, x_val, y_val)[1]
    check(history.best_epoch is not None, "no validation epoch was recorded")
    return out, float(val)


@dataclass(frozen=True, eq=False)
class FlexNetResult:
    """The FlexNet ``model`` (shared weights, ``bn_sets`` per width; its network holds the widest
    width's set), the ``configs`` per width and one record per training step (``steps``)."""

    model: Model
    configs: dict[int, NetworkConfig]
    steps: list[dict]


def train_flexnet(model: Model, splits, x_cal: np.ndarray, base: TrainConfig, run: FlexNetRun,
                  log=None) -> FlexNetResult:
    """Bit-progressive training of a copy of the float ``model`` (module docstring): a step per width of
    ``run.widths``, widest first, each from the last; then the BatchNorm-only re-fit of every width but
    the last to the shared weights. Deterministic for ``run.seed`` (one BLAS thread)."""
    say = log or (lambda *_: None)
    check(bool(bn_state_keys(model.network)), "the network has no BatchNorm layer: FlexNet keeps one BatchNorm set "
                                              "per width, so train a network with BatchNorm (spec token bn)")
    configs = {b: width_config(model, x_cal, b, run.acc_bits) for b in run.widths}
    current, sets, steps = model, {}, []
    for b in run.widths:
        current, val = train_at_width(current, configs[b], splits, base, run)
        sets[b] = bn_state(current.network)
        steps.append({"step": f"progressive {b} bits", "width": b, "epochs": run.epochs, "trained": "all",
                      "val_accuracy": val})
        say(f"FlexNet step {b} bits: validation accuracy of the integer run {val:.4f}")
    shared = current.network.state_dict()
    if run.bn_epochs:
        for b in run.widths[:-1]:
            start = _copy(current)
            start.network.load_state_dict({**shared, **sets[b]})
            refit, val = train_at_width(start, configs[b], splits, base, run, run.bn_epochs, bn_only=True)
            sets[b] = bn_state(refit.network)
            steps.append({"step": f"BatchNorm re-fit {b} bits", "width": b, "epochs": run.bn_epochs,
                          "trained": "batchnorm", "val_accuracy": val})
            say(f"FlexNet BatchNorm re-fit {b} bits: validation accuracy {val:.4f}")
    final = _copy(current)
    final.network.load_state_dict({**shared, **sets[run.widths[0]]})
    final.bn_sets = {bn_set_key(b, b): sets[b] for b in run.widths}
    final.metadata["flexnet"] = {
        "widths": list(run.widths), "epochs": run.epochs, "bn_epochs": run.bn_epochs, "lr": run.lr,
        "seed": run.seed, "acc_bits": run.acc_bits, "recalibrate": run.recalibrate,
        "network_bn_set": bn_set_key(run.widths[0], run.widths[0]),
        "steps": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items()} for s in steps]}
    return FlexNetResult(final, configs, steps)
