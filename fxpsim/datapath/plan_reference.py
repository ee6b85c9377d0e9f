"""Plain-Python twins of :mod:`fxpsim.datapath.plan_kernels`: Python ints and floats, one value at a time.

Obviously correct and slow (stumpy's ``tests/naive.py``), written from DESIGN.md's
"Fixed-point semantics" and independently of the kernels; the dense and conv kernels'
twins are :func:`fxpsim.datapath.reference.dense` / :func:`~fxpsim.datapath.reference.conv2d`.
Flat indices count in C order over the batch, as DESIGN.md's stochastic draw does.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..qformat import QFormat, Rounding, shift_round_int
from .reference import splitmix_bits

__all__ = ["avgpool", "convert", "logits", "maxpool", "quantize_input"]


_MIN_NORMAL = Fraction(2) ** -1022
_OVERFLOW = Fraction(2) ** 1024


def _round(q: Fraction, rounding: Rounding) -> int:
    """The exact rational ``q`` rounded to an integer by a fixed (not stochastic) mode."""
    if rounding is Rounding.FLOOR:
        return math.floor(q)
    if rounding is Rounding.TOWARD_ZERO:
        return math.trunc(q)
    if rounding is Rounding.NEAREST:  # ties away from zero
        return int(math.copysign(math.floor(abs(q) + Fraction(1, 2)), q))
    return round(q)  # Fraction rounds ties to even


def _saturate(v: int, fmt: QFormat) -> int:
    return max(fmt.raw_min, min(fmt.raw_max, v))


def quantize_input(x, mean, std, fmt: QFormat, rounding: Rounding, seed: int, preprocess: bool = True):
    """``(status, raws)``: each value of ``x`` (flat) preprocessed in float32 (``(float32(v) -
    mean) / std``, ``mean`` / ``std`` per element of one image) and quantized to ``fmt``
    (scale by 2**FL exactly, round, clip: :func:`fxpsim.qformat.quantize`). status 1: a value
    is NaN or inf; 2: a nonzero scaled value is not a normal double, or 2**FL is none (the
    NumPy path's cases)."""
    out = []
    if not -1022 <= fmt.frac_bits <= 1023:
        return 2, out
    e = len(mean)
    for i, v in enumerate(float(a) for a in np.asarray(x, np.float64).ravel()):
        if preprocess:
            v = float((np.float32(v) - np.float32(mean[i % e])) / np.float32(std[i % e]))
        if not math.isfinite(v):
            return 1, out
        exact = Fraction(v) * Fraction(2) ** fmt.frac_bits
        if exact != 0 and not (_MIN_NORMAL <= abs(exact) < _OVERFLOW):
            return 2, out
        if rounding is Rounding.STOCHASTIC:
            low = math.floor(exact)
            u = splitmix_bits(seed, i, 53) / 2.0 ** 53
            r = low + (u < float(exact) - low)  # in doubles, as quantize compares them (exact: a
        else:                                   # normal double times a power of two in range)
            r = _round(exact, rounding)
        out.append(_saturate(int(r), fmt))
    return 0, out


def convert(values, src: QFormat, dst: QFormat, rounding: Rounding, seed: int) -> list[int]:
    """Raw values of ``src`` in ``dst`` (:func:`fxpsim.qformat.convert`): times 2**-s exactly
    (s = FL_src - FL_dst), rounded with ``rounding`` when s > 0 (stochastic: the draw of the
    flat index), then saturated."""
    s = src.frac_bits - dst.frac_bits
    out = []
    for i, v in enumerate(int(a) for a in np.asarray(values).ravel()):
        if s <= 0:
            r = v << -s
        else:
            r = shift_round_int(v, s, rounding, lambda: splitmix_bits(seed, i, s))
        out.append(_saturate(r, dst))
    return out


def _windows(x, k: int, stride: int):
    """Per (image, channel, row, column) of the pooled output, the k x k window's values."""
    b_, c_, h_, w_ = np.shape(x)
    xs = np.asarray(x).tolist()
    oh_, ow_ = (h_ - k) // stride + 1, (w_ - k) // stride + 1
    for b in range(b_):
        for c in range(c_):
            for oh in range(oh_):
                for ow in range(ow_):
                    yield [int(xs[b][c][oh * stride + i][ow * stride + j]) for i in range(k) for j in range(k)]


def maxpool(x, k: int, stride: int) -> list[int]:
    """Max pooling of NCHW raw ints (no padding, floor mode), flat C order."""
    return [max(win) for win in _windows(x, k, stride)]


def avgpool(x, k: int, stride: int, rounding: Rounding, seed: int) -> list[int]:
    """Average pooling: the exact window sum / k**2 rounded with ``rounding`` (stochastic only
    for k**2 a power of two: the draw of the flat output index)."""
    n = k * k
    out = []
    for i, win in enumerate(_windows(x, k, stride)):
        if rounding is Rounding.STOCHASTIC:
            s = n.bit_length() - 1
            r = shift_round_int(sum(win), s, rounding, lambda: splitmix_bits(seed, i, s)) if s else sum(win)
        else:
            r = _round(Fraction(sum(win), n), rounding)
        out.append(r)
    return out


def logits(raw, frac_bits: int):
    """``(logits, predictions)``: raw * 2**-FL as doubles, the first index of each row's maximum."""
    rows = [[math.ldexp(float(int(v)), -frac_bits) for v in row] for row in np.asarray(raw).tolist()]
    return rows, [max(range(len(r)), key=lambda j: (r[j], -j)) for r in rows]
