"""Accuracy and per-layer error of many configs on one calibration set (what the searches call).

de Bruin et al.'s search (DSD 2018) and Judd et al.'s (ICLR 2016) change
one layer at a time, so every stage whose config and earlier configs are
unchanged gives the same raw output: :class:`Evaluator` keeps it, keyed on
the frozen configs themselves (never on a hand-picked subset of fields).
"""

from __future__ import annotations

import numpy as np

from ..config import LayerConfig, NetworkConfig
from ..datapath.core import check_prefix_flag
from ..qformat import dequantize
from .simulator import Simulator

__all__ = ["Evaluator"]


class Evaluator:
    """Accuracy of many configs on one calibration set, reusing unchanged prefixes.

    Searches change one layer at a time; the raw output of stages whose
    configs (and all earlier ones) are unchanged is kept in a cache of at
    most ``cache_mb`` megabytes (oldest entries leave first). A stage the
    cache serves returns the stats of the run that filled it, the engine's
    ``extras`` (cycles) inside: per calibration set, counted once.
    ``prefix_stats=True`` gives every stage's stats its exact ``max_abs_prefix``.
    """

    def __init__(self, sim: Simulator, x, y, prepared: bool = False, cache_mb: float = 512,
                 prefix_stats: bool = False):
        self.sim = sim
        self.prefix_stats = check_prefix_flag(prefix_stats)
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
        """Per stage up to ``upto``: (kernel output raw, stage output raw, stats) (:meth:`Simulator.step`)."""
        upto = len(config) if upto is None else upto
        outs = []
        for i in range(upto):
            key = tuple(config.layers[: i + 1])
            hit = self._cache.get(key)
            if hit is None:  # a stage reads only earlier stages (outs), so the prefix key covers it
                hit = self.sim.step(i, config, self.x, outs, self._params_for(i, config[i]), self.prefix_stats)
                size = hit[0].nbytes + hit[1].nbytes
                while self._cache and self._cached_bytes + size > self.cache_bytes:  # oldest first
                    old = self._cache.pop(next(iter(self._cache)))
                    self._cached_bytes -= old[0].nbytes + old[1].nbytes
                self._cache[key] = hit
                self._cached_bytes += size
            outs.append(hit)
        return [hit[:3] for hit in outs]  # a DAG stage's node values stay in the cache

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
