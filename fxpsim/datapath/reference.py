"""Plain-Python twin of the dense engine: Python ints, one addition at a time.

Obviously correct and slow (stumpy's ``tests/naive.py``): same signatures and
results as :func:`fxpsim.datapath.dense.dense` / :func:`~fxpsim.datapath.dense.conv2d`
(a LayerConfig, or the keyword form). Validation is shared (:mod:`.core`; it is
not arithmetic); everything after it — products, wrap/saturate after every
addition, requantization, the stochastic draw
(SplitMix64 re-implemented on Python ints), statistics — is written here
independently of the fast paths. Semantics: DESIGN.md, de Bruin DSD 2018.
"""

from __future__ import annotations

import numpy as np

from ..config import LayerConfig
from ..qformat import Overflow, Rounding
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
    """acc -> raw y: divide by 2**shift with the rounding mode, clip to fmt_y, activation
    (output ``index``'s stochastic draw from ``seed``)."""
    s = cfg.shift
    if s <= 0:
        v = acc * (1 << -s)
    else:
        q, rem = divmod(acc, 1 << s)  # floor division, 0 <= rem < 2**s
        half = 1 << (s - 1)
        r = cfg.rounding
        if r is Rounding.FLOOR:
            up = False
        elif r is Rounding.TOWARD_ZERO:
            up = rem != 0 and acc < 0
        elif r is Rounding.NEAREST:
            up = rem > half or (rem == half and acc >= 0)
        elif r is Rounding.NEAREST_EVEN:
            up = rem > half or (rem == half and q % 2 == 1)
        else:
            up = splitmix_bits(seed, index, s) < rem
        v = q + int(up)
    v = max(cfg.fmt_y.raw_min, min(cfg.fmt_y.raw_max, v))
    if activation == "relu":
        v = max(v, 0)
    return v


class _Accumulator:
    """One BW_acc register: add a product, wrap or clip, count overflows; beside it the
    exact running sum and the largest |prefix| it reached (the bias alone first)."""

    def __init__(self, bias: int, cfg):
        self.value = bias
        self.exact = bias
        self.max_prefix = abs(bias)
        self.cfg = cfg
        self.overflows = 0

    def add(self, p: int) -> None:
        s = self.value + p
        self.exact += p
        self.max_prefix = max(self.max_prefix, abs(self.exact))
        mode = self.cfg.overflow
        if mode is Overflow.IDEAL:
            t = s
        elif mode is Overflow.WRAP:
            t = wrap(s, self.cfg.acc_bits)
        else:
            t = saturate(s, self.cfg.acc_bits)
        self.overflows += t != s
        self.value = t


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
    )
    return DatapathResult(y, acc, stats)


def dense(x, w, b=None, cfg: LayerConfig | None = None, *, fmt_x=None, fmt_w=None, fmt_y=None,
          acc_bits=None, overflow=None, rounding=None, activation="none", seed=None,
          prefix_stats=False) -> DatapathResult:
    """Reference dense layer: for each (b, n), acc = bias; for k = 0..K-1: acc += x*w."""
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
            a = _Accumulator(int(bs[j]), cfg)
            for k in range(kk):
                a.add(int(xs[i][k]) * int(ws[k][j]))
            accs.append(a)
    return _finish(accs, (bsz, n), bsz * n * kk, cfg, prefix_stats, activation, seed)


def conv2d(x, w, b=None, cfg: LayerConfig | None = None, *, stride=1, padding=0, fmt_x=None,
           fmt_w=None, fmt_y=None, acc_bits=None, overflow=None, rounding=None, activation="none",
           seed=None, prefix_stats=False) -> DatapathResult:
    """Reference conv: direct loops, order channel -> kernel row -> kernel column."""
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
                    a = _Accumulator(int(bs[f]), cfg)
                    for c in range(c_):
                        for i in range(kh):
                            for j in range(kw):
                                ih, iw = oh * stride - padding + i, ow * stride - padding + j
                                inside = 0 <= ih < h_ and 0 <= iw < w_
                                a.add(int(xs[b_][c][ih][iw]) * int(ws[f][c][i][j]) if inside else 0)
                    accs.append(a)
    return _finish(accs, (bsz, f_, oh_, ow_), bsz * f_ * oh_ * ow_ * c_ * kh * kw, cfg,
                   prefix_stats, activation, seed)
