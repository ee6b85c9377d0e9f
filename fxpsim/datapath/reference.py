"""Plain-Python twin of the dense engine: Python ints, one addition at a time.

Obviously correct and slow (stumpy's ``tests/naive.py``): same signatures and
results as :func:`fxpsim.datapath.dense.dense` / :func:`~fxpsim.datapath.dense.conv2d`
(a LayerConfig, or the keyword form). Validation is shared (:mod:`.core`; it is
not arithmetic); everything after it — products, wrap/saturate after every
addition, requantization, the stochastic draw
(SplitMix64 re-implemented on Python ints), statistics — is written here
independently of the fast paths. Semantics: DESIGN.md, de Bruin DSD 2018.

The knobs (DESIGN.md, issue 16), one operation at a time: each product is
taken to FL_acc (:func:`term`: shifted left, or rounded with
``product_rounding``), cast to BW_acc with the layer's overflow mode when
``product="cast"``, and added in the layer's ``order`` (:func:`accumulate`:
sequential, strided:RF, or the pairwise adder tree with the bias last); the
output is wrapped or clipped to fmt_y by ``output_overflow``.
"""

from __future__ import annotations

import numpy as np

from ..config import LayerConfig
from ..qformat import Overflow, shift_round_int
from .core import (DatapathResult, OverflowStats, call_config, check_operands, check_prefix_flag,
                   conv_geometry)

_M64 = (1 << 64) - 1


def wrap(v: int, bits: int) -> int:
    """Two's complement: keep the low ``bits`` bits of ``v``."""
    half = 1 << (bits - 1)
    return (v + half) % (1 << bits) - half


def saturate(v: int, bits: int) -> int:
    """Clip ``v`` to the signed ``bits``-bit range."""
    half = 1 << (bits - 1)
    return max(-half, min(half - 1, v))


def splitmix_bits(seed: int, index: int, bits: int) -> int:
    """The top ``bits`` bits of SplitMix64(seed + 0x9E3779B97F4A7C15 * (index + 1))."""
    z = (seed + 0x9E3779B97F4A7C15 * (index + 1)) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    z ^= z >> 31
    return z >> (64 - bits)


def requantize_one(acc: int, index: int, cfg: LayerConfig, activation: str = "none",
                   seed: int | None = None) -> int:
    """acc -> raw y: divide by 2**shift with the rounding mode, clip (``output_overflow=
    "wrap"``: wrap) to fmt_y, activation (output ``index``'s stochastic draw from ``seed``)."""
    s = cfg.shift
    if s <= 0:
        v = acc * (1 << -s)
    else:
        v = shift_round_int(acc, s, cfg.rounding, lambda: splitmix_bits(seed, index, s))
    lo, hi = cfg.fmt_y.raw_min, cfg.fmt_y.raw_max
    if cfg.output_overflow is Overflow.WRAP:
        v = (v - lo) % (hi - lo + 1) + lo  # the low fmt_y.width bits, two's complement if signed
    else:
        v = max(lo, min(hi, v))
    if activation == "relu":
        v = max(v, 0)
    return v


def limit(v: int, cfg: LayerConfig) -> int:
    """``v`` wrapped or clipped to BW_acc bits by the layer's overflow mode (ideal: ``v``)."""
    if cfg.overflow is Overflow.IDEAL:
        return v
    return wrap(v, cfg.acc_bits) if cfg.overflow is Overflow.WRAP else saturate(v, cfg.acc_bits)


def term(p: int, cfg: LayerConfig) -> tuple[int, int]:
    """(value added, exact term) of an exact product ``p`` (FL_w + FL_x fraction bits): the
    exact term is ``p`` at FL_acc, shifted left or rounded right with ``product_rounding``;
    ``product="cast"`` adds it wrapped or clipped to BW_acc (:func:`limit`)."""
    d = cfg.product_shift
    q = p << d if d >= 0 else shift_round_int(p, -d, cfg.product_rounding, None)
    return (limit(q, cfg) if cfg.product == "cast" else q), q


