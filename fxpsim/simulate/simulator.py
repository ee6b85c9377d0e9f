"""Run a trained network entirely on the integer datapath (Judd et al., ICLR 2016).

Each :class:`~.stages.Stage` takes a :class:`~fxpsim.config.LayerConfig`.
In a stage, on integers only: weights are quantized to ``fmt_w`` (A2Q:
shrunk to the channel bound, :func:`fxpsim.constraints.a2q_weights`), the
bias to ``fmt_bias`` (by default the accumulator format, BW_acc bits,
FL_acc fraction bits; saturated there, as a bias register would be) and
then converted into the accumulator format (an exact shift with the layer's
rounding, then saturation: :func:`fxpsim.qformat.convert`), every
MAC goes through the accumulator with the layer's overflow mode, the
accumulator is requantized to ``fmt_y`` and the activation applied, on the
engine the config names (:mod:`fxpsim.datapath.engines`: dense, sparse,
bitserial); then the stage's integer post ops (:mod:`.post`). The logits
are dequantized and the argmax taken: softmax, being monotone, runs in
float at the end. Between stages, data in one layer's ``fmt_y`` is
converted to the next layer's ``fmt_x`` by a rounding shift and
saturation when the two differ (:func:`convert_raw`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..datapath import dense as dense_engine
from ..config import LayerConfig, NetworkConfig
from ..constraints import a2q_weights
from ..datapath.core import check_prefix_flag
from ..datapath.engines import ENGINES, DenseEngine, EngineResult
from ..errors import check
from ..qformat import QFormat, Rounding, convert, dequantize, quantize
from .plan import Plan
from .post import post_int
from .dag import dag_float_trace, run_dag_stage
from .stages import Stage, build_stages, node_stages

__all__ = ["Comparison", "LayerStats", "SimResult", "Simulator", "StageAgreement", "convert_raw", "simulate"]


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
    max_abs_prefix: int | None = None
    """DESIGN.md's max over outputs and every prefix of the exact running sum, bias first (what an
    exact clip register must hold), max over batches; None unless ``prefix_stats=True``."""
    cast_overflows: int = 0
    """Products that their cast into BW_acc changed (``product="cast"``), summed like
    ``overflow_count`` and kept out of it."""


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
        """One row per stage; the ``max_abs_prefix_lsb`` column only when it was asked for, the
        ``cast_overflows`` column only when some stage has one.

        Column names carry their unit (:data:`TABLE_COLUMNS`: ``max_abs_acc`` is
        ``max_abs_acc_lsb``, raw accumulator LSBs); the others are the fields'."""
        import pandas as pd

        cols = [f for f in LayerStats.__slots__
                if (f != "max_abs_prefix" or any(s.max_abs_prefix is not None for s in self.layer_stats))
                and (f != "cast_overflows" or any(s.cast_overflows for s in self.layer_stats))]
        return pd.DataFrame([{TABLE_COLUMNS.get(f, f): getattr(s, f) for f in cols} for s in self.layer_stats])


TABLE_COLUMNS = {"max_abs_acc": "max_abs_acc_lsb", "max_abs_prefix": "max_abs_prefix_lsb"}
""":meth:`SimResult.stats_table` column for a :class:`LayerStats` field whose name lacks its unit."""


def convert_raw(raw: np.ndarray, src: QFormat, dst: QFormat, rounding=Rounding.NEAREST_EVEN,
                seed: int | None = None) -> np.ndarray:
    """Re-express raw values of ``src`` in ``dst``: rounding or exact left shift, then
    saturation, never a wrap (:func:`fxpsim.qformat.convert`)."""
    return convert(raw, src, dst, rounding, seed)


