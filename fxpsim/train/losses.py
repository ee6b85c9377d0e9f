"""Losses: softmax cross-entropy (numerically stable log-softmax) and the square hinge loss.

Softmax classifier (lecture notes): ``p_k = exp(z_k) / sum_j exp(z_j)`` and
``L = -(1/B) sum_i log p_{i, y_i}``. Computed as
``log_softmax(z) = (z - max z) - log sum exp(z - max z)`` so that no ``exp``
overflows; the gradient is ``dL/dz = (softmax(z) - onehot(y)) / B``.

Square hinge loss (L2-SVM output of BinaryConnect Sec. 3 and BNN Sec. 2.5,
as their code computes it): targets ``t_k = +1`` for the true class and
``-1`` otherwise, ``L = 1/(B K) sum_i sum_k max(0, 1 - t_ik z_ik)^2`` and
``dL/dz = -2 t max(0, 1 - t z) / (B K)``.

==================  =====================================
name (:data:`LOSSES`)  function
==================  =====================================
``cross-entropy``   :func:`softmax_cross_entropy`
``square-hinge``    :func:`square_hinge`
==================  =====================================
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


def square_hinge(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean square hinge loss of ``logits (B, K)`` against integer ``labels (B,)``.

    ``L = mean over i, k of max(0, 1 - t_ik z_ik)^2`` with ``t = 2 onehot(y) - 1``
    (the BinaryConnect/BNN output cost). Returns ``(loss, dlogits)``,
    ``dlogits = -2 t max(0, 1 - t z) / (B K)`` in the dtype of ``logits``.
    """
    labels = _check_labels(logits, labels)
    batch, k = logits.shape
    t = np.full(logits.shape, -1.0, dtype=np.float64)
    t[np.arange(batch), labels] = 1.0
    margin = np.maximum(0.0, 1.0 - t * logits.astype(np.float64))
    loss = float(np.sum(margin * margin)) / (batch * k)
    dlogits = (-2.0 / (batch * k)) * t * margin
    return loss, dlogits.astype(logits.dtype, copy=False)


LOSSES = {"cross-entropy": softmax_cross_entropy, "square-hinge": square_hinge}
"""Training losses by name (``TrainConfig.loss``, ``--loss``)."""


def parse_loss(name) -> str:
    """Canonical loss name (aliases: ce, xent, hinge, l2-svm) or a one-line error."""
    key = str(name).strip().lower().replace("_", "-")
    key = {"ce": "cross-entropy", "xent": "cross-entropy", "softmax": "cross-entropy",
           "hinge": "square-hinge", "squared-hinge": "square-hinge", "l2-svm": "square-hinge"}.get(key, key)
    if key not in LOSSES:
        raise FxpsimError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}")
    return key
