"""Run a trained network entirely on the integer datapath (Judd et al., ICLR 2016).

The layer graph is cut into *stages*, one per compute layer (Dense or
Conv2D): the compute layer, a BatchNorm right after it folded into its
weights and bias, a ReLU right after those fused into the kernel, then the
integer operations up to the next compute layer (pooling, flatten, other
activations). Each stage takes a :class:`~fxpsim.config.LayerConfig`.

In a stage, on integers only: weights are quantized to ``fmt_w``, the bias
into the accumulator format (BW_acc bits, FL_acc = FL_w + FL_x; saturated
there, as a bias register would be), every MAC goes through the
accumulator with the layer's overflow mode, the accumulator is requantized
to ``fmt_y`` and the activation applied, on the engine the config names
(:mod:`fxpsim.datapath.engines`: dense, sparse, bitserial). Max pooling
is exact on integers; average pooling sums and divides with the layer's
rounding; tanh and sigmoid are look-up tables (dequantize, evaluate,
quantize to ``fmt_y``). The logits are dequantized and the argmax taken:
softmax, being monotone, runs in float at the end. Between stages, data
in one layer's ``fmt_y`` is converted to the next layer's ``fmt_x`` by a
rounding shift and saturation when the two differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .config import LayerConfig, NetworkConfig
from .constraints import LayerRanges, a2q_weights
from .datapath.engines import ENGINES, DenseEngine, EngineResult
from .errors import FxpsimError, check
from .network import pool_reduce
from .qformat import (QFormat, Rounding, convert, dequantize, int_bits_for,
                      quantize, shift_round)

COMPUTE_KINDS = ("dense", "conv2d")
_PASS_KINDS = ("dropout",)


@dataclass(frozen=True)
class Stage:
    """One compute layer with what is folded/fused into it and what follows."""

    name: str
    kind: str  # "dense" | "conv2d"
    W: np.ndarray  # float64, BatchNorm folded in
    b: np.ndarray
    stride: int
    padding: int
    relu: bool  # ReLU fused into the kernel
    post: tuple  # integer ops after the kernel: (kind, layer)
    layers: tuple[int, int, int]  # network indices: start, end of fused part, end

    @property
    def fan_in(self) -> int:
        """K: products summed per output (dense n_in; conv C*kh*kw)."""
        return int(self.W.shape[0] if self.kind == "dense" else np.prod(self.W.shape[1:]))


def _fold_batchnorm(W, b, bn, kind):
    """Fold inference BatchNorm y = gamma (z - mean) / sqrt(var + eps) + beta into W, b."""
    scale = bn.params["gamma"] / np.sqrt(bn.buffers["running_var"] + bn.eps)
    shift = bn.params["beta"] - bn.buffers["running_mean"] * scale
    if kind == "dense":
        return W * scale[None, :], b * scale + shift
    return W * scale[:, None, None, None], b * scale + shift


def build_stages(network) -> list[Stage]:
    """Cut ``network`` into integer stages (see the module docstring)."""
    layers = list(network.layers)
    binary = [i for i, layer in enumerate(layers) if layer.kind in ("bdense", "bconv2d", "sign")]
    check(not binary, f"layer {binary[0] if binary else ''} is binary/ternary: run BNN models with "
                      "fxpsim.binary.netsim.BnnSimulator (`fxpsim binary`), not the fixed-point stages")
    stages: list[Stage] = []
    counters = {"dense": 0, "conv2d": 0}
    i = 0
    while i < len(layers) and layers[i].kind != "conv2d" and layers[i].kind != "dense":
        check(layers[i].kind in ("flatten",) + _PASS_KINDS,
              f"layer {i} ({layers[i].kind}) comes before the first Dense/Conv2D and has no integer "
              "mapping there: fold it into the preprocessing")
        i += 1
    check(i < len(layers), "the model has no Dense or Conv2D layer to run on the integer datapath")
    while i < len(layers):
        start, comp = i, layers[i]
        kind = comp.kind
        counters[kind] += 1
        name = f"{'fc' if kind == 'dense' else 'conv'}{counters[kind]}"
        W = np.asarray(comp.params["W"], dtype=np.float64)
        b = np.asarray(comp.params["b"], dtype=np.float64)
        i += 1
        while i < len(layers) and layers[i].kind in _PASS_KINDS:
            i += 1
        if i < len(layers) and layers[i].kind == "batchnorm":
            W, b = _fold_batchnorm(W, b, layers[i], kind)
            i += 1
        relu = i < len(layers) and layers[i].kind == "relu"
        if relu:
            i += 1
        fused_end = i
        post = []
        while i < len(layers) and layers[i].kind not in COMPUTE_KINDS:
            lk = layers[i].kind
            if lk in ("relu", "tanh", "sigmoid", "maxpool2d", "avgpool2d", "flatten"):
                post.append((lk, layers[i]))
            elif lk not in _PASS_KINDS:
                raise FxpsimError(
                    f"layer {i} ({lk}) after {name} has no integer mapping: fxpsim folds BatchNorm "
                    "only into the Dense/Conv2D right before it and runs relu/tanh/sigmoid/pooling/"
                    "flatten on integers")
            i += 1
        start = start if stages else 0  # the float trace runs the leading flatten/dropout too
        stages.append(Stage(name, kind, W, b, int(getattr(comp, "stride", 1)),
                            int(getattr(comp, "padding", 0)), relu, tuple(post), (start, fused_end, i)))
    return stages


@dataclass(frozen=True, slots=True)
class LayerStats:
    """What one stage did on the datapath over a batch of inputs."""

    layer: str
    fan_in: int
    additions: int
    overflow_count: int
    outputs: int
    outputs_affected: int
    max_abs_acc: int
    acc_bits_needed: int
    out_min: float
    out_max: float
    abs_error_sum: float  # sum |y - y_hat| against the float model at the kernel output
    mean_abs_error: float
    outputs_out_of_format: int  # float-model outputs outside fmt_y's range (saturated there)


@dataclass
class SimResult:
    """Predictions, logits and per-layer statistics of one simulation."""

    predictions: np.ndarray
    logits: np.ndarray
    layer_stats: list[LayerStats]
    accuracy: float | None = None
    float_accuracy: float | None = None
    engine_extras: list = field(default_factory=list)
    """Per stage, its engine's extras summed over the batches (sparse: SparseLayerStats; bitserial:
    BitSerialCycles; dense: None)."""

    def stats_table(self):
        import pandas as pd

        return pd.DataFrame([{f: getattr(s, f) for f in LayerStats.__slots__} for s in self.layer_stats])


def convert_raw(raw: np.ndarray, src: QFormat, dst: QFormat, rounding=Rounding.NEAREST_EVEN,
                seed: int | None = None) -> np.ndarray:
    """Re-express raw values of ``src`` in ``dst``: rounding or exact left shift, then
    saturation, never a wrap (:func:`fxpsim.qformat.convert`)."""
    return convert(raw, src, dst, rounding, seed)


def _div_round(total: np.ndarray, n: int, rounding: Rounding, seed) -> np.ndarray:
    """Integer ``total / n`` with the layer's rounding (average pooling)."""
    if n & (n - 1) == 0:
        return shift_round(total, n.bit_length() - 1, rounding, seed)
    q = total // n
    rem = total - q * n  # 0 <= rem < n
    if rounding is Rounding.FLOOR:
        return q
    if rounding is Rounding.TOWARD_ZERO:
        return q + ((rem != 0) & (total < 0))
    if rounding is Rounding.NEAREST:
        return q + ((2 * rem > n) | ((2 * rem == n) & (total >= 0)))
    if rounding is Rounding.NEAREST_EVEN:
        return q + ((2 * rem > n) | ((2 * rem == n) & ((q & 1) == 1)))
    u = np.random.default_rng(seed).integers(0, n, size=np.shape(total))
    return q + (u < rem)


