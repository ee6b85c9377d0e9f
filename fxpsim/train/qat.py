"""Quantization-aware fine-tuning to a datapath config, and accumulator-aware training (A2Q).

:class:`QATNetwork` wraps a float :class:`~fxpsim.graph.Network` and a
:class:`~fxpsim.config.NetworkConfig` so that :func:`fxpsim.train.trainer.fit`
trains it as it will run. Its forward pass IS the integer run of
:class:`fxpsim.simulate.Simulator` (the same functions, so the same bits):
BatchNorm folded into the compute layer as :func:`~fxpsim.simulate.build_stages`
folds it (with the running statistics: BatchNorm is frozen while fine-tuning),
weights and bias quantized by ``Simulator.quantized_params`` (A2Q shrink
included when ``cfg.a2q``), inputs quantized / converted to ``fmt_x``, every
MAC through the accumulator of the engine the config names (wrap or clip
after every addition, so overflow is seen in training; ``simulate_acc=False``
trains with an unbounded one), requantization to ``fmt_y`` and the integer
post ops. Dropout is skipped, as in the integer run.

The backward pass is the straight-through estimator (Bengio et al. 2013;
the lecture notes' QNN/BinaryConnect "gradients computed using W~ instead
of W"), clipped: each quantizer passes the gradient where the value it
quantizes lies inside its format's range and gives ZERO outside it (where it
saturates): weights in ``fmt_w``, bias in ``fmt_bias``, inputs in ``fmt_x``,
the kernel output in ``fmt_y`` (and > 0 under a fused ReLU). A wrapping
accumulator (or output) passes the gradient unchanged (wrap is the identity
piecewise); a clipping one gives zero to outputs whose final accumulator sits
on a rail. The dot products' gradients are the float layer's on the
quantized operands. ``quantize=False`` gives the STE's surrogate network
(every quantizer replaced by its saturation, no rounding): its exact gradient
is what the backward computes, which is what the gradient checks test.

Accumulator-aware training (A2Q, Colbert et al., "A2Q: Accumulator-Aware
Quantization with Guaranteed Overflow Avoidance", ICCV 2023, and A2Q+ 2024):
with inputs in ``fmt_x`` (``|x| <= x_max`` raw) and bias ``b_c`` in the
accumulator format, every partial sum of channel c obeys
``|acc| <= |b_c| + x_max * ||w_c||_1``, so ``||w_c||_1 <= (2**(BW_acc-1) - 1 - |b_c|) / x_max``
(raw integer weights) rules out overflow at every addition, for wrap and
clip and any order. fxpsim enforces it by PROJECTION after every optimizer
step (:func:`a2q_project`), not by A2Q's weight-norm parametrisation
``w = g v / ||v||_1`` with ``g`` clamped: a channel over its bound is
rescaled radially (A2Q's clamp of ``g``) to the largest scale whose integer
weights, quantized exactly as the simulator quantizes them, meet the bound.
The model that comes out therefore cannot overflow under its config, by
construction (:func:`accumulator_bounds` checks it analytically).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from ..config import NetworkConfig
from ..constraints import _channel_l1, a2q_l1_bound, max_abs_raw
from ..errors import check
from ..graph.layers import as_float
from ..modelfile import Model
from ..qformat import Overflow, QFormat, convert, dequantize, quantize
from ..simulate import COMPUTE_KINDS, Simulator, convert_raw
from ..simulate.post import post_int
from .trainer import History, TrainConfig, evaluate, fit

__all__ = ["FineTune", "FineTuneResult", "QATNetwork", "a2q_bound", "a2q_project", "accumulator_bounds",
           "fine_tune", "x_max"]

_BISECT_STEPS = 24
"""Bisection steps of the A2Q rescale (scale found to 2**-24 of its value)."""
_PROJECT_ATTEMPTS = 4
"""Rescales of one layer before a channel still over its bound is set to zero (float rounding, or a
stochastic rounding whose |Q(s w)| is not monotone in s)."""


def _in_range(v: np.ndarray, fmt: QFormat) -> np.ndarray:
    """The clipped STE's pass mask: ``fmt.min_value <= v <= fmt.max_value``."""
    return (v >= fmt.min_value) & (v <= fmt.max_value)