class Simulator:
    """A network cut into integer stages, each run on the engine its config names.

    ``cfg.engine`` (dense | sparse | bitserial | xnor, :mod:`fxpsim.datapath.engines`)
    picks the datapath per stage; stage cutting, quantization, conversion
    between stages, pooling and the statistics are the same for all.
    ``backend`` swaps the dense engine's kernels (``fxpsim.datapath.reference``
    gives the Python-int twin). Searches reuse prefixes
    (:class:`~fxpsim.simulate.Evaluator`).
    """

    def __init__(self, model, seed: int = 0, backend=None):
        self.backend = backend or dense_engine
        self.engines = dict(ENGINES, dense=DenseEngine(self.backend.dense, self.backend.conv2d))
        self.model = model
        self.network = getattr(model, "network", model)
        self.preprocess = getattr(model, "preprocess", None)
        self.stages = build_stages(self.network)
        self.seed = seed
        self.is_dag = bool(getattr(self.network, "is_dag", False))
        self.node_owner = node_stages(self.network, self.stages) if self.is_dag else None

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

    def check_config(self, config: NetworkConfig, prefix_stats: bool = False) -> None:
        """The config must name the model's compute layers, in order, on engines that run them (and,
        with ``prefix_stats``, that give ``max_abs_prefix`` exactly)."""
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
            engine.check_stage(stage)
            if check_prefix_flag(prefix_stats):
                engine.check_prefix_stats(stage.name)

    # --- float reference -------------------------------------------------
    def float_trace(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per stage, the float model's (kernel output, stage output) on prepared ``x``."""
        if self.is_dag:
            return dag_float_trace(self, x)
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
        """Raw weights in ``fmt_w`` and raw bias in the accumulator format of stage ``i``: quantized
        to ``cfg.fmt_bias``, then converted into ``cfg.fmt_bias_acc`` (DESIGN.md; the same format
        by default, then the conversion is the identity)."""
        s = self.stages[i]
        if cfg.a2q:
            w, _ = a2q_weights(s, cfg.fmt_w, cfg.fmt_x, cfg.acc_bits, cfg.rounding, cfg.product_shift)
        else:
            w = quantize(s.W, cfg.fmt_w, cfg.rounding, "clip", self.seed)
        b = quantize(s.b, cfg.fmt_bias, cfg.rounding, "clip", self.seed)
        return w, convert(b, cfg.fmt_bias, cfg.fmt_bias_acc, cfg.rounding, self.seed)

    def stage_params(self, i: int, cfg: LayerConfig):
        """Stage ``i``'s weights as its engine stores them (``prepare``) and its raw bias."""
        cfg = self.stage_config(i, cfg)
        w, b = self.quantized_params(i, cfg)
        return self.engines[cfg.engine].prepare(self.stages[i], w, cfg), b

    def run_kernel(self, i: int, x_raw: np.ndarray, w, b, cfg: LayerConfig,
                   prefix_stats: bool = False) -> EngineResult:
        """Stage ``i``'s Dense/Conv2D on the engine ``cfg`` names: raw ``y``, ``acc``, ``stats``
        (:class:`~fxpsim.datapath.engines.EngineStats`, the engine's ``extras`` inside; with
        ``prefix_stats``, ``max_abs_prefix`` too)."""
        kw = {"prefix_stats": True} if prefix_stats else {}  # an engine of a plugin may not know it
        return self.engines[cfg.engine].run(self.stages[i], x_raw, w, b, cfg, self.seed, **kw)

    def run_stage(self, i: int, x_raw: np.ndarray, cfg: LayerConfig, params=None, prefix_stats: bool = False):
        """Stage ``i`` on raw inputs in ``cfg.fmt_x``: (kernel output raw, stage output raw, stats)."""
        s = self.stages[i]
        w, b = params if params is not None else self.stage_params(i, cfg)
        cfg = self.stage_config(i, cfg)
        res = self.run_kernel(i, x_raw, w, b, cfg, prefix_stats)
        return res.y, self.apply_post(i, res.y, cfg), res.stats

    def apply_post(self, i: int, y: np.ndarray, cfg: LayerConfig) -> np.ndarray:
        """Stage ``i``'s integer post-ops (pooling, ...) on its kernel output ``y`` in ``cfg.fmt_y``
        (``cfg``: the stage's config as :meth:`stage_config` gives it)."""
        out = y
        for op, layer in self.stages[i].post:
            out = post_int(op, layer, out, cfg.fmt_y, cfg, self.seed)
        return out

    def stage_input(self, i: int, config: NetworkConfig, xf, prev_out) -> np.ndarray:
        """A chain stage's raw input in ``config[i].fmt_x``: the prepared float input ``xf`` quantized
        (stage 0), else the previous stage's output ``prev_out`` converted from its ``fmt_y``."""
        cfg = config[i]
        if i == 0:
            return quantize(xf, cfg.fmt_x, cfg.rounding, "clip", self.seed)
        return convert_raw(prev_out, config[i - 1].fmt_y, cfg.fmt_x, cfg.rounding, self.seed)

    def require_chain(self, what: str, fix: str = "simulate or search it instead") -> None:
        """One-line refusal of a DAG (residual Add/Concat) model by ``what``, which runs chains only."""
        check(not self.is_dag, f"{what} runs chains of layers only, and this model is a DAG (Add/Concat): {fix}")

    def convert(self, raw, src: QFormat, dst: QFormat, rounding) -> np.ndarray:
        """:func:`convert_raw` with the simulator's seed."""
        return convert_raw(raw, src, dst, rounding, self.seed)

    def step(self, i: int, config: NetworkConfig, xf, hits, params, prefix_stats: bool = False):
        """Stage ``i`` of ``config`` given prepared float inputs ``xf`` and the earlier stages' results
        ``hits`` (what this returns): ``(kernel_y, stage_out, stats)``, and for a DAG the stage's node
        values (:mod:`.dag`). A chain's stage reads the previous stage's output (the input first)."""
        if self.is_dag:
            return run_dag_stage(self, i, config, xf, hits, params, prefix_stats)
        h = self.stage_input(i, config, xf, hits[i - 1][1] if i else None)
        return self.run_stage(i, h, config[i], params, prefix_stats)

    def simulate(self, x, config: NetworkConfig, y=None, batch_size: int = 2000,
                 prepared: bool = False, prefix_stats: bool = False) -> SimResult:
        """Run ``config`` on inputs ``x`` (labels ``y`` optional): predictions and stats
        (``prefix_stats``: also each stage's exact ``max_abs_prefix``, one more pass per stage)."""
        return self._simulate(x, (config,), y, batch_size, prepared, prefix_stats)[0][0]

    def compare(self, x, config: NetworkConfig, reference: NetworkConfig, y=None, batch_size: int = 2000,
                prepared: bool = False, prefix_stats: bool = False) -> Comparison:
        """``config`` and ``reference`` (e.g. the same formats on another engine) on the same inputs:
        both results and, per stage, how many raw kernel outputs are equal (``prefix_stats``: both)."""
        for a, b in zip(config, reference):
            check(a.fmt_y == b.fmt_y, f"layer {a.name}: output formats {a.fmt_y} and {b.fmt_y} differ: "
                                      "compare configs of the same output formats")
        (res, ref), equal = self._simulate(x, (config, reference), y, batch_size, prepared, prefix_stats)
        stages = tuple(StageAgreement(s.name, cfg.engine, st.outputs, int(e))
                       for s, cfg, st, e in zip(self.stages, config, res.layer_stats, equal))
        return Comparison(res, ref, stages)

    def _simulate(self, x, configs, y, batch_size, prepared, prefix_stats=False):
        """Each config on the same batches: its SimResult, and per stage the kernel outputs equal
        to the first config's."""
        for config in configs:
            self.check_config(config, prefix_stats)
        n = len(x)
        check(n > 0, "no input samples to simulate")
        params = [[self.stage_params(i, cfg) for i, cfg in enumerate(c)] for c in configs]
        acc = [[_StatsAccumulator(s) for s in self.stages] for _ in configs]
        equal = np.zeros(len(self.stages), np.int64)
        logits, float_logits = [[] for _ in configs], []
        for lo in range(0, n, batch_size):
            xb = x[lo:lo + batch_size]
            xf = xb if prepared else self.prepare(xb)
            trace = self.float_trace(xf)
            first = []
            for j, config in enumerate(configs):
                hits = []
                for i, cfg in enumerate(config):
                    hits.append(self.step(i, config, xf, hits, params[j][i], prefix_stats))
                    kernel_y, h, stats = hits[-1][:3]
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
            result = SimResult(pred, lg, [a.result() for a in acc[j]], engine_extras=[a.extras for a in acc[j]])
            if y is not None:
                yy = np.asarray(y)
                result.accuracy = float(np.mean(pred == yy))
                result.float_accuracy = float(np.mean(float_logits.argmax(axis=1) == yy))
            results.append(result)
        return results, equal

    def compile(self, config: NetworkConfig, max_batch: int = 256, parallel: bool = True) -> Plan:
        """``config`` checked and its weights quantized once, buffers for ``max_batch`` images: a
        :class:`~.plan.Plan`, callable per image or batch, bit-identical to :meth:`simulate` with
        ``batch_size=max_batch``. A DAG (residual) model is refused: the plan runs chains only."""
        self.require_chain("Simulator.compile", "run it with Simulator.simulate, which gives the same bits")
        return Plan(self, config, max_batch, parallel)


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
    """Sums a stage's statistics (and its engine's extras) over batches into its :class:`LayerStats`."""

    def __init__(self, stage: Stage):
        self.name, self.fan_in = stage.name, stage.fan_in
        self.additions = self.overflows = self.outputs = self.affected = self.max_abs = self.casts = 0
        self.max_prefix = None  # only when asked (prefix_stats)
        self.extras = None
        self.lo, self.hi, self.err = np.inf, -np.inf, 0.0
        self.out_of_format = 0

    def add(self, stats, y_hat: np.ndarray, y: np.ndarray, fmt_y: QFormat) -> None:
        self.additions += int(stats.additions)
        self.overflows += int(stats.overflow_count)
        self.casts += int(getattr(stats, "cast_overflows", 0))
        self.affected += int(stats.outputs_affected)
        self.max_abs = max(self.max_abs, int(stats.max_abs_acc))
        prefix = getattr(stats, "max_abs_prefix", None)
        if prefix is not None:
            self.max_prefix = max(self.max_prefix or 0, int(prefix))
        extras = getattr(stats, "extras", None)
        if extras is not None:
            self.extras = extras if self.extras is None else self.extras + extras
        self.outputs += int(y_hat.size)
        if y_hat.size:
            self.lo, self.hi = min(self.lo, float(y_hat.min())), max(self.hi, float(y_hat.max()))
        self.err += float(np.abs(y.reshape(y_hat.shape) - y_hat).sum())
        self.out_of_format += int(np.count_nonzero((y < fmt_y.min_value) | (y > fmt_y.max_value)))

    def result(self) -> LayerStats:
        return LayerStats(self.name, self.fan_in, self.additions, self.overflows, self.outputs,
                          self.affected, self.max_abs, self.max_abs.bit_length() + 1,
                          self.lo, self.hi, self.err, self.err / max(self.outputs, 1), self.out_of_format,
                          self.max_prefix, self.casts)


def simulate(model, config: NetworkConfig, x, y=None, batch_size: int = 2000) -> SimResult:
    """Run ``model`` under ``config`` on dataset inputs ``x`` (see :class:`Simulator`)."""
    return Simulator(model).simulate(x, config, y, batch_size)
