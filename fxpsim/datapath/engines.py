"""The engine registry: every datapath that can run a compute stage (DESIGN.md, issue 13).

A :class:`~fxpsim.config.LayerConfig` names its engine (``engine``, default
``dense``) and the engine's options (``engine_options``, declared and
validated in :data:`fxpsim.config.ENGINE_OPTIONS`); the Simulator runs each
stage on that engine, with the same stage cutting, quantization, format
conversion and statistics for all of them. Each engine has a ``name``, the
stage ``kinds`` it runs, ``prepare(stage, w_raw, cfg)`` (weights as the
engine stores them, once per stage and config) and ``run(stage, x_raw,
params, b_raw, cfg, seed, prefix_stats=False)`` -> :class:`EngineResult`
(raw ``y``, ``acc``, ``stats``: :class:`EngineStats`, the datapath's
OverflowStats plus the engine's ``extras``, its timing of the call).
``prefix_stats=True`` asks for DESIGN.md's exact ``max_abs_prefix``; an
engine whose additions run in another order than k = 0..K-1 refuses it
(:meth:`Engine.check_prefix_stats`). Each engine declares the datapath knobs
(:data:`fxpsim.config.KNOBS`) it runs off their defaults (:attr:`Engine.knobs`:
dense all of them; sparse and bitserial ``fmt_bias`` and ``output_overflow``)
and refuses a config that sets another with one line naming the layer, the
knob and the engine (:meth:`Engine.check_knobs`, in ``prepare`` and in the
engines' own functions).

- ``dense``: the bit-parallel datapath (``fxpsim.datapath.dense.dense``/``conv2d``;
  a Simulator's ``backend`` may swap in the Python-int twin).
- ``sparse``: EIE (Han et al., ISCA 2016): the CSC/PE encoding of the
  quantized weights (rows interleaved over ``pes`` PEs, ``index_bits``
  relative indices), run by ``fxpsim.sparse.kernel.sparse_dense``/
  ``sparse_conv2d``; bit-identical with dense, ``additions`` = additions
  performed; extras: :class:`SparseLayerStats` (PE cycles).
- ``bitserial``: Stripes (Judd et al., MICRO 2016): activations fed one bit
  per cycle in bricks of ``lanes`` (``fxpsim.datapath.bitserial``);
  ``additions`` = register additions; extras: :class:`BitSerialCycles`.
  Equal to dense for wrap/ideal, and for clip with unsigned activations,
  ``lanes=1`` and datapath brick order (:meth:`Engine.equals_dense`).

- ``xnor``: BNN (Courbariaux, Hubara et al. 2016, Algorithm 4) stages, the
  ones :func:`fxpsim.simulate.stages.build_stages` cuts at a ``bnn`` layer
  (:mod:`fxpsim.binary.stages`): XNOR-popcount (bit planes for a first
  layer on raw integers), max pooling of the dots, BatchNorm + Sign folded
  into integer thresholds, the output BatchNorm in fixed point
  (:mod:`fxpsim.binary.engine`; twin :mod:`fxpsim.datapath.xnor_reference`).
  Options ``pool_on`` (dots | bits), ``scale_bits``. It runs only such
  stages, and the other engines only fixed-point ones (:meth:`Engine.check_stage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar, Protocol

import numpy as np

from ..binary.engine import xnor_prepare, xnor_run
from ..binary.stages import is_binary_stage
from ..config import ENGINE_OPTIONS, KNOBS, EngineOption, LayerConfig
from ..errors import FxpsimError, check
from ..qformat import Overflow
from ..sparse.csc import CSCEncoding, encode
from ..sparse.kernel import ColumnSchedule, PEStats, column_schedule, sparse_conv2d, sparse_dense
from ..sparse.pe import eie_matrix
from . import bitserial as bitserial_kernels
from . import dense as dense_kernels
from . import sparse as sparse_kernels
from .bitserial import bit_serial_conv2d, bit_serial_dense
from .core import OverflowStats, check_knobs, conv_geometry, im2col

__all__ = ["ENGINES", "BitSerialCycles", "BitSerialEngine", "DenseEngine", "Engine", "EngineResult",
           "EngineStats", "SparseEngine", "SparseLayerStats", "SparseWeights", "XnorEngine", "get", "register"]

COLUMN_POINTER_BYTES = 2**30
"""Most memory the sparse engine's per-PE column pointers and schedule may take (pes x columns)."""


