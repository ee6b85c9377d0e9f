"""Fully connected layer: ``y = x W + b``; ``dW = x^T dy``, ``db = sum_i dy``, ``dx = dy W^T``."""

from __future__ import annotations

import numpy as np

from ...errors import FxpsimError
from ..registry import register_layer
from .base import DEFAULT_DTYPE, Layer, check_ndim


@register_layer
class Dense(Layer):
    """Fully connected: ``y = x W + b`` with ``W (n_in, n_out)``, ``b (n_out,)``."""

    kind = "dense"
    _has_params = True

    def __init__(self, n_in: int, n_out: int, dtype=DEFAULT_DTYPE) -> None:
        super().__init__()
        self.n_in, self.n_out = int(n_in), int(n_out)
        self._add_param("W", np.zeros((self.n_in, self.n_out), dtype=dtype))
        self._add_param("b", np.zeros(self.n_out, dtype=dtype))

    def forward(self, x, training=False):
        check_ndim(self, x, (2,))
        w = self.params["W"].astype(x.dtype, copy=False)
        self._cache = x
        return x @ w + self.params["b"].astype(x.dtype, copy=False)

    def backward(self, dout, input_grad=True):
        """``input_grad=False`` fills ``grads`` only and returns None (the first layer in training)."""
        x = self._cache
        self._set_grad("W", x.T @ dout)
        self._set_grad("b", dout.sum(axis=0))
        if not input_grad:
            return None
        return dout @ self.params["W"].astype(dout.dtype, copy=False).T

    def config(self):
        return {"kind": self.kind, "n_in": self.n_in, "n_out": self.n_out}

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.n_in,):
            raise FxpsimError(f"dense layer with n_in={self.n_in} got input shape {tuple(input_shape)}")
        return (self.n_out,)
