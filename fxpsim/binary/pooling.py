"""Max pooling in an integer BNN, before its BatchNorm + Sign (BNN, Courbariaux, Hubara et al. 2016).

``s(d) = Sign(BN(d))`` is nondecreasing in the dot ``d`` where gamma > 0
and nonincreasing where gamma < 0 (constant at gamma = 0), so
``s(maxpool(d)) = maxpool(s(d))`` (an OR of the bits) where gamma >= 0 but
``= minpool(s(d))`` (an AND) where gamma < 0. ``pool_on="dots"`` pools the
integer dots and compares once (:func:`maxpool_int`); ``pool_on="bits"``
compares every dot and pools the 1-bit results (:func:`threshold_then_pool`);
both equal the float order.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import check
from ..graph.geometry import pool_reduce
from .bnn import SignThreshold

POOL_ON = ("dots", "bits")


def _check_pool(y: np.ndarray, size: int) -> None:
    check(y.ndim == 4 and min(y.shape[2:]) >= size,
          f"max pooling {size}x{size} needs NCHW input at least {size}x{size}, got shape {y.shape}")


def _pool_windows(y: np.ndarray, size: int, stride: int) -> np.ndarray:
    """View ``(B, C, OH, OW, size, size)`` of the pooling windows (no padding, floor mode)."""
    _check_pool(y, size)
    return sliding_window_view(y, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]


def maxpool_int(y: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Max pooling of integer dots ``(B, C, H, W)``: exact, the float pool of the same values."""
    y = np.asarray(y)
    _check_pool(y, size)
    return pool_reduce(y, size, stride, np.maximum)


def threshold_then_pool(acc: np.ndarray, thr: SignThreshold, size: int, stride: int,
                        flat: bool = False) -> np.ndarray:
    """``Sign(BN(maxpool(acc)))`` as compare-then-pool on 1-bit values (BNN Algorithm 4).

    Each dot is compared with its channel's threshold, then the bits are
    pooled: OR (max) where the compare is ``a >= t`` (gamma >= 0), AND (min)
    where flipped ``a <= t`` (gamma < 0: BN+sign decreases, so max pooling
    of the dots is a min pooling of the signs). ``flat``: one threshold per
    pooled position (a BatchNorm over the flattened map); returns ``(B, C*OH*OW)``.
    """
    win = _pool_windows(np.asarray(acc, dtype=np.int64), size, stride)
    b, c, oh, ow = win.shape[:4]
    shape = (1, c, oh, ow, 1, 1) if flat else (1, c, 1, 1, 1, 1)
    t, f = thr.threshold.reshape(shape), thr.flip.reshape(shape)
    bits = np.where(f, win <= t, win >= t)
    out = np.where(f[..., 0, 0], bits.all(axis=(4, 5)), bits.any(axis=(4, 5)))
    a = np.where(out, 1, -1).astype(np.int8)
    return a.reshape(b, -1) if flat else a


def maxpool_float(a: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Float reference max pooling by window offsets (shares no code with :func:`maxpool_int`)."""
    oh = (a.shape[2] - size) // stride + 1
    ow = (a.shape[3] - size) // stride + 1
    out = np.full(a.shape[:2] + (oh, ow), -np.inf)
    for i in range(size):
        for j in range(size):
            np.maximum(out, a[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride],
                       out=out)
    return out
