"""Weight sharing by k-means (Han et al., "Deep Compression", ICLR 2016, Sec. 3).

The non-zero weights of one layer are clustered into ``k`` shared values
(centroids); each weight then stores a ``ceil(log2 k)``-bit cluster index.
Centroid initialisation (Sec. 3.1): ``linear`` (evenly spaced between the
min and max weight; recommended, as it keeps the rare large weights),
``density`` (evenly spaced on the CDF's y-axis, at (i + 1/2) / k) and ``forgy`` (k distinct
weights drawn at random, seeded). Fine-tuning (Sec. 3.3, Eq. 3): the
gradient of a centroid is the sum of the gradients of its weights,
``dL/dC_k = sum_ij dL/dW_ij * 1(I_ij = k)``.

Compression rate (Eq. 1): ``r = n b / (n log2 k + k b)`` for ``n`` weights
of ``b`` bits sharing ``k`` values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import check

INITS = ("linear", "density", "forgy")


@dataclass(frozen=True, slots=True, eq=False)
class SharedWeights:
    """A layer after weight sharing: ``weights() = centroids[labels]`` where kept."""

    centroids: np.ndarray
    """(k,) shared values, ascending."""
    labels: np.ndarray
    """Cluster index of every weight, the weights' shape; -1 where pruned (zero)."""
    iterations: int
    """Lloyd iterations run until the assignment stopped changing (or the cap)."""

    @property
    def k(self) -> int:
        return int(self.centroids.size)

    def weights(self) -> np.ndarray:
        """The shared-weight layer (pruned weights stay 0)."""
        return np.where(self.labels >= 0, self.centroids[np.maximum(self.labels, 0)], 0.0)


def check_clusters(k, n_nonzero: int) -> int:
    """``k`` as an int in [2, n_nonzero], or a one-line error."""
    check(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 2 <= k <= n_nonzero,
          f"clusters={k!r} is outside [2, {n_nonzero}] (the layer's non-zero weights): "
          "give 2 <= k <= non-zeros, e.g. 16 for 4-bit indices")
    return int(k)


def init_centroids(values: np.ndarray, k: int, method: str = "linear", seed: int | None = None) -> np.ndarray:
    """k initial centroids of the 1-D ``values`` (linear | density | forgy)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    k = check_clusters(k, v.size)
    check(method in INITS, f"init={method!r} is not one of {', '.join(INITS)}: 'linear' is recommended")
    if method == "linear":
        return np.linspace(v.min(), v.max(), k)
    if method == "density":
        return np.quantile(v, (np.arange(k) + 0.5) / k)  # CDF y-axis evenly spaced
    check(seed is not None, "forgy initialisation draws at random: pass seed=<int> so results repeat")
    return np.sort(np.random.default_rng(seed).choice(v, size=k, replace=False))


def _assign(v: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (ascending centroids; ties go to the lower one)."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mids, v, side="left")


def kmeans_share(w, k: int, init: str = "linear", seed: int | None = None,
                 max_iter: int = 100) -> SharedWeights:
    """Cluster the non-zero weights of ``w`` into ``k`` shared values (1-D Lloyd, Eq. 2).

    Minimises ``sum_i sum_{w in c_i} |w - c_i|^2``; an empty cluster keeps
    its centroid. Zeros (pruned connections) are not clustered.
    """
    w = np.asarray(w, dtype=np.float64)
    check(bool(np.all(np.isfinite(w))), "weights contain NaN/inf: fix the model before weight sharing")
    nz = w != 0
    v = w[nz]
    c = np.sort(init_centroids(v, k, init, seed))
    labels = _assign(v, c)
    it = 0
    for it in range(1, max_iter + 1):
        sums = np.bincount(labels, weights=v, minlength=k)
        counts = np.bincount(labels, minlength=k)
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        order = np.argsort(c, kind="stable")
        c = c[order]
        new = _assign(v, c)
        if np.array_equal(new, np.argsort(order)[labels]):
            labels = new
            break
        labels = new
    full = np.full(w.shape, -1, dtype=np.int64)
    full[nz] = labels
    return SharedWeights(c, full, it)


def centroid_gradients(grad, labels, k: int) -> np.ndarray:
    """Deep Compression Eq. 3: ``dL/dC_k`` = sum of the gradients of cluster k's weights."""
    grad = np.asarray(grad, dtype=np.float64)
    labels = np.asarray(labels)
    check(grad.shape == labels.shape, f"gradient {grad.shape} does not match labels {labels.shape}")
    kept = labels >= 0
    return np.bincount(labels[kept], weights=grad[kept], minlength=int(k))


def fine_tune_step(shared: SharedWeights, grad, lr: float) -> SharedWeights:
    """One SGD step on the centroids: ``C <- C - lr * dL/dC`` (labels unchanged)."""
    c = shared.centroids - float(lr) * centroid_gradients(grad, shared.labels, shared.k)
    return SharedWeights(c, shared.labels, shared.iterations)


def index_bits(k: int) -> int:
    """Bits of one cluster index: ``ceil(log2 k)``."""
    return max(1, math.ceil(math.log2(k)))


def compression_rate(n: int, b: int, k: int) -> float:
    """Deep Compression Eq. 1: ``n b / (n log2 k + k b)`` (log2 k not rounded, as in the paper)."""
    check(n >= 1 and b >= 1 and k >= 2, f"n={n}, b={b}, k={k}: need n >= 1, b >= 1, k >= 2")
    return n * b / (n * math.log2(k) + k * b)
