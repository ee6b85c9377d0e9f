"""A whole pruned network on EIE's sparse datapath (Han et al., ISCA 2016).

The sparse datapath is the engine ``sparse`` of
:mod:`fxpsim.datapath.engines`: any stage whose
:class:`~fxpsim.config.LayerConfig` names it runs
:func:`~fxpsim.sparse.kernel.sparse_dense` (conv: ``sparse_conv2d``, im2col
on the (F, C*kh*kw) EIE matrix; not in EIE, which runs FC layers only)
from the CSC/PE encoding of its quantized weights (rows interleaved over
``pes`` PEs, ``index_bits`` relative indices). Stage cutting, BatchNorm
folding, quantization, the format conversion between stages, pooling and
the statistics are the Simulator's, and the kernel is bit-exact with the
dense datapath, so the raw outputs equal the dense integer simulation's.
One statistic differs by meaning: ``additions`` counts the additions
performed (non-zero weight x non-zero activation), the dense datapath's
counts outputs x K.

This module is the shorthand: :func:`sparse_config` sets engine sparse on a
config's FC (and with ``conv=True`` its conv) layers; :class:`SparseSimulator`
runs any config that way and returns the timing with the result;
:func:`cycle_stats` reads the timing from a simulation's engine extras or an
Evaluator's stage outputs (a stage its cache serves carries the timing of
the run that filled it, so nothing is missed or counted twice).

Timing per layer, summed over the evaluated images (:class:`SparseLayerStats`,
the kernel's :class:`~fxpsim.sparse.kernel.PEStats` model): ``cycles`` = sum
over input vectors of the busiest PE's entries (queued model), the lock-step
cycles, each PE's busy cycles (min/mean/max), load imbalance = max/mean,
padding entries processed. A PE spends one cycle per stored entry (padding
included) of each column whose activation is non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..config import LayerConfig, NetworkConfig, engine_options
from ..datapath.engines import SparseLayerStats, SparseWeights
from ..errors import check
from ..simulate import SimResult, Simulator

__all__ = ["SparseLayerStats", "SparseSimResult", "SparseSimulator", "SparseWeights", "cycle_stats",
           "sparse_config", "sparse_stages"]


@dataclass
class SparseSimResult(SimResult):
    """A :class:`~fxpsim.simulate.SimResult` plus the EIE timing of each sparse stage."""

    cycle_stats: list[SparseLayerStats] = field(default_factory=list)

    def cycles_table(self) -> pd.DataFrame:
        return pd.DataFrame([s.record() for s in self.cycle_stats])


def cycle_stats(extras) -> list[SparseLayerStats]:
    """The sparse stages' timing, in stage order, from ``SimResult.engine_extras`` or from an
    Evaluator's ``stage_outputs(config)`` (the stats of each stage carry its engine's extras)."""
    items = [getattr(e[2], "extras", None) if isinstance(e, tuple) else e for e in extras]
    return [e for e in items if isinstance(e, SparseLayerStats)]


def sparse_config(config: NetworkConfig, stages, n_pes: int = 64, index_bits: int = 4, *,
                  conv: bool = False, conv_index_bits: int | None = None) -> NetworkConfig:
    """``config`` with engine sparse (``n_pes`` PEs, ``index_bits``) on the FC stages of ``stages``
    (the Simulator's) and with ``conv=True`` on the conv stages (``conv_index_bits``, default
    ``index_bits``; Han uses 8)."""
    check(len(config) == len(stages), f"the config has {len(config)} layers for {len(stages)} stages")
    sparse_stages(stages, conv)
    options = _options(n_pes, index_bits, conv_index_bits)
    return NetworkConfig(tuple(_pin(cfg, s.kind, options, conv) for cfg, s in zip(config, stages)))


def sparse_stages(stages, conv: bool = False) -> tuple[int, ...]:
    """Indices of the FC stages (with ``conv=True`` also the conv stages), or a one-line error if none."""
    kinds = ("dense", "conv2d") if conv else ("dense",)
    found = tuple(i for i, s in enumerate(stages) if s.kind in kinds)
    check(bool(found), f"the model has no FC (Dense) layer for EIE's sparse datapath (its compute layers: "
                       f"{', '.join(s.name for s in stages)}): run its conv layers sparse with conv=True "
                       "(`--sparse-conv`)")
    return found


def _options(n_pes, index_bits, conv_index_bits) -> dict[str, dict]:
    """Checked options per stage kind."""
    fc = dict(engine_options("sparse", {"pes": n_pes, "index_bits": index_bits}))
    cv = dict(engine_options("sparse", {"pes": n_pes, "index_bits": index_bits if conv_index_bits is None
                                        else conv_index_bits}))
    return {"dense": fc, "conv2d": cv}


def _pin(cfg: LayerConfig, kind: str, options: dict, conv: bool) -> LayerConfig:
    if kind == "dense" or conv:
        return cfg.with_engine("sparse", **options[kind])
    return cfg


class SparseSimulator(Simulator):
    """A pruned network with its FC (and optionally conv) stages on EIE's sparse datapath.

    ``n_pes`` in [1, 4096], ``index_bits`` in [1, 16] (EIE: 4 or 5 for FC),
    ``conv_index_bits`` for conv stages (default ``index_bits``; Han uses 8).
    Whatever engine a config names for those stages, they run sparse here
    (:meth:`stage_config`); the other stages run as their config says.
    """

    def __init__(self, model, n_pes: int = 64, index_bits: int = 4, *, conv: bool = False,
                 conv_index_bits: int | None = None, seed: int = 0):
        super().__init__(model, seed)
        self._options = _options(n_pes, index_bits, conv_index_bits)
        self.n_pes = self._options["dense"]["pes"]
        self.index_bits = self._options["dense"]["index_bits"]
        self.conv_index_bits = self._options["conv2d"]["index_bits"]
        self.conv = bool(conv)
        self.sparse_stages = sparse_stages(self.stages, self.conv)

    def stage_config(self, i: int, cfg: LayerConfig) -> LayerConfig:
        """``cfg`` on engine sparse with this simulator's PEs and index bits, for a sparse stage."""
        return _pin(cfg, self.stages[i].kind, self._options, self.conv)

    def simulate(self, x, config, y=None, batch_size: int = 2000, prepared: bool = False,
                 prefix_stats: bool = False) -> SparseSimResult:
        """As :meth:`Simulator.simulate` (same raw outputs), plus the timing of the sparse stages."""
        result = super().simulate(x, config, y, batch_size, prepared, prefix_stats=prefix_stats)
        return SparseSimResult(**vars(result), cycle_stats=cycle_stats(result.engine_extras))