def _pool(x: np.ndarray, layer, ufunc) -> np.ndarray:
    size = int(layer.size)
    return pool_reduce(x, size, int(getattr(layer, "stride", None) or size), ufunc)


def _post_int(op: str, layer, raw: np.ndarray, fmt: QFormat, cfg: LayerConfig, seed) -> np.ndarray:
    """One integer operation after the kernel, on raw values of ``fmt``."""
    if op == "relu":
        return np.maximum(raw, 0)
    if op == "flatten":
        return raw.reshape(raw.shape[0], -1)
    if op == "maxpool2d":
        return _pool(raw, layer, np.maximum)
    if op == "avgpool2d":
        total = _pool(raw.astype(np.int64, copy=False), layer, np.add)  # sums never wrap
        return _div_round(total, int(layer.size) ** 2, cfg.rounding, seed)
    fn = np.tanh if op == "tanh" else (lambda v: 0.5 * (1.0 + np.tanh(0.5 * v)))  # stable sigmoid
    return quantize(fn(dequantize(raw, fmt)), fmt, cfg.rounding, "clip", seed)


class Simulator:
    """A network cut into integer stages, each run on the engine its config names.

    ``cfg.engine`` (dense | sparse | bitserial, :mod:`fxpsim.datapath.engines`)
    picks the datapath per stage; stage cutting, quantization, conversion
    between stages, pooling and the statistics are the same for all.
    ``backend`` swaps the dense engine's kernels (``fxpsim.kernels.reference``
    gives the Python-int twin). Searches reuse prefixes (:class:`Evaluator`).
    """

    def __init__(self, model, seed: int = 0, backend=None):
        self.backend = backend or kernels
        self.engines = dict(ENGINES, dense=DenseEngine(self.backend.dense, self.backend.conv2d))
        self.model = model
        self.network = getattr(model, "network", model)
        self.preprocess = getattr(model, "preprocess", None)
        self.stages = build_stages(self.network)
        self.seed = seed

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Dataset inputs -> the float network input (the model's preprocessing)."""
        x = np.asarray(x, dtype=np.float64)
        if self.preprocess is not None:
            x = np.asarray(self.preprocess.apply(x), dtype=np.float64)
        check(np.all(np.isfinite(x)), "input data contains NaN or inf: fix the data set")
        return x

    def check_config(self, config: NetworkConfig) -> None:
        """The config must name the model's compute layers, in order, on engines that run them."""
        check(len(config) == len(self.stages),
              f"the config has {len(config)} layers but the model has {len(self.stages)} compute "
              f"layers ({', '.join(self.names)}): make a config for this model")
        for i, (cfg, stage) in enumerate(zip(config, self.stages)):
            check(cfg.name == stage.name,
                  f"config layer {cfg.name!r} does not match the model's layer {stage.name!r} "
                  f"(model layers: {', '.join(self.names)})")
            engine = self.engines[self.stage_config(i, cfg).engine]
            check(stage.kind in engine.kinds,
                  f"layer {stage.name} is {stage.kind}, which engine {engine.name} does not run (it runs "
                  f"{', '.join(engine.kinds)}): give the layer another engine")

    # --- float reference -------------------------------------------------
    def float_trace(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per stage, the float model's (kernel output, stage output) on prepared ``x``."""
        layers = self.network.layers
        trace = []
        h = x
        for s in self.stages:
            for j in range(s.layers[0], s.layers[1]):
                h = np.asarray(layers[j].forward(h, training=False), dtype=np.float64)
            kernel_out = h
            for j in range(s.layers[1], s.layers[2]):
                h = np.asarray(layers[j].forward(h, training=False), dtype=np.float64)
            trace.append((kernel_out, h))
        return trace

    # --- integer datapath -------------------------------------------------
    def stage_config(self, i: int, cfg: LayerConfig) -> LayerConfig:
        """The config stage ``i`` runs under: ``cfg`` itself (a subclass may pin an engine)."""
        return cfg

    def quantized_params(self, i: int, cfg: LayerConfig) -> tuple[np.ndarray, np.ndarray]:
        """Raw weights in ``fmt_w`` and raw bias in the accumulator format of stage ``i``."""
        s = self.stages[i]
        if cfg.a2q:
            w, _ = a2q_weights(LayerRanges(s.name, s.W, s.b, s.kind, 0.0, 0.0), cfg.fmt_w, cfg.fmt_x,
                               cfg.acc_bits, cfg.rounding)
        else:
            w = quantize(s.W, cfg.fmt_w, cfg.rounding, "clip", self.seed)
        return w, quantize(s.b, cfg.fmt_bias, cfg.rounding, "clip", self.seed)

    def stage_params(self, i: int, cfg: LayerConfig):
        """Stage ``i``'s weights as its engine stores them (``prepare``) and its raw bias."""
        cfg = self.stage_config(i, cfg)
        w, b = self.quantized_params(i, cfg)
        return self.engines[cfg.engine].prepare(self.stages[i], w, cfg), b

    def run_kernel(self, i: int, x_raw: np.ndarray, w, b, cfg: LayerConfig) -> EngineResult:
        """Stage ``i``'s Dense/Conv2D on the engine ``cfg`` names: raw ``y``, ``acc``, ``stats``
        (:class:`~fxpsim.datapath.engines.EngineStats`, the engine's ``extras`` inside)."""
        return self.engines[cfg.engine].run(self.stages[i], x_raw, w, b, cfg, self.seed)

    def run_stage(self, i: int, x_raw: np.ndarray, cfg: LayerConfig, params=None):
        """Stage ``i`` on raw inputs in ``cfg.fmt_x``: (kernel output raw, stage output raw, stats)."""
        s = self.stages[i]
        w, b = params if params is not None else self.stage_params(i, cfg)
        cfg = self.stage_config(i, cfg)
        res = self.run_kernel(i, x_raw, w, b, cfg)
        out = res.y
        for op, layer in s.post:
            out = _post_int(op, layer, out, cfg.fmt_y, cfg, self.seed)
        return res.y, out, res.stats

    def simulate(self, x, config: NetworkConfig, y=None, batch_size: int = 2000,
                 prepared: bool = False) -> SimResult:
        """Run ``config`` on inputs ``x`` (labels ``y`` optional): predictions and stats."""
        return self._simulate(x, (config,), y, batch_size, prepared)[0][0]

    def compare(self, x, config: NetworkConfig, reference: NetworkConfig, y=None, batch_size: int = 2000,
                prepared: bool = False) -> Comparison:
        """``config`` and ``reference`` (e.g. the same formats on another engine) on the same inputs:
        both results and, per stage, how many raw kernel outputs are equal."""
        for a, b in zip(config, reference):
            check(a.fmt_y == b.fmt_y, f"layer {a.name}: output formats {a.fmt_y} and {b.fmt_y} differ: "
                                      "compare configs of the same output formats")
        (res, ref), equal = self._simulate(x, (config, reference), y, batch_size, prepared)
        stages = tuple(StageAgreement(s.name, cfg.engine, st.outputs, int(e))
                       for s, cfg, st, e in zip(self.stages, config, res.layer_stats, equal))
        return Comparison(res, ref, stages)

    def _simulate(self, x, configs, y, batch_size, prepared):
        """Each config on the same batches: its SimResult, and per stage the kernel outputs equal
        to the first config's."""
        for config in configs:
            self.check_config(config)
        n = len(x)
        check(n > 0, "no input samples to simulate")
        params = [[self.stage_params(i, cfg) for i, cfg in enumerate(c)] for c in configs]
        acc = [[_StatsAccumulator(s.name, s.fan_in) for s in self.stages] for _ in configs]
        equal = np.zeros(len(self.stages), np.int64)
        logits, float_logits = [[] for _ in configs], []
        for lo in range(0, n, batch_size):
            xb = x[lo:lo + batch_size]
            xf = xb if prepared else self.prepare(xb)
            trace = self.float_trace(xf)
            first = []
            for j, config in enumerate(configs):
                h = quantize(xf, config[0].fmt_x, config[0].rounding, "clip", self.seed)
                for i, cfg in enumerate(config):
                    if i > 0:
                        h = convert_raw(h, config[i - 1].fmt_y, cfg.fmt_x, cfg.rounding, self.seed)
                    kernel_y, h, stats = self.run_stage(i, h, cfg, params[j][i])
                    acc[j][i].add(stats, dequantize(kernel_y, cfg.fmt_y), trace[i][0], cfg.fmt_y)
                    if j == 0:
                        first.append(kernel_y)
                    else:
                        equal[i] += np.count_nonzero(kernel_y == first[i])
                logits[j].append(dequantize(h, config[-1].fmt_y).reshape(len(xb), -1))
            float_logits.append(trace[-1][1].reshape(len(xb), -1))
        float_logits = np.concatenate(float_logits)
        results = []
        for j, config in enumerate(configs):
            lg = np.concatenate(logits[j])
            pred = lg.argmax(axis=1)
            result = SimResult(pred, lg, [a.result(config[i]) for i, a in enumerate(acc[j])],
                               engine_extras=[a.extras for a in acc[j]])
            if y is not None:
                yy = np.asarray(y)
                result.accuracy = float(np.mean(pred == yy))
                result.float_accuracy = float(np.mean(float_logits.argmax(axis=1) == yy))
            results.append(result)
        return results, equal


@dataclass(frozen=True, slots=True)
class StageAgreement:
    """One stage of :meth:`Simulator.compare`: its engine, kernel outputs, and how many equal the reference's."""

    layer: str
    engine: str
    outputs: int
    outputs_equal: int


@dataclass(frozen=True)
class Comparison:
    """:meth:`Simulator.compare`: the run, the reference run and the per-stage agreement."""

    result: SimResult
    reference: SimResult
    stages: tuple[StageAgreement, ...]

    @property
    def logits_identical(self) -> bool:
        """True when every logit equals the reference's, bit for bit."""
        return bool(np.array_equal(self.result.logits, self.reference.logits))

    @property
    def images_differing(self) -> int:
        """Images with at least one logit that differs from the reference's."""
        return int(np.count_nonzero((self.result.logits != self.reference.logits).any(axis=1)))


class _StatsAccumulator:
    """Sums a stage's statistics (and its engine's extras) over batches."""

    def __init__(self, name: str, fan_in: int):
        self.name, self.fan_in = name, fan_in
        self.additions = self.overflows = self.outputs = self.affected = self.max_abs = 0
        self.extras = None
        self.lo, self.hi, self.err = np.inf, -np.inf, 0.0
        self.out_of_format = 0

    def add(self, stats, y_hat: np.ndarray, y: np.ndarray, fmt_y: QFormat) -> None:
        self.additions += int(stats.additions)
        self.overflows += int(stats.overflow_count)
        self.affected += int(stats.outputs_affected)
        self.max_abs = max(self.max_abs, int(stats.max_abs_acc))
        extras = getattr(stats, "extras", None)
        if extras is not None:
            self.extras = extras if self.extras is None else self.extras + extras
        self.outputs += int(y_hat.size)
        if y_hat.size:
            self.lo, self.hi = min(self.lo, float(y_hat.min())), max(self.hi, float(y_hat.max()))
        self.err += float(np.abs(y.reshape(y_hat.shape) - y_hat).sum())
        self.out_of_format += int(np.count_nonzero((y < fmt_y.min_value) | (y > fmt_y.max_value)))

    def result(self, cfg: LayerConfig) -> LayerStats:
        return LayerStats(self.name, self.fan_in, self.additions, self.overflows, self.outputs,
                          self.affected, self.max_abs, self.max_abs.bit_length() + 1,
                          self.lo, self.hi, self.err, self.err / max(self.outputs, 1), self.out_of_format)


def simulate(model, config: NetworkConfig, x, y=None, batch_size: int = 2000) -> SimResult:
    """Run ``model`` under ``config`` on dataset inputs ``x`` (see :class:`Simulator`)."""
    return Simulator(model).simulate(x, config, y, batch_size)


# --- profiling (Judd et al.: integer bits from observed ranges) -------------
@dataclass(frozen=True, slots=True)
class LayerProfile:
    """Observed ranges of one stage over a calibration set (float model)."""

    name: str
    fan_in: int
    max_abs_w: float
    max_abs_b: float
    max_abs_x: float  # the stage's input
    max_abs_y: float  # the kernel's output (after folded BN and fused ReLU)
    min_y: float
    max_abs_acc: float  # the pre-activation sum


def profile(sim: Simulator, x, prepared: bool = False) -> list[LayerProfile]:
    """Profile weights, inputs, outputs and pre-activations of every stage."""
    xf = x if prepared else sim.prepare(x)
    trace = sim.float_trace(xf)
    out = []
    h_in = xf
    for s, (kernel_out, stage_out) in zip(sim.stages, trace):
        pre = _pre_activation(s, h_in)
        out.append(LayerProfile(s.name, s.fan_in, float(np.abs(s.W).max()), float(np.abs(s.b).max()),
                                float(np.abs(h_in).max()), float(np.abs(kernel_out).max()),
                                float(kernel_out.min()), float(np.abs(pre).max())))
        h_in = stage_out
    return out


def _pre_activation(s: Stage, x: np.ndarray) -> np.ndarray:
    """The float sum W x + b (folded) of a stage, before its activation."""
    if s.kind == "dense":
        return x.reshape(len(x), -1) @ s.W + s.b
    from numpy.lib.stride_tricks import sliding_window_view

    pad = s.padding
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = s.W.shape[-1]
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s.stride, ::s.stride]
    return np.einsum("bchwij,fcij->bfhw", win, s.W, optimize=True) + s.b[None, :, None, None]


def data_ranges(prof: list[LayerProfile]) -> list[float]:
    """Max |value| of each data format: the network input, then each layer's output.

    Layer i's output format must hold its kernel's output (before pooling)
    and is also layer i+1's input format.
    """
    out = [prof[0].max_abs_x]
    for i, p in enumerate(prof):
        nxt = prof[i + 1].max_abs_x if i + 1 < len(prof) else 0.0
        out.append(max(p.max_abs_y, nxt))
    return out


def config_from_profile(prof: list[LayerProfile], weight_bits: int = 16, data_bits: int = 16,
                        acc_bits: int = 48, overflow="ideal", rounding="nearest-even",
                        margin_bits: int = 0) -> NetworkConfig:
    """Judd-style config: int bits from each profiled max |value|, the rest fraction bits.

    The output format of a layer is the input format of the next, as in
    Judd et al.'s one data format per layer; the last layer's output gets
    its own profiled range. ``margin_bits`` adds integer headroom.
    """
    data = [QFormat.from_width(data_bits, int_bits_for(m) + margin_bits) for m in data_ranges(prof)]
    layers = []
    for i, p in enumerate(prof):
        fmt_w = QFormat.from_width(weight_bits, int_bits_for(p.max_abs_w) + margin_bits)
        layers.append(LayerConfig(p.name, fmt_w, data[i], data[i + 1], acc_bits, overflow, rounding))
    return NetworkConfig(tuple(layers))


class Evaluator:
    """Accuracy of many configs on one calibration set, reusing unchanged prefixes.

    Searches change one layer at a time; the raw output of stages whose
    configs (and all earlier ones) are unchanged is kept in a cache of at
    most ``cache_mb`` megabytes (oldest entries leave first). A stage the
    cache serves returns the stats of the run that filled it, the engine's
    ``extras`` (cycles) inside: per calibration set, counted once.
    """

    def __init__(self, sim: Simulator, x, y, prepared: bool = False, cache_mb: float = 512):
        self.sim = sim
        self.x = x if prepared else sim.prepare(x)
        self.y = np.asarray(y)
        self.trace = sim.float_trace(self.x)
        self.float_accuracy = float(np.mean(self.trace[-1][1].reshape(len(self.y), -1).argmax(1) == self.y))
        self._cache: dict = {}
        self._params: dict = {}
        self.cache_bytes = int(cache_mb * 2**20)
        self._cached_bytes = 0
        self.evaluations = 0

    def _params_for(self, i: int, cfg: LayerConfig):
        """Stage ``i``'s weights as its engine stores them and its bias, cached on the whole frozen
        ``cfg`` (a2q, engine and options too)."""
        key = (i, cfg)
        if key not in self._params:
            self._params[key] = self.sim.stage_params(i, cfg)
        return self._params[key]

    def stage_outputs(self, config: NetworkConfig, upto: int | None = None):
        """Per stage up to ``upto``: (kernel output raw, stage output raw, stats)."""
        upto = len(config) if upto is None else upto
        outs = []
        h = None
        for i in range(upto):
            key = tuple(config.layers[: i + 1])
            hit = self._cache.get(key)
            if hit is None:
                if i == 0:
                    x_in = quantize(self.x, config[0].fmt_x, config[0].rounding, "clip", self.sim.seed)
                else:
                    x_in = convert_raw(h, config[i - 1].fmt_y, config[i].fmt_x, config[i].rounding,
                                       self.sim.seed)
                hit = self.sim.run_stage(i, x_in, config[i], self._params_for(i, config[i]))
                size = hit[0].nbytes + hit[1].nbytes
                while self._cache and self._cached_bytes + size > self.cache_bytes:  # oldest first
                    old = self._cache.pop(next(iter(self._cache)))
                    self._cached_bytes -= old[0].nbytes + old[1].nbytes
                self._cache[key] = hit
                self._cached_bytes += size
            outs.append(hit)
            h = hit[1]
        return outs

    def accuracy(self, config: NetworkConfig) -> float:
        """Top-1 accuracy of ``config`` on the calibration set."""
        self.evaluations += 1
        out = self.stage_outputs(config)[-1][1]
        logits = out.reshape(len(self.y), -1)  # raw: argmax needs no dequantization
        return float(np.mean(logits.argmax(axis=1) == self.y))

    def layer_error(self, config: NetworkConfig, i: int) -> float:
        """de Bruin's sum |y - y_hat| of stage ``i``'s kernel output vs the float model."""
        self.evaluations += 1
        kernel_y = self.stage_outputs(config, i + 1)[i][0]
        y_hat = dequantize(kernel_y, config[i].fmt_y)
        return float(np.abs(self.trace[i][0].reshape(y_hat.shape) - y_hat).sum())
