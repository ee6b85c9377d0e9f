"""The integer operations after a stage's kernel (a :class:`~.stages.Stage`'s ``post``), on raw values.

Max pooling is exact on integers; average pooling (and global average
pooling, over the whole map) sums (never wraps: int64) and divides with the
layer's rounding; ReLU, clip (to the codes inside [lo, hi]: ``ceil(lo 2^F)``,
``floor(hi 2^F)``), identity and flatten are exact; tanh and
sigmoid are look-up tables: dequantize, evaluate, quantize to the stage's
``fmt_y`` (saturating) with the layer's rounding.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..config import LayerConfig
from ..errors import check
from ..graph.geometry import pool_reduce
from ..qformat import QFormat, Rounding, dequantize, quantize, shift_round

__all__ = ["post_int"]


def _div_round(total: np.ndarray, n: int, rounding: Rounding, seed) -> np.ndarray:
    """Integer ``total / n`` with the layer's rounding (average pooling)."""
    if n & (n - 1) == 0:
        return shift_round(total, n.bit_length() - 1, rounding, seed)
    q = total // n
    rem = total - q * n  # 0 <= rem < n
    if rounding is Rounding.FLOOR:
        return q
    if rounding is Rounding.TOWARD_ZERO:
        return q + ((rem != 0) & (total < 0))
    if rounding is Rounding.NEAREST:
        return q + ((2 * rem > n) | ((2 * rem == n) & (total >= 0)))
    if rounding is Rounding.NEAREST_EVEN:
        return q + ((2 * rem > n) | ((2 * rem == n) & ((q & 1) == 1)))
    u = np.random.default_rng(seed).integers(0, n, size=np.shape(total))
    return q + (u < rem)


def _pool(x: np.ndarray, layer, ufunc) -> np.ndarray:
    size = int(layer.size)
    return pool_reduce(x, size, int(getattr(layer, "stride", None) or size), ufunc)


def post_int(op: str, layer, raw: np.ndarray, fmt: QFormat, cfg: LayerConfig, seed) -> np.ndarray:
    """One integer operation ``op`` (a post kind of :mod:`.stages`) on raw values of ``fmt``."""
    if op == "relu":
        return np.maximum(raw, 0)
    if op == "flatten":
        return raw.reshape(raw.shape[0], -1)
    if op == "maxpool2d":
        return _pool(raw, layer, np.maximum)
    if op in ("identity", "dropout"):
        return raw
    if op == "clip":
        scale = Fraction(2) ** fmt.frac_bits
        lo = min(max(fmt.raw_min, -((-Fraction(layer.lo) * scale).__floor__())), fmt.raw_max)  # ceil(lo 2^F)
        hi = min(max(fmt.raw_min, (Fraction(layer.hi) * scale).__floor__()), fmt.raw_max)
        return np.minimum(np.maximum(raw, np.int64(lo)), np.int64(hi))
    if op == "globalavgpool":
        n = int(raw.shape[2] * raw.shape[3])
        check(fmt.width + (n - 1).bit_length() <= 63, f"global average pooling of {n} values in {fmt} needs "
              f"{fmt.width + (n - 1).bit_length()} bits, more than int64 holds: use a narrower format")
        return _div_round(raw.astype(np.int64, copy=False).sum(axis=(2, 3)), n, cfg.rounding, seed)
    if op == "avgpool2d":
        total = _pool(raw.astype(np.int64, copy=False), layer, np.add)  # sums never wrap
        return _div_round(total, int(layer.size) ** 2, cfg.rounding, seed)
    fn = np.tanh if op == "tanh" else (lambda v: 0.5 * (1.0 + np.tanh(0.5 * v)))  # stable sigmoid
    return quantize(fn(dequantize(raw, fmt)), fmt, cfg.rounding, "clip", seed)

