"""Batch normalisation (Ioffe and Szegedy 2015): ``dx = (gamma / (m sigma)) (m dy - sum dy - x_hat sum(dy x_hat))``."""

from __future__ import annotations

import numpy as np

from ...errors import FxpsimError
from ..registry import register_layer
from .base import DEFAULT_DTYPE, Layer, check_ndim


@register_layer
class BatchNorm(Layer):
    """Batch normalisation (Ioffe and Szegedy 2015; lecture notes "Batch Normalization").

    Per feature for ``(B, F)`` input, per channel for ``(B, C, H, W)`` (spatial
    BN: statistics over batch, rows and columns). Training:
    ``x_hat = (x - mu_B) / sqrt(sigma_B^2 + eps)``, ``y = gamma x_hat + beta``
    with the batch mean and (biased) variance; the running averages are
    updated as ``r <- momentum r + (1 - momentum) batch_stat``. Test: the
    running averages replace the batch statistics.
    """

    kind = "batchnorm"
    _has_params = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.9, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        if self.num_features < 1 or self.eps <= 0 or not 0 <= self.momentum < 1:
            raise FxpsimError(
                f"batchnorm num_features={num_features} eps={eps} momentum={momentum}: "
                "need num_features >= 1, eps > 0, 0 <= momentum < 1"
            )
        self._add_param("gamma", np.ones(self.num_features, dtype=dtype))
        self._add_param("beta", np.zeros(self.num_features, dtype=dtype))
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=dtype)

    def _axes_shape(self, x):
        check_ndim(self, x, (2, 4))
        if x.shape[1] != self.num_features:
            raise FxpsimError(f"batchnorm over {self.num_features} features got input of shape {x.shape}")
        return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))

    def forward(self, x, training=False):
        axes, bshape = self._axes_shape(x)
        gamma = self.params["gamma"].astype(x.dtype, copy=False).reshape(bshape)
        beta = self.params["beta"].astype(x.dtype, copy=False).reshape(bshape)
        if training:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            m = self.momentum
            self.buffers["running_mean"][...] = m * self.buffers["running_mean"] + (1 - m) * mean
            self.buffers["running_var"][...] = m * self.buffers["running_var"] + (1 - m) * var
        else:
            mean = self.buffers["running_mean"].astype(x.dtype, copy=False)
            var = self.buffers["running_var"].astype(x.dtype, copy=False)
        inv_std = (1 / np.sqrt(var + x.dtype.type(self.eps))).astype(x.dtype, copy=False).reshape(bshape)
        x_hat = (x - mean.reshape(bshape)) * inv_std
        self._cache = (x_hat, inv_std, axes, bshape, training)
        return gamma * x_hat + beta

    def backward(self, dout):
        x_hat, inv_std, axes, bshape, training = self._cache
        self._set_grad("gamma", (dout * x_hat).sum(axis=axes))
        self._set_grad("beta", dout.sum(axis=axes))
        gamma = self.params["gamma"].astype(dout.dtype, copy=False).reshape(bshape)
        dx_hat = dout * gamma
        if not training:  # statistics are constants at test time
            return dx_hat * inv_std
        m = dout.size // self.num_features
        sum_d = dx_hat.sum(axis=axes).reshape(bshape)
        sum_dx = (dx_hat * x_hat).sum(axis=axes).reshape(bshape)
        return (inv_std / m) * (m * dx_hat - sum_d - x_hat * sum_dx)

    def config(self):
        return {"kind": self.kind, "num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def output_shape(self, input_shape):
        if len(input_shape) not in (1, 3) or input_shape[0] != self.num_features:
            raise FxpsimError(
                f"batchnorm over {self.num_features} features got input shape {tuple(input_shape)}"
            )
        return tuple(input_shape)
