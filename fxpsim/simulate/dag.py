"""Running the stages of a DAG network (residual Add, Concat; :mod:`.stages`) on integers.

A stage's kernel reads its ``source`` node, converted from that node's format
to the stage's ``fmt_x``; its ``ops`` then run in network order, each reading
nodes of its own stage (in ``fmt_y``) or, for a merge, of earlier stages
(converted to ``fmt_y``: :mod:`.merge`). A node's format is its stage's
``fmt_y``; the input and the layers before the first compute layer (which
only reshape it) are in the first stage's ``fmt_x``. Each stage's result is
``(kernel_y, stage_out, stats, nodes)``: ``nodes`` maps node -> raw, so later
stages (and the Evaluator's prefix cache) read what they need.
"""

from __future__ import annotations

import numpy as np

from ..qformat import quantize
from .merge import add_int, concat_int
from .post import post_int

__all__ = ["dag_float_trace", "run_dag_stage"]


def dag_float_trace(sim, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per stage, the float model's (kernel output, stage output) on prepared ``x``."""
    vals = sim.network.forward_nodes(np.asarray(x, dtype=np.float64))
    return [(np.asarray(vals[s.kernel_node], np.float64), np.asarray(vals[s.out_node], np.float64))
            for s in sim.stages]


def _node(sim, j: int, config, xf, hits, own: dict):
    """Node ``j``'s raw value and format: from this stage (``own``), an earlier stage, or the input."""
    k = sim.node_owner[j]
    if j in own:
        return own[j], None
    if k >= 0:
        return hits[k][3][j], config[k].fmt_y
    x0 = quantize(xf, config[0].fmt_x, config[0].rounding, "clip", sim.seed)
    return x0.reshape(len(x0), *sim.network.shapes[j + 1]), config[0].fmt_x


def run_dag_stage(sim, i: int, config, xf, hits, params, prefix_stats: bool = False):
    """Stage ``i`` of a DAG on prepared float input ``xf`` and earlier stages' results ``hits``:
    ``(kernel_y, stage_out, stats, nodes)``."""
    s, cfg = sim.stages[i], config[i]
    raw, fmt = _node(sim, s.source, config, xf, hits, {})
    x_in = sim.convert(raw, fmt, cfg.fmt_x, cfg.rounding)
    w, b = params
    scfg = sim.stage_config(i, cfg)
    res = sim.run_kernel(i, x_in, w, b, scfg, prefix_stats)
    own = {s.kernel_node: res.y}
    fy = cfg.fmt_y
    for node, kind, layer, ins in s.ops:
        got = [_node(sim, j, config, xf, hits, own) for j in ins]
        raws, fmts = [r for r, _ in got], [f or fy for _, f in got]
        if kind == "add":
            own[node] = add_int(raws, fmts, fy, cfg.rounding, cfg.output_overflow, sim.seed)
        elif kind == "concat":
            own[node] = concat_int(raws, fmts, fy, cfg.rounding, sim.seed)
        else:
            own[node] = post_int(kind, layer, raws[0], fy, scfg, sim.seed)
    return res.y, own[s.out_node], res.stats, own


def dag_kernel_inputs(sim, x: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Per stage, the float model's kernel input and the largest |value| of any of the stage's nodes
    (its kernel output, merges and ops: what the stage's ``fmt_y`` must hold) on prepared ``x``."""
    vals = sim.network.forward_nodes(np.asarray(x, dtype=np.float64))
    vals = {-1: np.asarray(x, dtype=np.float64), **dict(enumerate(vals))}
    out = []
    for s in sim.stages:
        nodes = [s.kernel_node] + [node for node, *_ in s.ops]
        out.append((vals[s.source].reshape(len(x), *s.in_shape), max(float(np.abs(vals[j]).max()) for j in nodes)))
    return out
