"""A compiled plan: one config on one network, checked and quantized once, run per image (issue 18).

:class:`Plan` does what :meth:`~fxpsim.simulate.Simulator.simulate` does per call once, when it
is built: the config checked against the model (``Simulator.check_config``), the weights and
biases quantized by the Simulator's own ``stage_params`` (A2Q, ``fmt_bias`` and the engine's
``prepare`` included), the operands checked as the engine would (``check_operands``: the
``ideal`` int64 bound too), and flat int64 buffers allocated for ``max_batch`` images. A call
then runs one Numba kernel per step (:mod:`fxpsim.datapath.plan_kernels`): input
preprocessing and quantization, per stage the conversion from the previous ``fmt_y``, the
kernel with its requantization and fused ReLU, the integer post ops, and the logits. No
float trace and no statistics: ``stats=True`` asks the Simulator for them (a
:class:`~fxpsim.simulate.SimResult`).

Bit-identical to ``Simulator.simulate(x, config, batch_size=plan.max_batch)`` (DESIGN.md's
stochastic draws count over a batch, so with stochastic rounding the batches must match;
every other rounding gives the same results at any batch size). A step without a kernel
runs the Simulator's own code for that step only: a stage on another engine than ``dense``
or with ``order="tree"`` (``Simulator.run_kernel``), tanh/sigmoid and stochastic average
pooling over a window that is not a power of two (:func:`~fxpsim.simulate.post.post_int`),
a conversion shifting more than 62 bits (:func:`~fxpsim.qformat.convert`); :attr:`Plan.fallbacks`
names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np

from ..config import LayerConfig, NetworkConfig
from ..datapath import dense as dense_kernels
from ..datapath import plan_kernels as pk
from ..datapath.core import check_operands, check_requantize_args, conv_geometry, max_abs_raw, order_permutation
from ..datapath.engines import DenseEngine
from ..datapath.jit import term_args
from ..errors import FxpsimError, check
from ..graph.geometry import conv_out_size
from ..qformat import MAX_WIDTH, Overflow, QFormat, Rounding, convert, dequantize, quantize
from .post import post_int

__all__ = ["LayerOperands", "Plan", "PlanOutput", "lane_plan", "layer_operands", "seed_words"]

MAX_PLAN_BYTES = 1 << 30
"""Most memory a plan's two activation buffers may take (max_batch x the largest activation)."""
PARALLEL_MACS = 1 << 21
"""MACs of one step's batch from which its kernel runs on Numba's threads (below, waking them costs
more than they save)."""
_I64_LIMIT = 1 << 63
_LOGIT_FRAC = (-900, 1000)
"""fmt_y frac_bits whose dequantized raw values are normal doubles (or 0): the logits kernel."""


@dataclass(frozen=True, slots=True, eq=False)
class PlanOutput:
    """One call of a :class:`Plan`: the last layer's ``raw`` outputs (its fmt_y), their ``logits``
    (dequantized) and ``predictions`` (argmax); for one image without a batch axis.
    ``accuracy`` when labels were given."""

    raw: np.ndarray
    logits: np.ndarray
    predictions: np.ndarray | int
    accuracy: float | None = None


def seed_words(seed) -> np.ndarray:
    """The stochastic seed as the kernels take it: ``[seed mod 2**64]`` as uint64 (None: 0)."""
    return np.array([(seed or 0) % (1 << 64)], dtype=np.uint64)


@dataclass(frozen=True, slots=True, eq=False)
class LayerOperands:
    """One Dense/Conv2D lowered for :func:`~fxpsim.datapath.plan_kernels.dense_step` /
    :func:`~fxpsim.datapath.plan_kernels.conv_step` (their docstrings name the layouts)."""

    w: np.ndarray
    bias: np.ndarray
    perm: np.ndarray
    accp: np.ndarray
    req: np.ndarray
    taps: np.ndarray | None = None
    geo: np.ndarray | None = None


