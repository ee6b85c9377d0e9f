"""Clip (ReLU6 = clip(0, 6), MobileNet) ``dx = dy [lo < x < hi]`` and Identity ``dx = dy``."""

from __future__ import annotations

import numpy as np

from ...errors import FxpsimError
from ..registry import register_layer
from .base import Layer


@register_layer
class Clip(Layer):
    """``min(max(x, lo), hi)`` (ReLU6: ``lo=0, hi=6``, Howard et al. 2017); gradient ``[lo < x < hi]``."""

    kind = "clip"

    def __init__(self, lo: float = 0.0, hi: float = 6.0) -> None:
        super().__init__()
        self.lo, self.hi = float(lo), float(hi)
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise FxpsimError(f"clip lo={lo} hi={hi}: the bounds must be finite with lo < hi (ReLU6: lo=0, hi=6)")

    def forward(self, x, training=False):
        lo, hi = x.dtype.type(self.lo), x.dtype.type(self.hi)
        self._cache = (x > lo) & (x < hi)
        return np.clip(x, lo, hi)

    def backward(self, dout):
        return dout * self._cache

    def config(self):
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi}


@register_layer
class Identity(Layer):
    """``y = x`` (ONNX Identity, an empty skip branch); gradient ``dy``."""

    kind = "identity"

    def forward(self, x, training=False):
        return x

    def backward(self, dout):
        return dout