def _saturate(v: np.ndarray, fmt: QFormat) -> np.ndarray:
    """The surrogate of quantizing ``v`` to ``fmt``: its saturation, no rounding."""
    return np.clip(v, fmt.min_value, fmt.max_value)


def _bias_in_acc(b_raw: np.ndarray, cfg) -> np.ndarray:
    """The raw bias as the accumulator starts from it (``fmt_bias`` converted, saturating)."""
    acc_fmt = getattr(cfg, "fmt_bias_acc", cfg.fmt_bias)
    return convert(b_raw, cfg.fmt_bias, acc_fmt) if acc_fmt != cfg.fmt_bias else np.asarray(b_raw, np.int64)


x_max = max_abs_raw
"""The largest |raw input| of ``fmt_x`` (signed: 2**(BW-1); unsigned: 2**BW - 1)."""


def a2q_bound(b_raw: np.ndarray, cfg) -> np.ndarray:
    """Per output channel, the A2Q L1 bound (:func:`fxpsim.constraints.a2q_l1_bound`) of the layer's
    bias in the accumulator format (int64)."""
    return a2q_l1_bound(np.abs(_bias_in_acc(b_raw, cfg)).astype(np.int64), cfg.fmt_x, cfg.acc_bits)


def _check_acc_aware(config: NetworkConfig) -> None:
    for cfg in config:
        check(getattr(cfg, "product_shift", 0) == 0,
              f"layer {cfg.name}: frac_acc={cfg.frac_acc} differs from FL_w + FL_x: the A2Q bound of "
              "accumulator-aware training holds for exact products; drop frac_acc from the config")
        check(cfg.overflow is not Overflow.IDEAL,
              f"layer {cfg.name}: overflow='ideal' has no accumulator width to stay within: give the "
              "config's wrap or clip accumulator for accumulator-aware training")


def _channel_sum(a: np.ndarray, kind: str) -> np.ndarray:
    """Each output channel's sum: dense ``(K, N)`` over K, conv ``(F, C, kh, kw)`` over C, kh, kw."""
    return a.sum(axis=0) if kind == "dense" else a.reshape(a.shape[0], -1).sum(axis=1)


def _channel_shape(kind: str) -> tuple[int, ...]:
    return (1, -1) if kind == "dense" else (-1, 1, 1, 1)


class _Parts:
    """Where a stage's parameters live in the network: its compute layer and folded BatchNorm."""

    def __init__(self, network, stage):
        lo, end, _ = stage.layers
        self.comp = next(network.layers[j] for j in range(lo, end) if network.layers[j].kind in COMPUTE_KINDS)
        self.bn = next((network.layers[j] for j in range(lo, end) if network.layers[j].kind == "batchnorm"), None)
        self.kind = stage.kind

    def bn_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """``(gamma / sqrt(var + eps), 1 / sqrt(var + eps))`` in float64, as the simulator folds."""
        inv = 1.0 / np.sqrt(np.asarray(self.bn.buffers["running_var"], np.float64) + self.bn.eps)
        return np.asarray(self.bn.params["gamma"], np.float64) * inv, inv

    def set_grads(self, dw_f: np.ndarray, db_f: np.ndarray) -> None:
        """Gradients of the folded ``W_f = W s``, ``b_f = (b - mean) s + beta`` (s = gamma / sigma)
        taken back to W, b, gamma and beta."""
        comp = self.comp
        if self.bn is None:
            comp.grads["W"][...] = dw_f
            comp.grads["b"][...] = db_f
            return
        scale, inv = self.bn_scale()
        shape = _channel_shape(self.kind)
        w = np.asarray(comp.params["W"], np.float64)
        b = np.asarray(comp.params["b"], np.float64)
        comp.grads["W"][...] = dw_f * scale.reshape(shape)
        comp.grads["b"][...] = db_f * scale
        # d W_f / d s = W, d b_f / d s = b - mean; s = gamma / sigma
        d_scale = _channel_sum(dw_f * w, self.kind) + db_f * (b - np.asarray(self.bn.buffers["running_mean"],
                                                                               np.float64))
        self.bn.grads["gamma"][...] = d_scale * inv
        self.bn.grads["beta"][...] = db_f


