"""Plain-Python twin of the xnor engine: Python ints, one product at a time (BNN, Algorithm 4).

Obviously correct and slow, independent of :mod:`fxpsim.binary.engine`'s fast
path (no packing, no popcount, no threshold folding): each dot is
``sum_k x_k w_k`` over Python ints (conv: explicit loops, zero padding),
wrapped to ``acc_bits`` (``overflow`` ``wrap``), max pooled window by window;
a hidden layer's Sign is the float BatchNorm of the pooled dot, compared
with 0 (the expression :func:`fold_bn_sign` bisects on, one value at a
time); the output BatchNorm is ``a*g + h`` on Python ints with ``g, h``
quantized as DESIGN.md says, one rounding shift, then saturation.
:class:`ReferenceXnorEngine` runs it in place of the xnor engine.
"""

from __future__ import annotations

import math

import numpy as np

from ..binary.engine import scale_format
from ..qformat import MAX_WIDTH, Overflow, QFormat, Rounding, quantize, shift_round_int
from .engines import EngineResult, EngineStats, XnorEngine
from .reference import wrap

__all__ = ["ReferenceXnorEngine", "xnor_stage_reference"]


def _dots_dense(x, w) -> list:
    k, n = len(w), len(w[0])
    return [[sum(row[i] * w[i][j] for i in range(k)) for j in range(n)] for row in x]


def _dots_conv(x, w, stride: int, padding: int) -> list:
    f, c, kh, kw = len(w), len(w[0]), len(w[0][0]), len(w[0][0][0])
    h, wd = len(x[0][0]), len(x[0][0][0])
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1

    def at(img, ch, r, col):
        r, col = r - padding, col - padding
        return img[ch][r][col] if 0 <= r < h and 0 <= col < wd else 0

    return [[[[sum(at(img, ch, oy * stride + i, ox * stride + j) * w[fi][ch][i][j]
                   for ch in range(c) for i in range(kh) for j in range(kw))
               for ox in range(ow)] for oy in range(oh)] for fi in range(f)] for img in x]


def _maxpool(y, size: int, stride: int) -> list:
    oh, ow = (len(y[0][0]) - size) // stride + 1, (len(y[0][0][0]) - size) // stride + 1
    return [[[[max(ch[oy * stride + i][ox * stride + j] for i in range(size) for j in range(size))
               for ox in range(ow)] for oy in range(oh)] for ch in img] for img in y]


def _map(f, v):
    """``f`` on every int of a nested list."""
    return [_map(f, e) for e in v] if isinstance(v, list) else f(v)


def _rows(v) -> list:
    """Per image, its values in C order."""
    def walk(e):
        return [x for s in e for x in walk(s)] if isinstance(e, list) else [e]
    return [walk(img) for img in v]


def _bn_sign(a: int, frac: int, bn, c: int) -> int:
    """Sign of the float BatchNorm of the dot ``a * 2**-frac`` (channel ``c``): +1 at >= 0."""
    v = np.float64(math.ldexp(a, -frac))
    std = np.sqrt(np.float64(bn.var[c]) + np.float64(bn.eps))
    y = (v - np.float64(bn.mean[c])) / std * np.float64(bn.gamma[c]) + np.float64(bn.beta[c])
    return 1 if y >= 0 else -1


def xnor_stage_reference(kind: str, stride: int, padding: int, block, x_raw, w_raw, cfg):
    """One BNN stage on Python ints: (raw y in fmt_y, dots, statistics) as :func:`xnor_run` gives."""
    x = np.asarray(x_raw, dtype=np.int64)
    w = np.asarray(w_raw, dtype=np.int64)
    b = x.shape[0]
    if kind == "dense":
        exact = _dots_dense(x.reshape(b, -1).tolist(), w.tolist())
        k = w.shape[0]
    else:
        exact = _dots_conv(x.tolist(), w.tolist(), int(stride), int(padding))
        k = int(np.prod(w.shape[1:]))
    bits = cfg.acc_bits
    dots = exact if cfg.overflow is Overflow.IDEAL else _map(lambda v: wrap(v, bits), exact)
    flat_exact, flat_dots = _rows(exact), _rows(dots)
    affected = sum(int(u != v) for r, s in zip(flat_exact, flat_dots) for u, v in zip(r, s))
    stats = dict(additions=sum(len(r) for r in flat_exact) * k, overflow_count=affected,
                 outputs_affected=affected, max_abs_acc=max((abs(v) for r in flat_exact for v in r), default=0))
    pooled = _maxpool(dots, *block.pool) if block.pool is not None else dots
    frac = 0 if block.pm1_input else cfg.fmt_x.frac_bits
    bn, fy = block.bn, cfg.fmt_y
    if block.sign:
        if kind == "dense" or block.bn_flat:
            rows = _rows(pooled)
            y = [[_bn_sign(a, frac, bn, c) << fy.frac_bits for c, a in enumerate(r)] for r in rows]
        else:
            y = [[[[_bn_sign(a, frac, bn, c) << fy.frac_bits for a in row] for row in ch]
                  for c, ch in enumerate(img)] for img in pooled]
        return np.array(y, dtype=np.int64), np.array(dots, dtype=np.int64), stats
    fmt_scale = scale_format(bn, cfg.options["scale_bits"])
    g = bn.gamma / np.sqrt(bn.var + bn.eps)
    g_raw = quantize(g, fmt_scale, Rounding.NEAREST_EVEN, "clip").tolist()
    frac_p = frac + fmt_scale.frac_bits
    h_raw = quantize(bn.beta - bn.mean * g, QFormat.from_width(MAX_WIDTH, MAX_WIDTH - frac_p),
                     Rounding.NEAREST_EVEN, "clip").tolist()
    s = frac_p - fy.frac_bits
    out = []
    for r in _rows(pooled):
        row = []
        for c, a in enumerate(r):
            v = a * g_raw[c] + h_raw[c]
            v = shift_round_int(v, s, cfg.rounding, None) if s > 0 else v << -s
            row.append(max(fy.raw_min, min(fy.raw_max, v)))
        out.append(row)
    return np.array(out, dtype=np.int64), np.array(dots, dtype=np.int64), stats


class ReferenceXnorEngine(XnorEngine):
    """The xnor engine with :func:`xnor_stage_reference` as its datapath (weights kept as raw ±1)."""

    def prepare(self, stage, w_raw, cfg):
        super().prepare(stage, w_raw, cfg)  # the same checks and refusals
        return np.asarray(w_raw, dtype=np.int64)

    def run(self, stage, x_raw, params, b_raw, cfg, seed, prefix_stats=False) -> EngineResult:
        if prefix_stats:
            self.check_prefix_stats(stage.name)
        y, dots, stats = xnor_stage_reference(stage.kind, stage.stride, stage.padding, stage.binary,
                                              x_raw, params, cfg)
        return EngineResult(y, dots, EngineStats(**stats))