# --------------------------------------------------------------------------- results

@dataclass(frozen=True, slots=True)
class EngineStats(OverflowStats):
    """The datapath's :class:`~fxpsim.datapath.core.OverflowStats` of one call plus the engine's ``extras``.

    ``extras`` (None for dense) is the engine's timing of the call; it adds
    up over batches (``a + b``) and is left out of equality, which compares
    the datapath's statistics.
    """

    extras: object = field(default=None, compare=False)

    @classmethod
    def of(cls, stats, extras=None) -> EngineStats:
        """``stats`` (any record with the OverflowStats fields; a missing one at its default) with ``extras``."""
        return cls(**{f.name: getattr(stats, f.name, f.default) for f in fields(OverflowStats)}, extras=extras)


@dataclass(frozen=True, slots=True, eq=False)
class EngineResult:
    """One kernel call: raw ``y`` (fmt_y, activation applied), ``acc`` (FL_acc), ``stats``."""

    y: np.ndarray
    acc: np.ndarray
    stats: EngineStats


# --------------------------------------------------------------------------- engines

class Stage(Protocol):
    """What an engine reads of the Simulator's :class:`fxpsim.simulate.stages.Stage`, THE record of a
    compute layer (``fxpsim.simulate`` imports this module, so the record is not imported here)."""

    name: str
    kind: str  # "dense" | "conv2d"
    stride: int
    padding: int
    relu: bool  # ReLU fused into the kernel


def _activation(stage: Stage) -> str:
    return "relu" if stage.relu else "none"


def _prefix_kwargs(prefix_stats: bool) -> dict:
    """``prefix_stats`` for a kernel call, passed only when asked (a backend may not know it)."""
    return {"prefix_stats": True} if prefix_stats else {}


def _max_abs_prefix(stage: Stage, x_raw: np.ndarray, w_raw: np.ndarray, b_raw: np.ndarray) -> int:
    """DESIGN.md's ``max_abs_prefix`` of a stage by the dense datapath's exact routine on the same raw
    operands, order k = 0..K-1 (conv: the im2col columns, channel -> row -> column)."""
    if stage.kind == "dense":
        x, w = x_raw.reshape(x_raw.shape[0], -1), w_raw
    else:
        oh, ow = conv_geometry(x_raw.shape, w_raw.shape, stage.stride, stage.padding)
        f, _, kh, kw = w_raw.shape
        x = im2col(x_raw, kh, kw, int(stage.stride), int(stage.padding), oh, ow)
        w = w_raw.reshape(f, -1).T
    return dense_kernels._max_abs_prefix(x, w, np.asarray(b_raw, dtype=np.int64))


class Engine:
    """A datapath that runs Dense/Conv2D stages; subclasses set ``name`` and ``kinds``."""

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ("dense", "conv2d")
    exact_prefix: ClassVar[bool] = True
    """Whether ``run(..., prefix_stats=True)`` gives DESIGN.md's exact ``max_abs_prefix``."""
    knobs: ClassVar[tuple[str, ...]] = KNOBS
    """The datapath knobs (:data:`fxpsim.config.KNOBS`) this engine runs off their defaults."""
    binary: ClassVar[bool] = False
    """Runs BNN stages (``stage.binary``, engine xnor) instead of fixed-point ones."""

    @property
    def options(self) -> tuple[EngineOption, ...]:
        """The options this engine declares (:data:`fxpsim.config.ENGINE_OPTIONS`)."""
        return ENGINE_OPTIONS[self.name]

    def prepare(self, stage: Stage, w_raw: np.ndarray, cfg: LayerConfig):
        """The weights as this engine stores them (default: the raw ints), after :meth:`check_knobs`."""
        self.check_stage(stage)
        self.check_knobs(cfg)
        return w_raw

    def check_stage(self, stage: Stage) -> None:
        """A one-line error when ``stage`` is a BNN stage and this engine a fixed-point one, or back."""
        if is_binary_stage(stage) != self.binary:
            what = "a BNN stage (±1 weights and activations)" if is_binary_stage(stage) else "a fixed-point stage"
            fix = "engine xnor" if is_binary_stage(stage) else "engine dense (or sparse, bitserial)"
            raise FxpsimError(f"layer {stage.name} is {what}, which engine {self.name} does not run: give it {fix}")

    def check_knobs(self, cfg: LayerConfig) -> None:
        """A one-line error when ``cfg`` sets a knob off its default that this engine does not run."""
        check_knobs(cfg, self.name, self.knobs)

    def run(self, stage: Stage, x_raw, params, b_raw, cfg: LayerConfig, seed,
            prefix_stats: bool = False) -> EngineResult:
        raise NotImplementedError

    def check_prefix_stats(self, layer: str) -> None:
        """A one-line error unless this engine gives ``max_abs_prefix`` exactly (:attr:`exact_prefix`)."""
        check(self.exact_prefix,
              f"layer {layer}: engine {self.name} cannot give max_abs_prefix exactly (its additions run in "
              "another order than the layer's k = 0..K-1): run that layer on engine dense, or drop prefix_stats")

    def equals_dense(self, cfg: LayerConfig) -> bool:
        """True when DESIGN.md's semantics make this engine's outputs equal the dense engine's."""
        return True