def layer_operands(cfg: LayerConfig, w, b, relu: bool, x, seed=None, stride: int = 1,
                   padding: int = 0) -> LayerOperands:
    """Raw weights ``w`` and bias ``b`` of a layer (as the dense engine takes them) lowered for
    the plan kernels, after the engine's own checks on them (:func:`~fxpsim.datapath.core.
    check_operands` with ``x``, an input of the layer's shape: the weight and bias ranges, the
    ``ideal`` int64 bound; :func:`~fxpsim.datapath.core.check_requantize_args`).

    FL_acc > FL_w + FL_x shifts the weights left (exact); FL_acc < FL_w + FL_x or
    ``product="cast"`` takes the knob path (each product rounded, cast); ``strided:RF`` and
    ``channels-last:C[+strided:RF]`` permute the rows (conv: the taps) into the layer's order; the registers' lane and addition come
    from :func:`lane_plan`."""
    check(cfg.order != "tree", f"layer {cfg.name}: order=tree has no plan kernel: the plan runs it on the "
                               "Simulator's engine (Plan.fallbacks)")
    x = np.asarray(x)
    conv = x.ndim == 4
    _, w_raw, bias = check_operands(x, w, b, cfg, conv=conv)
    check_requantize_args(cfg, "relu" if relu else "none", seed)
    wm = np.asarray(w_raw, np.int64)
    if conv:
        f, c, kh, kw = wm.shape
        wm = wm.reshape(f, -1).T  # rows in tap order channel -> row -> column
    k = wm.shape[0]
    d = cfg.product_shift
    if d > 0:
        wm = wm << np.int64(d)  # exact: LayerConfig bounds the shifted product width
    perm = order_permutation(cfg, k)
    perm = np.arange(k, dtype=np.int64) if perm is None else perm.astype(np.int64)
    wm = wm[perm]
    knob = d < 0 or (cfg.product == "cast" and cfg.overflow is not Overflow.IDEAL)
    lane, add, endwrap = lane_plan(cfg, k, max_abs_raw(cfg.fmt_x), int(np.abs(wm).max(initial=0)),
                                   int(np.abs(bias).max(initial=0)), knob)
    wm, bias = wm.astype(lane), bias.astype(lane)
    accp = pk.acc_params(cfg.acc_min, cfg.acc_max, cfg.overflow.code, add, knob and cfg.product == "cast",
                         endwrap, term_args(min(d, 0), cfg.product_rounding.code))
    req = pk.req_params(cfg.shift, cfg.rounding.code, cfg.fmt_y.raw_min, cfg.fmt_y.raw_max,
                        cfg.output_overflow is Overflow.WRAP, relu)
    if not conv:
        return LayerOperands(np.ascontiguousarray(wm), bias, perm, accp, req)
    oh, ow = conv_geometry(x.shape, w_raw.shape, stride, padding)
    taps = np.stack(np.unravel_index(perm, (c, kh, kw)), axis=1).astype(np.int64)
    geo = np.array([*x.shape[1:], oh, ow, stride, padding], np.int64)
    return LayerOperands(np.ascontiguousarray(wm.T), bias, perm, accp, req, taps, geo)


_LANES = ((np.int16, 16), (np.int32, 32))


def lane_plan(cfg: LayerConfig, k: int, max_x: int, max_w: int, max_b: int, knob: bool):
    """``(dtype, addition, endwrap)`` of a layer's registers (:data:`~fxpsim.datapath.plan_kernels.ADDS`):
    the narrowest lane (PERF-NOTES: int16 -> int32 -> int64) that holds every operand
    (``max_x``, ``max_w``: largest |raw|, weights as shifted; ``max_b``: |bias|) and keeps each
    addition exact:

    - clip: ``acc + p`` inside the lane, i.e. ``max_x max_w <= 2**(L-1) - 2**(BW_acc-1)``
      (a clamp to [lo, hi]), or BW_acc = L with the product in the lane (the lane's saturating add);
    - wrap: BW_acc <= L, plain adds modulo 2**L wrapped to BW_acc once at the end (the low BW_acc
      bits of a sum do not depend on the higher ones); in int64 only when every exact partial
      sum fits it, else wrapped after every addition;
    - ideal: every exact partial sum (``max_b + K max_x max_w``) inside the lane;
    - the knob path (products rounded or cast on their own): int64.
    """
    p, bw = max_x * max_w, cfg.acc_bits
    if knob:
        return np.int64, "knob", False
    for dt, bits in _LANES:
        top = (1 << (bits - 1)) - 1
        if max(max_x, max_w, max_b) > top:
            continue
        if cfg.overflow is Overflow.CLIP:
            if bw == bits and p <= top:
                return dt, "sat", False
            if bw < bits and p <= top + 1 - (1 << (bw - 1)):
                return dt, "clamp", False
        elif cfg.overflow is Overflow.WRAP:
            if bw <= bits:
                return dt, "plain", True
        elif max_b + k * p <= top:
            return dt, "plain", False
    if cfg.overflow is Overflow.WRAP:
        return (np.int64, "plain", True) if max_b + k * p < _I64_LIMIT else (np.int64, "mask", False)
    return np.int64, ("clamp" if cfg.overflow is Overflow.CLIP else "plain"), False


