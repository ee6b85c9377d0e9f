"""Magnitude pruning masks (Han et al., NIPS 2015).

A mask is a boolean array of the weights' shape, True = connection kept.
Pruning never revives a connection: every function takes the current
``mask`` (None = all kept) and returns a subset of it, so iterative
pruning with growing quality keeps pruned weights at zero
(:func:`apply_mask` after each retraining step). ESE's load-balance-aware
pruning, which depends on EIE's rows-over-PEs interleaving, is
:func:`fxpsim.sparse.prune.load_balanced_mask`.
"""

from __future__ import annotations

import numpy as np

from ..errors import check


def check_sparsity(sparsity) -> float:
    """``sparsity`` as a float in [0, 1), or a one-line error."""
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        s = float("nan")
    check(0.0 <= s < 1.0,
          f"sparsity={sparsity!r} is outside [0, 1): give the fraction of weights to remove, e.g. 0.9")
    return s


def weights_and_mask(w, mask):
    """``(w as float64, mask)`` checked: finite weights, a boolean mask of their shape (None: all kept)."""
    w = np.asarray(w, dtype=np.float64)
    check(bool(np.all(np.isfinite(w))), "weights contain NaN/inf: fix the model before pruning")
    if mask is None:
        return w, np.ones(w.shape, dtype=bool)
    mask = np.asarray(mask)
    check(mask.shape == w.shape and mask.dtype == np.bool_,
          f"mask of shape {mask.shape} and dtype {mask.dtype} does not match weights {w.shape}: "
          "pass a boolean mask of the weights' shape")
    return w, mask


def threshold_mask(w, quality: float, mask=None) -> np.ndarray:
    """Han 2015: remove weights below ``threshold = quality * std(w)``.

    ``std`` is taken over the layer's kept weights; a weight is kept when
    ``|w| >= threshold`` (and it was kept before).
    """
    w, mask = weights_and_mask(w, mask)
    q = float(quality)
    check(np.isfinite(q) and q >= 0, f"quality={quality!r} is not a finite number >= 0: e.g. 1.0")
    kept = w[mask]
    threshold = q * float(kept.std()) if kept.size else 0.0
    return mask & (np.abs(w) >= threshold)


def keep_largest(absw: np.ndarray, n_keep: int) -> np.ndarray:
    """Boolean mask of the ``n_keep`` largest entries (ties: the lower flat index wins)."""
    keep = np.zeros(absw.size, dtype=bool)
    if n_keep > 0:
        order = np.argsort(-absw.ravel(), kind="stable")
        keep[order[:n_keep]] = True
    return keep.reshape(absw.shape)


def sparsity_mask(w, sparsity: float, mask=None) -> np.ndarray:
    """Remove the smallest-magnitude weights until ``sparsity`` of all weights are pruned.

    ``round((1 - sparsity) * size)`` weights stay (at most the kept ones).
    """
    w, mask = weights_and_mask(w, mask)
    s = check_sparsity(sparsity)
    n_keep = min(int(round((1.0 - s) * w.size)), int(mask.sum()))
    return keep_largest(np.where(mask, np.abs(w), -1.0), n_keep)


def apply_mask(w, mask) -> np.ndarray:
    """Weights with pruned connections set to zero (same dtype as ``w``)."""
    w = np.asarray(w)
    mask = np.asarray(mask)
    check(mask.shape == w.shape, f"mask {mask.shape} does not match weights {w.shape}")
    return np.where(mask, w, np.zeros((), dtype=w.dtype))


def mask_sparsity(mask) -> float:
    """Fraction of pruned connections."""
    mask = np.asarray(mask, dtype=bool)
    return 1.0 - float(mask.sum()) / mask.size if mask.size else 0.0