@dataclass(frozen=True, slots=True)
class DenseEngine(Engine):
    """The bit-parallel datapath: one product per addition in the layer's order, every knob
    (:mod:`fxpsim.datapath.dense`)."""

    name: ClassVar[str] = "dense"
    dense: object = dense_kernels.dense
    conv2d: object = dense_kernels.conv2d

    def run(self, stage, x_raw, params, b_raw, cfg, seed, prefix_stats=False) -> EngineResult:
        common = dict(activation=_activation(stage), seed=seed, **_prefix_kwargs(prefix_stats))
        if stage.kind == "dense":
            res = self.dense(x_raw.reshape(x_raw.shape[0], -1), params, b_raw, cfg, **common)
        else:
            res = self.conv2d(x_raw, params, b_raw, cfg, stride=stage.stride, padding=stage.padding, **common)
        return EngineResult(res.y, res.acc, EngineStats.of(res.stats))


@dataclass(frozen=True, slots=True, eq=False)
class SparseWeights:
    """One stage's quantized weights as EIE stores them: raw ints, CSC/PE encoding, decoded schedule."""

    raw: np.ndarray
    enc: CSCEncoding
    schedule: ColumnSchedule

    @classmethod
    def encode(cls, w: np.ndarray, n_pes: int, index_bits: int) -> SparseWeights:
        """Raw weights ``w`` (Dense (K, N) or Conv2D (F, C, kh, kw)) -> their encoding."""
        enc = encode(eie_matrix(w), n_pes, index_bits)
        return cls(w, enc, column_schedule(enc))


@dataclass(frozen=True, slots=True, eq=False)
class SparseLayerStats:
    """EIE timing of one stage over the images of one call, or summed over calls (``a + b``)."""

    layer: str
    kind: str
    n_pes: int
    index_bits: int
    weights: int
    nonzeros: int
    padding_entries: int
    """Stored padding entries (relative-index gaps longer than 2**index_bits - 1)."""
    cycles_dense_input: int
    """Busiest PE's stored entries: the cycles of one input vector without zero activations."""
    images: int
    vectors: int
    """Input vectors run: images (FC) or images x output positions (conv)."""
    additions: int
    pe: PEStats

    def __add__(self, other: SparseLayerStats) -> SparseLayerStats:
        """The timing of both calls (the same layer and encoding; images, vectors, cycles add up)."""
        check(other.layer == self.layer, f"cannot add the timing of {other.layer} to {self.layer}")
        p, q = self.pe, other.pe
        pe = PEStats(p.entries + q.entries, p.padding + q.padding, p.queued_cycles + q.queued_cycles,
                     p.lockstep_cycles + q.lockstep_cycles)
        return SparseLayerStats(self.layer, self.kind, self.n_pes, self.index_bits, self.weights,
                                self.nonzeros, self.padding_entries, self.cycles_dense_input,
                                self.images + other.images, self.vectors + other.vectors,
                                self.additions + other.additions, pe)

    def record(self) -> dict:
        """A report row; cycle columns are per image (totals / images)."""
        per = 1.0 / max(self.images, 1)
        e = self.pe.entries
        return {
            "layer": self.layer, "kind": self.kind, "n_pes": self.n_pes, "index_bits": self.index_bits,
            "nonzeros_pct": 100.0 * self.nonzeros / max(self.weights, 1),
            "padding_entries": self.padding_entries, "images": self.images,
            "cycles_total": self.pe.total_cycles, "cycles": self.pe.total_cycles * per,
            "cycles_lockstep": self.pe.lockstep_cycles * per,
            "cycles_dense_input": self.cycles_dense_input * self.vectors * per,
            "pe_cycles_min": int(e.min()) * per, "pe_cycles_mean": float(e.mean()) * per,
            "pe_cycles_max": int(e.max()) * per, "load_imbalance": self.pe.load_imbalance,
            "padding_cycles": int(self.pe.padding.sum()) * per, "macs": self.additions * per,
        }


