"""2-D convolution (cross-correlation) by im2col: the dense layer's gradients on patches, col2im for ``dx``."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...errors import FxpsimError
from ..geometry import conv_out_size
from ..registry import register_layer
from .base import DEFAULT_DTYPE, Layer, check_ndim


@register_layer
class Conv2D(Layer):
    """2-D convolution (cross-correlation), NCHW, square kernel, zero padding.

    ``y[b, f, i, j] = b_f + sum_{c, u, v} W[f, c, u, v] x_pad[b, c, s i + u, s j + v]``,
    output size ``(H + 2p - k) // s + 1``. Computed by im2col (patches from a
    strided view) and one matrix product. ``groups`` (AlexNet, MobileNet's depthwise ``groups = c_in``)
    splits the channels into groups, each output channel reading only its group's ``c_in / groups``
    inputs: ``W (c_out, c_in / groups, k, k)``, one matrix product per group.
    """

    kind = "conv2d"
    _has_params = True

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, groups: int = 1,
                 dtype=DEFAULT_DTYPE):
        super().__init__()
        self.c_in, self.c_out, self.k = int(c_in), int(c_out), int(k)
        self.stride, self.padding, self.groups = int(stride), int(padding), int(groups)
        if min(self.c_in, self.c_out, self.k, self.stride) < 1 or self.padding < 0:
            raise FxpsimError(
                f"conv2d c_in={c_in} c_out={c_out} k={k} stride={stride} padding={padding}: "
                "sizes and stride must be >= 1 and padding >= 0"
            )
        if self.groups < 1 or self.c_in % self.groups or self.c_out % self.groups:
            raise FxpsimError(f"conv2d groups={groups} with c_in={c_in}, c_out={c_out}: groups must be >= 1 and "
                              "divide both channel counts (depthwise: groups = c_in)")
        self._add_param("W", np.zeros((self.c_out, self.c_in // self.groups, self.k, self.k), dtype=dtype))
        self._add_param("b", np.zeros(self.c_out, dtype=dtype))

    def forward(self, x, training=False):
        check_ndim(self, x, (4,))
        bsz, _, h, w = x.shape
        k, s, p = self.k, self.stride, self.padding
        ho, wo = conv_out_size(h, k, s, p), conv_out_size(w, k, s, p)
        # batch-last layout (C, H, W, B): every copy below moves runs of B contiguous values
        xt = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
        if p:
            xt = np.pad(xt, ((0, 0), (p, p), (p, p), (0, 0)))
        win = sliding_window_view(xt, (k, k), axis=(1, 2))[:, : s * (ho - 1) + 1 : s, : s * (wo - 1) + 1 : s]
        cols = win.transpose(0, 4, 5, 1, 2, 3).reshape(self.c_in * k * k, ho * wo * bsz)  # im2col
        out = self._grouped(self.params["W"].astype(x.dtype, copy=False), cols, transpose=False)
        out += self.params["b"].astype(x.dtype, copy=False)[:, None]
        self._cache = (cols, xt.shape, (h, w), ho, wo)
        return np.ascontiguousarray(out.reshape(self.c_out, ho, wo, bsz).transpose(3, 0, 1, 2))

    def backward(self, dout, input_grad=True):
        """``input_grad=False`` fills ``grads`` only and returns None (the first layer in training)."""
        cols, padded_shape, (h, w), ho, wo = self._cache
        k, s, p = self.k, self.stride, self.padding
        dflat = dout.transpose(1, 2, 3, 0).reshape(self.c_out, -1)
        g, fo, kk = self.groups, self.c_out // self.groups, cols.shape[0] // self.groups
        dw = [dflat[j * fo:(j + 1) * fo] @ cols[j * kk:(j + 1) * kk].T for j in range(g)]
        self._set_grad("W", np.concatenate(dw).reshape(self.params["W"].shape))
        self._set_grad("b", dflat.sum(axis=1))
        if not input_grad:
            return None
        dcols = self._grouped(self.params["W"].astype(dout.dtype, copy=False), dflat, transpose=True)
        dcols = dcols.reshape(self.c_in, k, k, ho, wo, -1)
        dxt = np.zeros(padded_shape, dtype=dout.dtype)  # col2im: overlapping windows add up
        for i in range(k):
            for j in range(k):
                dxt[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s] += dcols[:, i, j]
        return np.ascontiguousarray(dxt[:, p : p + h, p : p + w].transpose(3, 0, 1, 2))

    def _grouped(self, w, rows, transpose):
        """Per group ``W_g @ rows_g`` (``W_g^T @ rows_g`` with ``transpose``), stacked; one product if ungrouped."""
        g = self.groups
        wm = w.reshape(self.c_out, -1)
        if g == 1:
            return wm.T @ rows if transpose else wm @ rows
        fo, n = self.c_out // g, rows.shape[0] // g
        parts = [(wm[j * fo:(j + 1) * fo].T if transpose else wm[j * fo:(j + 1) * fo]) @ rows[j * n:(j + 1) * n]
                 for j in range(g)]
        return np.concatenate(parts)

    def config(self):
        cfg = {"kind": self.kind, "c_in": self.c_in, "c_out": self.c_out, "k": self.k,
               "stride": self.stride, "padding": self.padding}
        if self.groups != 1:  # absent when 1: model files of ungrouped convs stay as they were
            cfg["groups"] = self.groups
        return cfg

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.c_in:
            raise FxpsimError(
                f"conv2d with c_in={self.c_in} got input shape {tuple(input_shape)}: expected ({self.c_in}, H, W)"
            )
        _, h, w = input_shape
        ho = conv_out_size(h, self.k, self.stride, self.padding)
        wo = conv_out_size(w, self.k, self.stride, self.padding)
        if ho < 1 or wo < 1:
            raise FxpsimError(
                f"conv2d kernel {self.k} (padding {self.padding}) does not fit input {h}x{w}: "
                "use a smaller kernel, padding, or fewer pooling layers before it"
            )
        return (self.c_out, ho, wo)