class _Tape:
    """What one stage's forward keeps for the backward: STE masks, the float twin, shapes."""

    __slots__ = ("twin", "post", "x_shape", "mask_x", "mask_w", "mask_b", "mask_k")

    def __init__(self, twin, post, x_shape, mask_x, mask_w, mask_b, mask_k):
        self.twin, self.post, self.x_shape = twin, post, x_shape
        self.mask_x, self.mask_w, self.mask_b, self.mask_k = mask_x, mask_w, mask_b, mask_k


class QATNetwork:
    """``network`` run as ``config`` runs it on the integer datapath, trainable by the STE (module docstring).

    Quacks like a :class:`~fxpsim.graph.Network` for :func:`fit` and :func:`evaluate`:
    ``layers``, ``forward``, ``backward``, ``params_and_grads``, ``state_dict``,
    ``load_state_dict`` (the parameters are the wrapped network's, trained in place).
    ``seed`` is the simulator's (stochastic rounding: ``fxpsim eval --seed``);
    ``simulate_acc=False`` runs every accumulator ``ideal`` (unbounded) in training (the validation
    runs of :func:`fit`, in test mode, keep the config's);
    ``quantize=False`` is the STE's surrogate (no rounding; gradient checks).
    """

    def __init__(self, network, config: NetworkConfig, *, seed: int = 0, simulate_acc: bool = True,
                 quantize: bool = True, backend=None):
        self.network = getattr(network, "network", network)
        self.seed, self.quantize, self.backend = seed, bool(quantize), backend
        sim = self._simulator()
        sim.check_config(config)
        self.config = config
        self.run_config = config if simulate_acc else config.with_all(overflow="ideal")
        self.parts = [_Parts(self.network, s) for s in sim.stages]
        self.twins = [type(p.comp).from_config(p.comp.config(), dtype=np.float64) for p in self.parts]
        self._tapes: list[_Tape] = []
        self._out_shape = None

    # --- what fit/evaluate use of a Network --------------------------------
    @property
    def layers(self):
        return self.network.layers

    def params_and_grads(self):
        return self.network.params_and_grads()

    def state_dict(self):
        return self.network.state_dict()

    def load_state_dict(self, state) -> None:
        self.network.load_state_dict(state)

    def _simulator(self) -> Simulator:
        """A simulator of the network's current weights (BatchNorm folded now)."""
        sim = Simulator(self.network, seed=self.seed, backend=self.backend)
        sim.require_chain("quantization-aware training")
        return sim

    # --- forward -------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits of the integer run of ``config`` on the (preprocessed) network input ``x``
        (dtype of ``x``: float32 in training); ``training`` keeps what the backward needs and runs
        the training accumulators (``simulate_acc=False``: ideal), test mode always the config's."""
        x = as_float(x)
        check(tuple(x.shape[1:]) == self.network.input_shape,
              f"network input has shape {x.shape}: expected (batch, "
              f"{', '.join(map(str, self.network.input_shape))})")
        sim = self._simulator()
        dtype = x.dtype
        self._tapes = []
        h_raw, h_val, prev = None, np.asarray(x, np.float64), None
        for i, (stage, cfg) in enumerate(zip(sim.stages, self.run_config if training else self.config)):
            mask_x = _in_range(h_val, cfg.fmt_x) if training else None
            if self.quantize:
                x_raw = (quantize(h_val, cfg.fmt_x, cfg.rounding, "clip", self.seed) if prev is None
                         else convert_raw(h_raw, prev.fmt_y, cfg.fmt_x, cfg.rounding, self.seed))
                h_raw, tape = self._kernel_int(sim, i, x_raw, cfg, training, dtype)
                for op, layer in stage.post:
                    h_raw = post_int(op, layer, h_raw, cfg.fmt_y, cfg, self.seed)
                h_val = dequantize(h_raw, cfg.fmt_y)
            else:
                h_val, tape = self._kernel_surrogate(sim, i, _saturate(h_val, cfg.fmt_x), cfg)
                for _, layer in stage.post:
                    h_val = layer.forward(h_val, training=True)
            if training:
                tape.mask_x = mask_x
                self._tapes.append(tape)
            prev = cfg
        self._out_shape = h_val.shape
        return h_val.reshape(len(x), -1).astype(dtype, copy=False)

    def _twin_forward(self, i: int, stage, xq: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The float layer on the quantized operands (its cache serves the backward)."""
        twin = self.twins[i]
        twin.params["W"][...] = w
        twin.params["b"][...] = b
        return twin.forward(xq.reshape(len(xq), -1) if stage.kind == "dense" else xq, training=True)

    def _kernel_int(self, sim, i, x_raw, cfg, training, dtype):
        """Stage ``i``'s kernel on the engine ``cfg`` names: raw output, and the STE tape."""
        stage = sim.stages[i]
        w_raw, b_raw = sim.quantized_params(i, cfg)
        params = sim.engines[cfg.engine].prepare(stage, w_raw, cfg)
        res = sim.run_kernel(i, x_raw, params, b_raw, cfg)
        tape = None
        if training:
            xq = dequantize(x_raw, cfg.fmt_x).astype(dtype)
            self._twin_forward(i, stage, xq, dequantize(w_raw, cfg.fmt_w), dequantize(b_raw, cfg.fmt_bias))
            acc = np.asarray(res.acc)
            mask_k = self._output_mask(dequantize(acc, cfg.fmt_acc), stage, cfg)
            if cfg.overflow is Overflow.CLIP:
                mask_k &= (acc > cfg.acc_min) & (acc < cfg.acc_max)
            tape = self._tape(i, stage, cfg, x_raw.shape, mask_k)
        out = res.y
        if training:
            yf = dequantize(out, cfg.fmt_y).astype(dtype)
            for _, layer in stage.post:  # the float twins of the integer post ops fill their caches
                yf = layer.forward(yf, training=True)
        return out, tape

    def _kernel_surrogate(self, sim, i, xs, cfg):
        """The STE surrogate of stage ``i``'s kernel: saturations instead of quantizers (float)."""
        stage = sim.stages[i]
        w = _saturate(stage.W, cfg.fmt_w)
        b = _saturate(stage.b, cfg.fmt_bias)
        z = self._twin_forward(i, stage, xs, w, b)
        if cfg.overflow is Overflow.CLIP:
            z = np.clip(z, cfg.acc_min * cfg.fmt_acc.lsb, cfg.acc_max * cfg.fmt_acc.lsb)
        mask_k = self._output_mask(z, stage, cfg)
        if cfg.overflow is Overflow.CLIP:
            mask_k &= (z > cfg.acc_min * cfg.fmt_acc.lsb) & (z < cfg.acc_max * cfg.fmt_acc.lsb)
        y = z if self._output_wraps(cfg) else _saturate(z, cfg.fmt_y)
        if stage.relu:
            y = np.maximum(y, 0.0)
        return y, self._tape(i, stage, cfg, xs.shape, mask_k)

    @staticmethod
    def _output_wraps(cfg) -> bool:
        return getattr(cfg, "output_overflow", Overflow.CLIP) is Overflow.WRAP

    def _output_mask(self, acc_val: np.ndarray, stage, cfg) -> np.ndarray:
        """STE of requantization to ``fmt_y`` (saturating unless the output wraps) and the fused ReLU."""
        mask = np.ones(acc_val.shape, bool) if self._output_wraps(cfg) else _in_range(acc_val, cfg.fmt_y)
        if stage.relu:
            mask &= acc_val > 0
        return mask

    def _tape(self, i, stage, cfg, x_shape, mask_k) -> _Tape:
        return _Tape(self.twins[i], stage.post, x_shape, None, _in_range(stage.W, cfg.fmt_w),
                     _in_range(stage.b, cfg.fmt_bias), mask_k)

    # --- backward ------------------------------------------------------------
    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """STE gradients of the last training forward into the network's ``grads``; ``dL/dx`` of
        the input (``input_grad=False``: skipped, returns None)."""
        check(len(self._tapes) == len(self.parts), "backward() needs a forward(x, training=True) first")
        d = np.asarray(dout).reshape(self._out_shape)
        dtype = np.result_type(dout.dtype, np.float32)
        d = d.astype(dtype, copy=False)
        for i in reversed(range(len(self._tapes))):
            tape, part = self._tapes[i], self.parts[i]
            for _, layer in reversed(tape.post):
                d = layer.backward(d)
            d = d * tape.mask_k
            need_dx = input_grad or i > 0
            dx = tape.twin.backward(d, input_grad=need_dx)
            part.set_grads(tape.twin.grads["W"] * tape.mask_w, tape.twin.grads["b"] * tape.mask_b)
            if not need_dx:
                return None
            d = dx.reshape(tape.x_shape) * tape.mask_x
        return d


# --- accumulator-aware: the A2Q bound, its projection and its check -----------

def a2q_project(network, config: NetworkConfig, seed: int = 0) -> int:
    """Rescale every output channel whose raw weights break the A2Q bound (:func:`a2q_bound`) to the
    largest scale meeting it (bisection; weights quantized as the simulator quantizes them without
    the A2Q shrink, so the bound holds for the integer run with ``a2q`` on or off). In place on
    ``network``'s weights; returns the channels rescaled."""
    network = getattr(network, "network", network)
    sim = Simulator(network, seed=seed)
    parts = [_Parts(network, s) for s in sim.stages]
    rescaled = 0
    for i, (stage, cfg, part) in enumerate(zip(sim.stages, config, parts)):
        cfg = replace(cfg, a2q=False)  # the weights themselves meet the bound: no shrink needed at run time
        for attempt in range(_PROJECT_ATTEMPTS):  # float32 storage and the fold round: re-check the result
            w_raw, b_raw = sim.quantized_params(i, cfg)
            bound = a2q_bound(b_raw, cfg)
            bad = _channel_l1(w_raw, stage.kind) > bound
            if not bad.any():
                break
            last = attempt == _PROJECT_ATTEMPTS - 1  # zero weights meet every bound: the sure end
            scale = np.where(bad, 0.0, 1.0) if last else _largest_scale(stage, cfg, bound, bad, seed)
            w = part.comp.params["W"]
            w[...] = (np.asarray(w, np.float64) * scale.reshape(_channel_shape(stage.kind))).astype(w.dtype)
            rescaled += int(bad.sum())
            sim = Simulator(network, seed=seed)
            stage = sim.stages[i]
    return rescaled


def _largest_scale(stage, cfg, bound: np.ndarray, bad: np.ndarray, seed) -> np.ndarray:
    """Per channel the largest s in [0, 1] with ||Q(s W_c)||_1 <= bound_c (1 for channels within it).

    ``|Q(s w)|`` never decreases with s for a deterministic rounding, so the feasible scales are an
    interval from 0 (all-zero weights meet every bound); the final scale is taken a little below
    the bisection's feasible end, and the caller checks the result through the simulator."""
    shape = _channel_shape(stage.kind)
    lo, hi = np.zeros(bad.shape), np.ones(bad.shape)
    for _ in range(_BISECT_STEPS):
        mid = np.where(bad, 0.5 * (lo + hi), 1.0)
        w = quantize(stage.W * mid.reshape(shape), cfg.fmt_w, cfg.rounding, "clip", seed)
        ok = _channel_l1(w, stage.kind) <= bound
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return np.where(bad, lo * (1 - 2.0 ** -20), 1.0)


def accumulator_bounds(network, config: NetworkConfig, seed: int = 0) -> list[dict]:
    """Per layer the analytic worst case over every input in ``fmt_x``, on the raw weights and bias
    the simulator runs (A2Q shrink included): the extremes of the accumulator, per channel
    ``b_c + sum_i max(w_ic x)`` and ``b_c + sum_i min(w_ic x)`` over ``x in [raw_min, raw_max]``
    (exact, Python ints), which bound every partial sum in any order.

    ``safe``: both lie in [-2**(BW_acc-1), 2**(BW_acc-1) - 1], so nothing can overflow (wrap or
    clip); ``range_used``: max(high / acc_max, low / acc_min), above 1 when some input overflows;
    ``channels_over_bound``: channels whose L1 norm exceeds the A2Q bound (:func:`a2q_bound`).
    """
    sim = Simulator(getattr(network, "network", network), seed=seed)
    sim.check_config(config)
    rows = []
    for i, (stage, cfg) in enumerate(zip(sim.stages, config)):
        w_raw, b_raw = sim.quantized_params(i, cfg)
        w = np.asarray(w_raw).astype(object)
        lo_x, hi_x = cfg.fmt_x.raw_min, cfg.fmt_x.raw_max
        b = _bias_in_acc(b_raw, cfg).astype(object)
        high = max(b + _channel_sum(np.where(w > 0, w * hi_x, w * lo_x), stage.kind))
        low = min(b + _channel_sum(np.where(w > 0, w * lo_x, w * hi_x), stage.kind))
        l1 = _channel_l1(w_raw, stage.kind)
        bound = a2q_bound(b_raw, cfg)
        rows.append({"layer": stage.name, "acc_bits": cfg.acc_bits, "acc_low": int(low), "acc_high": int(high),
                     "safe": bool(cfg.acc_min <= low and high <= cfg.acc_max),
                     "range_used": float(max(high / cfg.acc_max, low / cfg.acc_min)),
                     "channels_over_bound": int(np.count_nonzero(l1 > bound))})
    return rows


# --- the fine-tuning run ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FineTune:
    """How to fine-tune to a config: ``epochs``, ``lr`` (None: the model's training lr / 10, as
    Han et al. retrain), ``seed`` (mini-batch order), ``acc_aware`` (A2Q projection after every
    step), ``simulate_acc`` (the config's wrap/clip accumulator in the forward; False: unbounded),
    ``sim_seed`` (the simulator's stochastic-rounding seed, as ``fxpsim eval --seed``),
    ``batch_size`` (None: the model's), ``threads`` (BLAS), ``progress`` (bars)."""

    epochs: int = 3
    lr: float | None = None
    seed: int = 0
    acc_aware: bool = False
    simulate_acc: bool = True
    sim_seed: int = 0
    batch_size: int | None = None
    threads: int = 1
    progress: bool = False

    def __post_init__(self) -> None:
        check(isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 1,
              f"epochs={self.epochs!r} must be a whole number >= 1: fine-tuning runs at least one epoch")
        check(self.lr is None or (isinstance(self.lr, (int, float)) and 0 < self.lr < 1),
              f"lr={self.lr!r} must be in (0, 1), e.g. 1e-4 (None: the model's lr / 10)")
        check(self.batch_size is None or (isinstance(self.batch_size, int) and self.batch_size >= 1),
              f"batch_size={self.batch_size!r} must be a whole number >= 1 (None: the model's)")
        for name in ("seed", "sim_seed"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                  f"{name}={value!r} must be a whole number >= 0")

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """``base`` (how the model was trained) with this run's epochs, rate, seed and batch; no
        weight decay, no early stop (the best validation epoch is kept)."""
        return replace(base, epochs=self.epochs, lr=self.lr if self.lr is not None else base.lr / 10,
                       seed=self.seed, batch_size=self.batch_size or base.batch_size, threads=self.threads,
                       weight_decay=0.0, l1=0.0, patience=None)


@dataclass(frozen=True, eq=False)
class FineTuneResult:
    """The fine-tuned model, its training history, the validation accuracy of the integer run
    before and after (``kept_epoch`` 0: the starting weights were better and are kept) and the
    channels the A2Q projection rescaled over the run."""

    model: Model
    history: History
    start_val_accuracy: float
    val_accuracy: float
    kept_epoch: int
    rescaled_channels: int


@contextmanager
def numba_threads(threads: int):
    """At most ``threads`` Numba threads inside (the datapath kernels of the forward pass), as
    ``TrainConfig.threads`` limits BLAS: reproducible, and fastest on shared cores."""
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


class _ProjectHook:
    def __init__(self, network, config, seed):
        self.network, self.config, self.seed, self.rescaled = network, config, seed, 0

    def __call__(self) -> None:
        self.rescaled += a2q_project(self.network, self.config, self.seed)


def fine_tune(model: Model, config: NetworkConfig, splits, base: TrainConfig, run: FineTune,
              log=None) -> FineTuneResult:
    """Fine-tune a copy of ``model`` so that its integer run under ``config`` does better.

    ``splits = (x_train, y_train, x_val, y_val)`` preprocessed (the training split the model was
    trained on, never the test split); ``base`` its training settings. :func:`fit` trains the
    :class:`QATNetwork`; the validation accuracy it selects the best epoch by is the INTEGER run's.
    With ``run.acc_aware`` the weights are projected onto the A2Q bound before training and after
    every step. Deterministic for ``run.seed`` (one BLAS thread).
    """
    x_tr, y_tr, x_val, y_val = splits
    check(len(x_val) > 0, "fine-tuning needs a validation split (it keeps the best epoch of the integer run): "
                          "give the model's x_val, y_val")
    if run.acc_aware:
        _check_acc_aware(config)
    network = type(model.network).from_config(model.network.to_config())
    network.load_state_dict(model.network.state_dict())
    qnet = QATNetwork(network, config, seed=run.sim_seed, simulate_acc=run.simulate_acc)
    cfg = run.train_config(base)
    hook = _ProjectHook(network, config, run.sim_seed) if run.acc_aware else None
    with threadpool_limits(limits=run.threads, user_api="blas"), numba_threads(run.threads):
        if hook is not None:
            hook()
        start_state = network.state_dict()
        start_val = evaluate(qnet, x_val, y_val)[1]
        history = fit(qnet, x_tr, y_tr, cfg, x_val, y_val, progress=run.progress, log=log, after_step=hook)
    kept = history.best_epoch
    val_acc = history.epochs[kept - 1]["val_accuracy"]
    if start_val > val_acc:  # no epoch beat the starting weights on the validation split
        network.load_state_dict(start_state)
        kept, val_acc = 0, start_val
    metadata = dict(model.metadata)
    metadata["finetune"] = {
        "config": [c.to_dict() for c in config], **{k: v for k, v in asdict(run).items() if k != "progress"},
        "lr": cfg.lr, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer,
        "start_val_accuracy": float(start_val), "val_accuracy": float(val_acc), "kept_epoch": kept,
        "rescaled_channels": hook.rescaled if hook is not None else 0,
        "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in e.items() if k != "seconds"}
                    for e in history.epochs],
    }
    return FineTuneResult(Model(network, model.preprocess, metadata), history, float(start_val), float(val_acc),
                          kept, hook.rescaled if hook is not None else 0)