@dataclass(frozen=True, slots=True)
class SparseEngine(Engine):
    """EIE's sparse datapath: the stage's CSC/PE encoding, zero weights and activations skipped.

    Bit-identical with dense (every output row in one PE, activations
    broadcast in increasing k: the dense order minus zero terms); conv
    stages through im2col on the (F, C*kh*kw) EIE matrix.
    """

    name: ClassVar[str] = "sparse"
    knobs: ClassVar[tuple[str, ...]] = sparse_kernels.KNOBS_RUN

    def prepare(self, stage, w_raw, cfg) -> SparseWeights:
        """Encode the raw weights once (the Simulator caches this per stage and config)."""
        self.check_stage(stage)
        self.check_knobs(cfg)
        pes, columns = cfg.options["pes"], int(np.prod(w_raw.shape[1:]) if stage.kind == "conv2d"
                                                   else w_raw.shape[0])
        need = 2 * pes * (columns + 1) * 8
        check(need <= COLUMN_POINTER_BYTES,
              f"layer {cfg.name}: pes={pes} x {columns} input columns need {need / 2**20:.0f} MiB of "
              f"per-PE column pointers (at most {COLUMN_POINTER_BYTES // 2**20} MiB): use fewer PEs")
        return SparseWeights.encode(w_raw, pes, cfg.options["index_bits"])

    def run(self, stage, x_raw, params: SparseWeights, b_raw, cfg, seed, prefix_stats=False) -> EngineResult:
        """``prefix_stats``: the dense routine on the same raw operands (EIE's order per output is the
        dense k = 0..K-1 minus zero terms, which change no prefix)."""
        common = dict(activation=_activation(stage), seed=seed, schedule=params.schedule)
        if stage.kind == "dense":
            res = sparse_dense(x_raw.reshape(x_raw.shape[0], -1), params.enc, b_raw, cfg, **common)
        else:
            res = sparse_conv2d(x_raw, params.enc, b_raw, cfg, kernel_size=params.raw.shape[-1],
                                stride=stage.stride, padding=stage.padding, **common)
        enc, images = params.enc, x_raw.shape[0]
        timing = SparseLayerStats(stage.name, stage.kind, enc.n_pes, enc.index_bits, int(params.raw.size),
                                  enc.nnz, enc.n_padding, int(enc.pe_entries.max(initial=0)), images,
                                  images * int(np.prod(res.y.shape[2:])),  # conv: a vector per position
                                  int(res.stats.additions), res.pe)
        stats = EngineStats.of(res.stats, timing)
        if prefix_stats:
            stats = replace(stats, max_abs_prefix=_max_abs_prefix(stage, x_raw, params.raw, b_raw))
        return EngineResult(res.y, res.acc, stats)


@dataclass(frozen=True, slots=True)
class BitSerialCycles:
    """Stripes' serial inner-product (SIP) work of one stage: per call, or summed (``a + b``)."""

    layer: str
    lanes: int
    cycles_per_output: int
    """One SIP's cycles for one output: ceil(K / lanes) * p (p = fmt_x width)."""
    outputs: int
    sip_cycles: int
    """outputs x cycles_per_output: SIP cycles if one SIP computed every output."""

    def __add__(self, other: BitSerialCycles) -> BitSerialCycles:
        check(other.layer == self.layer, f"cannot add the cycles of {other.layer} to {self.layer}")
        return BitSerialCycles(self.layer, self.lanes, self.cycles_per_output,
                               self.outputs + other.outputs, self.sip_cycles + other.sip_cycles)


