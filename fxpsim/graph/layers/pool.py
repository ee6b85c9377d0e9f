"""Max and average pooling over ``size x size`` windows at ``stride``; no padding, floor mode.

Gradients: max-pool routes ``dy`` to the arg-max of each window (the first,
row-major, on ties); average-pool spreads ``dy / k^2`` over each window.
"""

from __future__ import annotations

import numpy as np

from ...errors import FxpsimError
from ..geometry import conv_out_size, pool_reduce, window_view
from ..registry import register_layer
from .base import Layer, check_ndim


class _Pool2D(Layer):
    def __init__(self, size: int, stride: int | None = None) -> None:
        super().__init__()
        self.size = int(size)
        self.stride = self.size if stride is None else int(stride)
        if self.size < 1 or self.stride < 1:
            raise FxpsimError(f"{self.kind} size={size} stride={stride}: both must be >= 1")

    def config(self):
        return {"kind": self.kind, "size": self.size, "stride": self.stride}

    def _out_hw(self, h, w):
        return conv_out_size(h, self.size, self.stride), conv_out_size(w, self.size, self.stride)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise FxpsimError(f"{self.kind} got input shape {tuple(input_shape)}: expected (C, H, W)")
        c, h, w = input_shape
        ho, wo = self._out_hw(h, w)
        if ho < 1 or wo < 1:
            raise FxpsimError(f"{self.kind} window {self.size} does not fit input {h}x{w}: use a smaller window")
        return (c, ho, wo)


@register_layer
class MaxPool2D(_Pool2D):
    """Max over ``size x size`` windows at ``stride`` (default = size); no padding, floor mode.

    The gradient goes to the first maximum of each window (row-major) on ties.
    """

    kind = "maxpool2d"

    def forward(self, x, training=False):
        check_ndim(self, x, (4,))
        ho, wo = self._out_hw(*x.shape[2:])
        y = pool_reduce(x, self.size, self.stride, np.maximum)
        self._cache = (window_view(x, self.size, self.stride, ho, wo), y, x.shape)  # a view, for backward
        return y

    def backward(self, dout):
        win, y, shape = self._cache
        k, s = self.size, self.stride
        arg = np.full(y.shape, k * k - 1, dtype=np.int16)  # window position of the maximum
        for idx in reversed(range(k * k - 1)):  # lowest index written last: the first maximum wins
            np.putmask(arg, win[..., idx // k, idx % k] == y, idx)
        ho, wo = dout.shape[2:]
        dx = np.zeros(shape, dtype=dout.dtype)
        for idx in range(k * k):
            i, j = divmod(idx, k)
            view = dx[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
            if s >= k:  # windows do not overlap: each input gets at most one gradient
                np.multiply(dout, arg == idx, out=view)
            else:
                view += np.where(arg == idx, dout, 0)
        return dx


@register_layer
class AvgPool2D(_Pool2D):
    """Mean over ``size x size`` windows at ``stride`` (default = size); no padding, floor mode."""

    kind = "avgpool2d"

    def forward(self, x, training=False):
        check_ndim(self, x, (4,))
        self._cache = x.shape
        return pool_reduce(x, self.size, self.stride, np.add) / x.dtype.type(self.size * self.size)

    def backward(self, dout):
        k, s = self.size, self.stride
        ho, wo = dout.shape[2:]
        share = dout / dout.dtype.type(k * k)
        dx = np.zeros(self._cache, dtype=dout.dtype)
        for i in range(k):
            for j in range(k):
                dx[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s] += share
        return dx