class Plan:
    """``config`` on ``sim``'s network (a :class:`~fxpsim.simulate.Simulator`), ready to run
    (module docstring); ``plan(x)`` takes one image (the model's input shape) or a batch of
    them. ``parallel``: steps of at least :data:`PARALLEL_MACS` MACs per batch run on Numba's
    threads (False: one thread). One call at a time: the buffers are the plan's."""

    def __init__(self, sim, config: NetworkConfig, max_batch: int = 256, parallel: bool = True):
        check(isinstance(config, NetworkConfig),
              f"config {type(config).__name__} is not a NetworkConfig: build one with "
              "fxpsim.Config.uniform(...) or NetworkConfig.load(path)")
        check(isinstance(max_batch, Integral) and not isinstance(max_batch, bool) and max_batch >= 1,
              f"max_batch={max_batch!r} is not a whole number >= 1: give the most images one call "
              "runs at once, e.g. max_batch=256")
        check(isinstance(parallel, (bool, np.bool_)), f"parallel={parallel!r} is not a bool: True runs large "
                                                      "batches on Numba's threads, False on one")
        sim.check_config(config)
        self.sim, self.config, self.max_batch = sim, config, int(max_batch)
        self.parallel = bool(parallel)
        self.seed = sim.seed
        self.input_shape = tuple(int(d) for d in sim.network.shapes[0])
        self._seeds = seed_words(sim.seed)
        self.fallbacks: list[str] = []
        """The steps that run the Simulator's code instead of a kernel (``stage: what``)."""
        if any(c.rounding is Rounding.STOCHASTIC for c in config):
            check_requantize_args(next(c for c in config if c.rounding is Rounding.STOCHASTIC), "none", sim.seed)
        self._shapes = [self.input_shape]  # per image, after each step
        self._specs = []  # (builder, per-image output shape) filled by the _add_* methods
        self._build_steps()
        size = max(int(np.prod(s)) for s in self._shapes)
        need = 2 * self.max_batch * size * 8
        check(need <= MAX_PLAN_BYTES,
              f"max_batch={self.max_batch} x {size} values per image need {need / 2**20:.0f} MiB of buffers "
              f"(at most {MAX_PLAN_BYTES >> 20} MiB): give a smaller max_batch")
        self._bufs = (np.empty(self.max_batch * size, np.int64), np.empty(self.max_batch * size, np.int64))
        self._steps = []
        cur = 0
        for build in self._specs:
            step, cur = build(cur)
            self._steps.append(step)
        self._out = self._bufs[cur]
        self._input_step()
        last = config[-1].fmt_y
        self._n_out = int(np.prod(self._shapes[-1]))
        self._fmt_out = last
        self._fast_logits = _LOGIT_FRAC[0] <= last.frac_bits <= _LOGIT_FRAC[1]

    # --- building ------------------------------------------------------------------------------
    def _shape(self) -> tuple[int, ...]:
        return self._shapes[-1]

    def _push(self, build, shape) -> None:
        """One step: ``build(src buffer index) -> ((fn, args), dst buffer index)``; ``shape`` per image."""
        self._specs.append(build)
        self._shapes.append(tuple(int(d) for d in shape))

    def _buf(self, i: int) -> np.ndarray:
        return self._bufs[i]

    def _build_steps(self) -> None:
        config, sim = self.config, self.sim
        for i, cfg in enumerate(config):
            if i > 0 and config[i - 1].fmt_y != cfg.fmt_x:
                self._add_convert(config[i - 1].fmt_y, cfg.fmt_x, cfg.rounding, sim.stages[i].name)
            scfg = sim.stage_config(i, cfg)
            self._add_kernel(i, scfg)
            for op, layer in sim.stages[i].post:
                self._add_post(op, layer, scfg, sim.stages[i].name)

    def _fallback(self, what: str, fn, shape) -> None:
        """A step that runs ``fn(raw array (m, *shape in))`` in NumPy, result written to the other buffer."""
        self.fallbacks.append(what)
        shape_in = self._shape()
        n_in = int(np.prod(shape_in))

        def build(src):
            a, b = self._buf(src), self._buf(1 - src)

            def run(m):
                out = np.asarray(fn(a[: m * n_in].reshape((m,) + shape_in)))
                b[: out.size] = out.reshape(-1)

            return (run, None, 0, ()), 1 - src

        self._push(build, shape)

    def _kernel_step(self, fn, args, shape, in_place: bool = False, parallel=None, macs: int = 0) -> None:
        """A Numba step ``fn(m, src, dst, *args)`` (``in_place``: ``fn(m, src, *args)``); ``parallel``,
        the same on Numba's threads, runs batches of at least :data:`PARALLEL_MACS` MACs."""
        def build(src):
            bufs = (self._buf(src),) if in_place else (self._buf(src), self._buf(1 - src))
            return (fn, parallel, macs, (*bufs, *args)), src if in_place else 1 - src

        self._push(build, shape)

    def _add_convert(self, src: QFormat, dst: QFormat, rounding: Rounding, name: str) -> None:
        """:func:`fxpsim.qformat.convert` from the previous fmt_y to this layer's fmt_x."""
        s = src.frac_bits - dst.frac_bits
        shape = self._shape()
        if s > MAX_WIDTH:
            self._fallback(f"{name}: conversion {src} -> {dst}",
                           lambda v: convert(v, src, dst, rounding, self.seed), shape)
            return
        k = max(-s, 0)
        lo, hi = -((-dst.raw_min) >> k), dst.raw_max >> k
        conv = np.array([s, rounding.code, dst.raw_min, dst.raw_max, lo, hi], np.int64)
        self._kernel_step(pk.convert_step, (int(np.prod(shape)), conv, self._seeds), shape)

    def _fast_engine(self, i: int, cfg: LayerConfig) -> str | None:
        """Why stage ``i`` runs on the Simulator's engine rather than a plan kernel (None: it does not)."""
        engine = self.sim.engines[cfg.engine]
        if not (isinstance(engine, DenseEngine) and engine.dense is dense_kernels.dense
                and engine.conv2d is dense_kernels.conv2d):
            return f"engine {cfg.engine}"
        if cfg.order == "tree":
            return "order tree"
        return None

    def _add_kernel(self, i: int, cfg: LayerConfig) -> None:
        """Stage ``i``'s Dense/Conv2D with requantization and fused ReLU (or its engine)."""
        stage, sim = self.sim.stages[i], self.sim
        w, b = sim.stage_params(i, cfg)
        shape_in = self._shape()
        x0 = np.zeros((1,) + (shape_in if stage.kind == "conv2d" else (int(np.prod(shape_in)),)), np.int64)
        why = self._fast_engine(i, cfg)
        if stage.kind == "conv2d":
            check(len(shape_in) == 3, f"layer {stage.name} is a Conv2D but its input is {shape_in} per image, "
                                      "not (channels, height, width): the network's shapes are inconsistent")
            oh, ow = conv_geometry(x0.shape, stage.W.shape, stage.stride, stage.padding)
            shape = (stage.out_channels, oh, ow)
        else:
            shape = (stage.out_channels,)
        if getattr(stage, "binary", None) is not None and stage.out_shape is not None:
            shape = stage.out_shape  # a BNN stage (engine xnor) pools, and may flatten, inside its engine
        if why is not None:
            self._fallback(f"{stage.name}: {why}", lambda v: sim.run_kernel(i, v, w, b, cfg).y, shape)
            return
        ops = layer_operands(cfg, w, b, stage.relu, x0, self.seed, stage.stride, stage.padding)
        macs = stage.fan_in * int(np.prod(shape))
        if ops.taps is not None:
            self._kernel_step(pk.conv_step, (ops.w, ops.bias, ops.taps, ops.geo, ops.accp, ops.req, self._seeds),
                              shape, parallel=pk.conv_step_parallel, macs=macs)
        else:
            self._kernel_step(pk.dense_step, (ops.w, ops.bias, ops.perm, ops.accp, ops.req, self._seeds), shape,
                              parallel=pk.dense_step_parallel, macs=macs)

    def _add_post(self, op: str, layer, cfg: LayerConfig, name: str) -> None:
        """One integer op after the kernel (:func:`~fxpsim.simulate.post.post_int`)."""
        shape = self._shape()
        if op == "flatten":
            self._shapes.append((int(np.prod(shape)),))  # flat buffers: nothing to do
            return
        if op == "relu":
            self._kernel_step(pk.relu_step, (int(np.prod(shape)),), shape, in_place=True)
            return
        if op in ("maxpool2d", "avgpool2d"):
            k = int(layer.size)
            st = int(getattr(layer, "stride", None) or k)
            oh, ow = conv_out_size(shape[1], k, st), conv_out_size(shape[2], k, st)
            geo = [*shape, k, st, oh, ow]
            out = (shape[0], oh, ow)
            n = k * k
            pow2 = n & (n - 1) == 0
            if op == "maxpool2d" or pow2 or cfg.rounding is not Rounding.STOCHASTIC:
                geo += [op == "avgpool2d", cfg.rounding.code, n.bit_length() - 1 if pow2 else -1]
                self._kernel_step(pk.pool_step, (np.array(geo, np.int64), self._seeds), out)
                return
            what = f"{name}: stochastic avgpool2d over {n} values"
        else:
            out, what = shape, f"{name}: {op}"
        self._fallback(what, lambda v: post_int(op, layer, v, cfg.fmt_y, cfg, self.seed), out)

    def _input_step(self) -> None:
        """The first layer's quantization of the (preprocessed) float input."""
        cfg = self.config[0]
        fmt = cfg.fmt_x
        e = int(np.prod(self.input_shape))
        pre = self.sim.preprocess
        if pre is not None:
            try:
                mean = np.ascontiguousarray(np.broadcast_to(pre.mean, self.input_shape), np.float32).reshape(-1)
                std = np.ascontiguousarray(np.broadcast_to(pre.std, self.input_shape), np.float32).reshape(-1)
            except ValueError:
                raise FxpsimError(f"the preprocessing's mean {pre.mean.shape} does not fit the network input "
                                  f"{self.input_shape}: re-save the model with fxpsim train") from None
        else:
            mean = std = np.zeros(e, np.float32)
        self._mean, self._std = mean, std
        self._fq = np.array([fmt.frac_bits, fmt.raw_min, fmt.raw_max, cfg.rounding.code], np.int64)

    # --- running -------------------------------------------------------------------------------
    def __call__(self, x, y=None, *, prepared: bool = False, stats: bool = False,
                 prefix_stats: bool = False):
        """Raw outputs, logits and predictions of ``x`` (one image or a batch; dataset inputs, or
        the float network input when ``prepared``) as a :class:`PlanOutput`. ``stats`` (or
        ``prefix_stats``): the Simulator's :class:`~fxpsim.simulate.SimResult` instead, per-layer
        statistics and the float model's accuracy with it, on the same batches."""
        if stats or prefix_stats:
            return self.sim.simulate(x, self.config, y, self.max_batch, prepared, prefix_stats)
        x = np.asarray(x)
        one = x.shape == self.input_shape
        if one:
            x = x[None]
        n = len(x) if x.ndim else 0
        if x.shape[1:] != self.input_shape or x.dtype.kind not in "biuf" or n == 0:
            self._refuse(x)  # the messages only on the slow path: an f-string costs ~1 us
        flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
        raw = np.empty((n, self._n_out), np.int64)
        logits = np.empty((n, self._n_out), np.float64)
        pred = np.empty(n, np.int64)
        e = flat.size // n
        for lo in range(0, n, self.max_batch):
            m = min(self.max_batch, n - lo)
            self._run(m, flat[lo * e:(lo + m) * e], prepared, raw[lo:lo + m], logits[lo:lo + m], pred[lo:lo + m])
        acc = None if y is None else float(np.mean(pred == np.asarray(y)))
        if one:
            return PlanOutput(raw[0], logits[0], int(pred[0]), acc)
        return PlanOutput(raw, logits, pred, acc)

    def _refuse(self, x: np.ndarray) -> None:
        """The one-line error for an input ``x`` the plan does not take."""
        check(x.ndim == len(self.input_shape) + 1 and x.shape[1:] == self.input_shape,
              f"x has shape {x.shape}, not one image {self.input_shape} or a batch (n, "
              f"{', '.join(map(str, self.input_shape))}): pass the model's inputs")
        check(x.dtype.kind in "biuf", f"x has dtype {x.dtype}, not numbers: pass the images as a numeric array")
        check(len(x) > 0, "no input samples to simulate")

    def _run(self, m: int, xf: np.ndarray, prepared: bool, raw, logits, pred) -> None:
        """Rows ``xf`` (flat float64) of one batch through every step."""
        first = self._bufs[0]
        pre = self.sim.preprocess is not None and not prepared
        if pk.quantize_input(m, xf, self._mean, self._std, pre, self._fq, self._seeds, first):
            # NaN/inf (the Simulator's error) or an extreme scaling: the NumPy path, exactly
            h = xf.reshape((m,) + self.input_shape)
            h = h if prepared else self.sim.prepare(h)
            cfg = self.config[0]
            first[: h.size] = quantize(h, cfg.fmt_x, cfg.rounding, "clip", self.seed).reshape(-1)
        threads = PARALLEL_MACS if self.parallel else _I64_LIMIT
        for fn, parallel, macs, args in self._steps:
            (parallel if parallel is not None and m * macs >= threads else fn)(m, *args)
        if self._fast_logits:
            pk.logits_step(m, self._out, self._n_out, self._fmt_out.frac_bits, raw, logits, pred)
        else:
            raw[...] = self._out[: m * self._n_out].reshape(m, -1)
            logits[...] = dequantize(raw, self._fmt_out)
            pred[...] = logits.argmax(axis=1)