@dataclass(frozen=True, slots=True)
class BitSerialEngine(Engine):
    """Stripes' bit-serial datapath: activations fed one bit per cycle in bricks of ``lanes``."""

    name: ClassVar[str] = "bitserial"
    exact_prefix: ClassVar[bool] = False  # one addition per activation bit: other prefixes than dense's
    knobs: ClassVar[tuple[str, ...]] = bitserial_kernels.KNOBS_RUN

    def run(self, stage, x_raw, params, b_raw, cfg, seed, prefix_stats=False) -> EngineResult:
        if prefix_stats:
            self.check_prefix_stats(stage.name)
        o = cfg.options
        common = dict(activation=_activation(stage), seed=seed, lanes=o["lanes"],
                      msb_first=bool(o["msb_first"]))
        if stage.kind == "dense":
            res = bit_serial_dense(x_raw.reshape(x_raw.shape[0], -1), params, b_raw, cfg, **common)
        else:
            res = bit_serial_conv2d(x_raw, params, b_raw, cfg, stride=stage.stride, padding=stage.padding,
                                    order=o["brick_order"], **common)
        outputs = int(res.y.size)
        cycles = BitSerialCycles(stage.name, o["lanes"], res.cycles_per_output, outputs,
                                 outputs * res.cycles_per_output)
        return EngineResult(res.y, res.acc, EngineStats.of(res.stats, cycles))

    def equals_dense(self, cfg) -> bool:
        """Wrap/ideal always; clip with unsigned activations, lanes=1 and datapath bricks
        (:mod:`fxpsim.datapath.bitserial`)."""
        o = cfg.options
        return (cfg.overflow is not Overflow.CLIP
                or (not cfg.fmt_x.signed and o["lanes"] == 1 and o["brick_order"] == "datapath"))


@dataclass(frozen=True, slots=True)
class XnorEngine(Engine):
    """BNN stages by XNOR-popcount, thresholds and a fixed-point output BatchNorm
    (:mod:`fxpsim.binary.engine`); no datapath knob off its default, overflow wrap or ideal."""

    name: ClassVar[str] = "xnor"
    knobs: ClassVar[tuple[str, ...]] = ()
    binary: ClassVar[bool] = True
    exact_prefix: ClassVar[bool] = False  # popcounts sum words, not the products one by one

    def prepare(self, stage, w_raw, cfg):
        """Pack the ±1 weights, fold BatchNorm (+ Sign) into thresholds, once per stage and config."""
        self.check_stage(stage)
        self.check_knobs(cfg)
        return xnor_prepare(stage.name, stage.kind, stage.binary, w_raw, cfg)

    def run(self, stage, x_raw, params, b_raw, cfg, seed, prefix_stats=False) -> EngineResult:
        if prefix_stats:
            self.check_prefix_stats(stage.name)
        y, dots, stats = xnor_run(stage.kind, stage.stride, stage.padding, stage.binary, x_raw, params, cfg)
        return EngineResult(y, dots, EngineStats(**stats))

    def equals_dense(self, cfg) -> bool:
        """No dense engine runs a BNN stage: a comparison with dense keeps these stages on xnor (and
        the engine is checked against its Python-int twin, :mod:`fxpsim.datapath.xnor_reference`)."""
        return True


# --------------------------------------------------------------------------- registry

ENGINES: dict[str, Engine] = {}
"""The registered engines by name (the names :data:`fxpsim.config.ENGINE_OPTIONS` declares)."""


def register(engine: Engine) -> Engine:
    """Add ``engine`` to :data:`ENGINES`; its name must declare its options in ENGINE_OPTIONS."""
    check(engine.name in ENGINE_OPTIONS,
          f"engine {engine.name!r} declares no options in fxpsim.config.ENGINE_OPTIONS: add its entry there")
    ENGINES[engine.name] = engine
    return engine


def get(name: str) -> Engine:
    """The engine called ``name``, or a one-line error."""
    try:
        return ENGINES[name]
    except KeyError:
        raise FxpsimError(f"engine {name!r} is not registered: use one of {', '.join(ENGINES)}") from None


register(DenseEngine())
register(SparseEngine())
register(BitSerialEngine())
register(XnorEngine())
