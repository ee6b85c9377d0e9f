"""Global average pooling: ``(B, C, H, W) -> (B, C)``, the mean of each channel's map; ``dx = dy / (H W)``."""

from __future__ import annotations

import numpy as np

from ...errors import FxpsimError
from ..registry import register_layer
from .base import Layer, check_ndim


@register_layer
class GlobalAvgPool(Layer):
    """Mean over all positions of each channel, ``(B, C, H, W) -> (B, C)`` (Lin et al. 2014, ResNet's head);
    ``dx = dy / (H W)`` spread over the map."""

    kind = "globalavgpool"

    def forward(self, x, training=False):
        check_ndim(self, x, (4,))
        self._cache = x.shape
        return x.sum(axis=(2, 3)) / x.dtype.type(x.shape[2] * x.shape[3])

    def backward(self, dout):
        b, c, h, w = self._cache
        return np.broadcast_to((dout / dout.dtype.type(h * w))[:, :, None, None], (b, c, h, w)).copy()

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise FxpsimError(f"{self.kind} got input shape {tuple(input_shape)}: expected (C, H, W)")
        return (int(input_shape[0]),)
