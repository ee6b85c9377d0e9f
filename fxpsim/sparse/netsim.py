"""A whole pruned network on EIE's sparse datapath (Han et al., ISCA 2016).

:class:`SparseSimulator` is :class:`fxpsim.simulate.Simulator` with one hook
changed, ``run_kernel``: every FC stage (and with ``conv=True`` every conv
stage) runs :func:`~fxpsim.sparse.kernel.sparse_dense` from the CSC/PE
encoding of its quantized weights (rows interleaved over ``n_pes`` PEs,
``index_bits`` relative indices) instead of the dense kernel. Stage cutting,
BatchNorm folding, quantization, the format conversion between stages,
pooling and the statistics are the dense Simulator's, and the kernel is
bit-exact with the dense datapath, so the raw outputs equal the dense
integer simulation's under the same :class:`~fxpsim.config.NetworkConfig`.
One statistic differs by meaning: ``additions`` counts the additions
performed (non-zero weight x non-zero activation), the dense datapath's
counts outputs x K.

Conv layers (optional; EIE runs FC layers only) go through im2col and the
same kernel on the (F, C*kh*kw) EIE matrix
(:func:`~fxpsim.sparse.kernel.sparse_conv2d`): one input vector per output
position, whose PE cycles add up per image.

Timing per layer, summed over the evaluated images (:class:`SparseLayerStats`,
the kernel's :class:`~fxpsim.sparse.kernel.PEStats` model): ``cycles`` = sum
over input vectors of the busiest PE's entries (queued model), the lock-step
cycles, each PE's busy cycles (min/mean/max), load imbalance = max/mean,
padding entries processed. A PE spends one cycle per stored entry (padding
included) of each column whose activation is non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import check
from ..simulate import SimResult, Simulator
from .csc import CSCEncoding, check_index_bits, encode
from .kernel import ColumnSchedule, PEStats, column_schedule, sparse_conv2d, sparse_dense
from .pe import check_pes, eie_matrix


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
    """EIE timing of one stage over the evaluated images (``pe``: totals over them)."""

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


@dataclass
class SparseSimResult(SimResult):
    """A :class:`~fxpsim.simulate.SimResult` plus the EIE timing of each sparse stage."""

    cycle_stats: list[SparseLayerStats] = field(default_factory=list)

    def cycles_table(self) -> pd.DataFrame:
        return pd.DataFrame([s.record() for s in self.cycle_stats])


def _add_pe(a: PEStats | None, b: PEStats) -> PEStats:
    if a is None:
        return b
    return PEStats(a.entries + b.entries, a.padding + b.padding, a.queued_cycles + b.queued_cycles,
                   a.lockstep_cycles + b.lockstep_cycles)


@dataclass
class _Tally:
    """One stage's timing summed over kernel calls."""

    weights: SparseWeights | None = None
    pe: PEStats | None = None
    images: int = 0
    vectors: int = 0
    additions: int = 0


class SparseSimulator(Simulator):
    """A pruned network with its FC (and optionally conv) stages on EIE's sparse datapath.

    ``n_pes`` >= 1, ``index_bits`` in [1, 16] (EIE: 4 or 5 for FC),
    ``conv_index_bits`` for conv stages (default ``index_bits``; Han uses 8).
    """

    def __init__(self, model, n_pes: int = 64, index_bits: int = 4, *, conv: bool = False,
                 conv_index_bits: int | None = None, seed: int = 0):
        super().__init__(model, seed)
        self.n_pes = check_pes(n_pes)
        self.index_bits = check_index_bits(index_bits)
        self.conv_index_bits = check_index_bits(index_bits if conv_index_bits is None else conv_index_bits)
        kinds = ("dense", "conv2d") if conv else ("dense",)
        self.sparse_stages = tuple(i for i, s in enumerate(self.stages) if s.kind in kinds)
        check(bool(self.sparse_stages),
              f"the model has no FC (Dense) layer for EIE's sparse datapath (its compute layers: "
              f"{', '.join(self.names)}): run its conv layers sparse with conv=True (`--sparse-conv`)")
        self.reset_cycles()

    def reset_cycles(self) -> None:
        """Forget the timing summed so far (:meth:`simulate` starts with this)."""
        self._tally = {i: _Tally() for i in self.sparse_stages}

    def _encode(self, i: int, w: np.ndarray) -> SparseWeights:
        bits = self.conv_index_bits if self.stages[i].kind == "conv2d" else self.index_bits
        return SparseWeights.encode(w, self.n_pes, bits)

    def quantized_params(self, i, cfg):
        """As the dense Simulator's, with a sparse stage's weights as :class:`SparseWeights`."""
        w, b = super().quantized_params(i, cfg)
        return (self._encode(i, w), b) if i in self._tally else (w, b)

    def run_kernel(self, i, x_raw, w, b, cfg):
        """Sparse stages on the EIE kernel (their timing tallied), the others dense."""
        if i not in self._tally:
            return super().run_kernel(i, x_raw, w, b, cfg)
        sw = w if isinstance(w, SparseWeights) else self._encode(i, w)
        s = self.stages[i]
        if s.kind == "dense":
            res = sparse_dense(x_raw.reshape(x_raw.shape[0], -1), sw.enc, b, schedule=sw.schedule,
                               **self.kernel_args(i, cfg))
        else:
            res = sparse_conv2d(x_raw, sw.enc, b, kernel_size=sw.raw.shape[-1], stride=s.stride,
                                padding=s.padding, schedule=sw.schedule, **self.kernel_args(i, cfg))
        t = self._tally[i]
        t.weights, t.pe = sw, _add_pe(t.pe, res.pe)
        t.images += x_raw.shape[0]
        t.vectors += x_raw.shape[0] * int(np.prod(res.y.shape[2:]))  # conv: one vector per output position
        t.additions += res.stats.additions
        return res

    def cycle_stats(self) -> list[SparseLayerStats]:
        """Per sparse stage that ran since :meth:`reset_cycles`, its timing."""
        out = []
        for i, t in self._tally.items():
            if t.pe is None:
                continue
            enc = t.weights.enc
            out.append(SparseLayerStats(self.stages[i].name, self.stages[i].kind, enc.n_pes, enc.index_bits,
                                        int(t.weights.raw.size), enc.nnz, enc.n_padding,
                                        int(enc.pe_entries.max(initial=0)), t.images, t.vectors,
                                        t.additions, t.pe))
        return out

    def simulate(self, x, config, y=None, batch_size: int = 2000, prepared: bool = False) -> SparseSimResult:
        """As :meth:`Simulator.simulate` (same raw outputs), plus the timing of the sparse stages."""
        self.reset_cycles()
        result = super().simulate(x, config, y, batch_size, prepared)
        return SparseSimResult(**vars(result), cycle_stats=self.cycle_stats())
