"""Elementwise activations: ReLU ``dx = dy [x > 0]``, Tanh ``dx = dy (1 - y^2)``, Sigmoid ``dx = dy y (1 - y)``."""

from __future__ import annotations

import numpy as np

from ..registry import register_layer
from .base import Layer


@register_layer
class ReLU(Layer):
    """``max(0, x)``; gradient ``[x > 0]``."""

    kind = "relu"

    def forward(self, x, training=False):
        self._cache = x > 0
        return np.maximum(x, x.dtype.type(0))

    def backward(self, dout):
        return dout * self._cache


@register_layer
class Tanh(Layer):
    """``tanh(x)``; gradient ``1 - tanh(x)^2``."""

    kind = "tanh"

    def forward(self, x, training=False):
        y = np.tanh(x)
        self._cache = y
        return y

    def backward(self, dout):
        y = self._cache
        return dout * (1 - y * y)


@register_layer
class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` (no overflow); gradient ``y (1 - y)``."""

    kind = "sigmoid"

    def forward(self, x, training=False):
        y = 0.5 * (1 + np.tanh(0.5 * x))
        self._cache = y
        return y

    def backward(self, dout):
        y = self._cache
        return dout * y * (1 - y)

