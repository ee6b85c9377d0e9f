"""Accuracy and per-layer error of many configs on one calibration set (what the searches call).

de Bruin et al.'s search (DSD 2018) and Judd et al.'s (ICLR 2016) change
one layer at a time, so every stage whose config and earlier configs are
unchanged gives the same raw output: :class:`Evaluator` keeps it, keyed on
the frozen configs themselves (never on a hand-picked subset of fields).
"""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np

from ..config import LayerConfig, NetworkConfig
from ..datapath import dense as dense_kernels
from ..datapath.core import check_prefix_flag, requantize
from ..qformat import Overflow, dequantize
from .simulator import Simulator

__all__ = ["Evaluator"]

_OTHER_MODE = {Overflow.WRAP: Overflow.CLIP, Overflow.CLIP: Overflow.WRAP}


def _acc_key(cfg: LayerConfig) -> tuple:
    """Every field of ``cfg`` but ``fmt_y``: what a dense stage's accumulators depend on (the
    output format enters only the requantization after them, DESIGN.md)."""
    return tuple(getattr(cfg, f.name) for f in fields(cfg) if f.name != "fmt_y")


class Evaluator:
    """Accuracy of many configs on one calibration set, reusing unchanged prefixes.

    Searches change one layer at a time; the raw output of stages whose
    configs (and all earlier ones) are unchanged is kept in a cache of at
    most ``cache_mb`` megabytes (oldest entries leave first). A stage the
    cache serves returns the stats of the run that filled it, the engine's
    ``extras`` (cycles) inside: per calibration set, counted once.
    ``prefix_stats=True`` gives every stage's stats its exact ``max_abs_prefix``.

    On a chain whose stages run the dense engine two more reuses hold exactly
    (DESIGN.md): a stage's accumulators do not depend on its ``fmt_y``, so a
    search that moves the next layer's data format (and with it this one's
    output format) requantizes the kept accumulators instead of re-running the
    kernel; and a stage whose run in one overflow mode had no overflow (no
    addition left the BW_acc range, exact products, no adder tree) gives the
    same accumulators, outputs and stats in the other mode, which then reuses it.
    Cache keys are the previous stage's key and the stage's frozen config.
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
        self._sizes: dict = {}
        self.evaluations = 0
        # the stage-by-stage path: a chain on the Simulator's own step (a subclass may only pin engines)
        self._chain = (not sim.is_dag and type(sim).step is Simulator.step
                       and type(sim).run_stage is Simulator.run_stage)

    def _params_for(self, i: int, cfg: LayerConfig):
        """Stage ``i``'s weights as its engine stores them and its bias, cached on the whole frozen
        ``cfg`` (a2q, engine and options too)."""
        key = (i, cfg)
        if key not in self._params:
            self._params[key] = self.sim.stage_params(i, cfg)
        return self._params[key]

    def _keep(self, key, value, size: int) -> None:
        """``value`` (``size`` bytes) into the cache, the oldest entries leaving to make room."""
        while self._cache and self._cached_bytes + size > self.cache_bytes:
            old = next(iter(self._cache))
            del self._cache[old]
            self._cached_bytes -= self._sizes.pop(old)
        self._cache[key] = value
        self._sizes[key] = size
        self._cached_bytes += size

    def stage_outputs(self, config: NetworkConfig, upto: int | None = None):
        """Per stage up to ``upto``: (kernel output raw, stage output raw, stats) (:meth:`Simulator.step`)."""
        upto = len(config) if upto is None else upto
        if self._chain:
            return [hit[1:4] for hit in self._chain_outputs(config, upto)]
        outs = []
        for i in range(upto):
            key = tuple(config.layers[: i + 1])
            hit = self._cache.get(key)
            if hit is None:  # a stage reads only earlier stages (outs), so the prefix key covers it
                hit = self.sim.step(i, config, self.x, outs, self._params_for(i, config[i]), self.prefix_stats)
                self._keep(key, hit, hit[0].nbytes + hit[1].nbytes)
            outs.append(hit)
        return [hit[:3] for hit in outs]  # a DAG stage's node values stay in the cache

    def _chain_outputs(self, config: NetworkConfig, upto: int) -> list:
        """Per stage ``(key, kernel_y, stage_out, stats, ...)``; a stage's key is the previous
        stage's key and its config (a stage reads only the previous stage's output)."""
        hits, prev = [], None
        for i in range(upto):
            cfg = config[i]
            key = (prev, cfg)
            hit = self._cache.get(key)
            if hit is None:
                hit = self._stage(i, config, prev, hits)
            hits.append(hit)
            prev = hit[0]
        return hits

    def _stage(self, i: int, config: NetworkConfig, prev, hits) -> tuple:
        """Stage ``i`` not in the cache under its own key: served by its other overflow mode or its
        kept accumulators where they give the same bits, else run (and kept)."""
        sim, cfg = self.sim, config[i]
        run_cfg = sim.stage_config(i, cfg)
        dense = run_cfg.engine == "dense" and sim.backend is dense_kernels
        if dense and cfg.overflow in _OTHER_MODE and cfg.product == "exact" and cfg.order != "tree":
            twin = self._cache.get((prev, replace(cfg, overflow=_OTHER_MODE[cfg.overflow])))
            if twin is not None and twin[3].overflow_count == 0:
                return twin  # no addition overflowed: the same run, whatever the mode
        stage = sim.stages[i]
        acc_key = ("acc", prev, _acc_key(run_cfg))
        kept = self._cache.get(acc_key) if dense else None
        if kept is not None:
            acc, stats = kept
            y = requantize(acc, run_cfg, "relu" if stage.relu else "none", sim.seed)
        else:
            h = sim.stage_input(i, config, self.x, hits[i - 1][2] if i else None)
            w, b = self._params_for(i, cfg)
            res = sim.run_kernel(i, h, w, b, run_cfg, self.prefix_stats)
            y, stats = res.y, res.stats
            if dense:
                self._keep(acc_key, (res.acc, stats), res.acc.nbytes)
        out = sim.apply_post(i, y, run_cfg)
        key = (prev, cfg)
        hit = (key, y, out, stats)
        self._keep(key, hit, y.nbytes + (out.nbytes if out is not y else 0))
        return hit

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