def order_of(k: int, cfg: LayerConfig) -> list[int]:
    """The input indices in the layer's order: 0..K-1, or channels-last:C's k = c * K/C + s for
    s = 0..K/C-1, then c = 0..C-1; then strided:RF's positions t = r, r + RF, ... for r = 0..RF-1
    of that sequence (tree: the sequential order of its leaves)."""
    rf = cfg.reuse_factor or 1
    c = cfg.channels_last or 1
    seq = [ch * (k // c) + s for s in range(k // c) for ch in range(c)]
    return [seq[t] for r in range(rf) for t in range(r, k, rf)]


class _Accumulator:
    """One BW_acc register: add a product, wrap or clip, count overflows; beside it the
    exact running sum and the largest |prefix| it reached (the bias alone first)."""

    def __init__(self, bias: int, cfg):
        self.value = bias
        self.exact = bias
        self.max_prefix = abs(bias)
        self.cfg = cfg
        self.overflows = 0
        self.casts = 0

    def add(self, p: int) -> None:
        """One addition of the exact product ``p`` (:func:`term` takes it to FL_acc)."""
        v, q = term(p, self.cfg)
        self.casts += v != q
        s = self.value + v
        self.exact += q
        self.max_prefix = max(self.max_prefix, abs(self.exact))
        t = limit(s, self.cfg)
        self.overflows += t != s
        self.value = t

    def node(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        """One adder of the tree: (register, exact) of ``a + b``, wrapped or clipped."""
        s = a[0] + b[0]
        t = limit(s, self.cfg)
        self.overflows += t != s
        e = a[1] + b[1]
        self.max_prefix = max(self.max_prefix, abs(e))
        return t, e

    def tree(self, products: list[int]) -> None:
        """``order="tree"``: adjacent pairs added level by level, an odd last node carried up
        unchanged, then the bias added to the root; ``max_prefix`` = the largest |node|."""
        nodes = []
        for p in products:
            v, q = term(p, self.cfg)
            self.casts += v != q
            nodes.append((v, q))
        self.max_prefix = 0
        while len(nodes) > 1:
            pairs = [self.node(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
            nodes = pairs + nodes[len(nodes) - len(nodes) % 2:]
        self.value, self.exact = self.node(nodes[0], (self.value, self.exact))


def accumulate(bias: int, products: list[int], cfg: LayerConfig) -> _Accumulator:
    """The register of one output: ``bias`` and the exact ``products`` (in the sequential
    order: dense k, conv channel, kernel row, kernel column) added in the layer's order."""
    a = _Accumulator(bias, cfg)
    if cfg.order == "tree":
        a.tree(products)
    else:
        for k in order_of(len(products), cfg):
            a.add(products[k])
    return a


def _finish(accs: list[_Accumulator], shape, additions: int, cfg: LayerConfig,
            prefix_stats: bool = False, activation: str = "none", seed: int | None = None
            ) -> DatapathResult:
    acc = np.array([a.value for a in accs], dtype=np.int64).reshape(shape)
    y = np.array([requantize_one(a.value, i, cfg, activation, seed) for i, a in enumerate(accs)],
                 dtype=np.int64).reshape(shape)
    stats = OverflowStats(
        additions=additions,
        overflow_count=sum(a.overflows for a in accs),
        outputs_affected=sum(a.overflows > 0 for a in accs),
        max_abs_acc=max((abs(a.exact) for a in accs), default=0),
        max_abs_prefix=max((a.max_prefix for a in accs), default=0) if prefix_stats else None,
        cast_overflows=sum(a.casts for a in accs),
    )
    return DatapathResult(y, acc, stats)


def dense(x, w, b=None, cfg: LayerConfig | None = None, *, fmt_x=None, fmt_w=None, fmt_y=None,
          acc_bits=None, overflow=None, rounding=None, activation="none", seed=None,
          prefix_stats=False) -> DatapathResult:
    """Reference dense layer: for each (b, n), acc = bias; for k in the layer's order: acc += x*w."""
    cfg, seed = call_config(cfg, activation, seed, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits,
                            overflow=overflow, rounding=rounding)
    x, w, bias = check_operands(x, w, b, cfg, conv=False)
    prefix_stats = check_prefix_flag(prefix_stats)
    xs, ws, bs = x.tolist(), w.tolist(), bias.tolist()
    bsz, kk = x.shape
    n = w.shape[1]
    accs = []
    for i in range(bsz):
        for j in range(n):
            accs.append(accumulate(int(bs[j]), [int(xs[i][k]) * int(ws[k][j]) for k in range(kk)], cfg))
    return _finish(accs, (bsz, n), bsz * n * kk, cfg, prefix_stats, activation, seed)


def conv2d(x, w, b=None, cfg: LayerConfig | None = None, *, stride=1, padding=0, fmt_x=None,
           fmt_w=None, fmt_y=None, acc_bits=None, overflow=None, rounding=None, activation="none",
           seed=None, prefix_stats=False) -> DatapathResult:
    """Reference conv: direct loops, products listed channel -> kernel row -> kernel column
    (channels-last:C adds them row -> column -> channel: :func:`order_of`)."""
    cfg, seed = call_config(cfg, activation, seed, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits,
                            overflow=overflow, rounding=rounding)
    x, w, bias = check_operands(x, w, b, cfg, conv=True)
    prefix_stats = check_prefix_flag(prefix_stats)
    oh_, ow_ = conv_geometry(x.shape, w.shape, stride, padding)
    bsz, c_, h_, w_ = x.shape
    f_, _, kh, kw = w.shape
    xs, ws, bs = x.tolist(), w.tolist(), bias.tolist()
    accs = []
    for b_ in range(bsz):
        for f in range(f_):
            for oh in range(oh_):
                for ow in range(ow_):
                    products = []
                    for c in range(c_):
                        for i in range(kh):
                            for j in range(kw):
                                ih, iw = oh * stride - padding + i, ow * stride - padding + j
                                inside = 0 <= ih < h_ and 0 <= iw < w_
                                products.append(int(xs[b_][c][ih][iw]) * int(ws[f][c][i][j]) if inside else 0)
                    accs.append(accumulate(int(bs[f]), products, cfg))
    return _finish(accs, (bsz, f_, oh_, ow_), bsz * f_ * oh_ * ow_ * c_ * kh * kw, cfg,
                   prefix_stats, activation, seed)
