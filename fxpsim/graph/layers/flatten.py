"""Flatten: ``(B, C, H, W) -> (B, C*H*W)`` in C order; the gradient is reshaped back."""

from __future__ import annotations

import numpy as np

from ..registry import register_layer
from .base import Layer


@register_layer
class Flatten(Layer):
    """``(B, C, H, W) -> (B, C*H*W)`` in C order (channel, row, column)."""

    kind = "flatten"

    def forward(self, x, training=False):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._cache)

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)
