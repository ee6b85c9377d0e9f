"""Losses: softmax cross-entropy with a numerically stable log-softmax.

Softmax classifier (lecture notes): ``p_k = exp(z_k) / sum_j exp(z_j)`` and
``L = -(1/B) sum_i log p_{i, y_i}``. Computed as
``log_softmax(z) = (z - max z) - log sum exp(z - max z)`` so that no ``exp``
overflows; the gradient is ``dL/dz = (softmax(z) - onehot(y)) / B``.
"""

from __future__ import annotations

import numpy as np

from ..errors import FxpsimError


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax`` of logits ``(B, K)``, stable for any finite z."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits ``(B, K)``."""
    return np.exp(log_softmax(z))


def _check_labels(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise FxpsimError(f"logits have shape {logits.shape}: expected (batch, n_classes)")
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise FxpsimError(
            f"labels have shape {labels.shape} and dtype {labels.dtype}: expected integer class "
            f"indices of shape ({logits.shape[0]},)"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise FxpsimError(f"labels outside 0..{logits.shape[1] - 1}: n_classes does not match the data")
    return labels


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits (B, K)`` against integer ``labels (B,)``.

    Returns ``(loss, dlogits)`` with ``dlogits = (softmax(z) - onehot(y)) / B``
    in the dtype of ``logits``.
    """
    labels = _check_labels(logits, labels)
    batch = logits.shape[0]
    logp = log_softmax(logits)
    rows = np.arange(batch)
    loss = -float(logp[rows, labels].sum()) / batch
    dlogits = np.exp(logp)
    dlogits[rows, labels] -= 1
    dlogits /= batch
    return loss, dlogits.astype(logits.dtype, copy=False)
