"""Weight sharing of a whole network, and its fine-tuning (Han et al., "Deep Compression", ICLR 2016, Sec. 3.3).

:func:`share_weights` clusters each named layer's non-zero weights by
k-means (:func:`fxpsim.compress.sharing.kmeans_share`) and sets them to
their centroids. In retraining (:func:`fine_tune_shared`) the weights of a
layer are ``centroids[labels]``; the gradient of centroid k is the sum of
its weights' gradients (Eq. 3, :func:`fxpsim.compress.sharing.centroid_gradients`)
and the centroids take the optimizer step (:class:`SharingHook`); labels
and the pruning pattern never change.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import check
from ..train.optim import make_optimizer
from ..train.trainer import fit
from .sharing import SharedWeights, centroid_gradients, kmeans_share


def share_weights(network, layers: dict[str, int], clusters: dict[str, int], init: str = "linear",
                  seed: int | None = 0) -> dict[str, SharedWeights]:
    """k-means weight sharing of each layer's non-zero weights; the layers' W set to the shared values."""
    shared = {}
    for n, i in layers.items():
        w = network.layers[i].params["W"]
        nnz = int(np.count_nonzero(w))
        k = clusters[n]
        check(isinstance(k, (int, np.integer)) and 2 <= k <= nnz,
              f"clusters={k!r} for layer {n} is outside [2, {nnz}] (its non-zero weights): "
              "give 2 <= k <= non-zeros, e.g. 16 for 4-bit indices")
        shared[n] = kmeans_share(w, k, init=init, seed=seed)
        w[...] = shared[n].weights()
    return shared


class SharingHook:
    """Centroid fine-tuning in :func:`fit`: Eq. 3 gradients, the centroids take the optimizer's step."""

    def __init__(self, network, layers: dict[str, int], shared: dict[str, SharedWeights], optimizer: str,
                 lr: float):
        self.items = []
        self.centroids = []
        for n, i in layers.items():
            layer = network.layers[i]
            c = np.array(shared[n].centroids, dtype=np.float64)
            self.centroids.append(c)
            self.items.append((n, layer.params["W"], layer.grads["W"], shared[n].labels, c))
        self.grads = [np.zeros_like(c) for c in self.centroids]
        self.opt = make_optimizer(optimizer, self.centroids, lr)

    def after_backward(self) -> None:
        for (_, _, g, labels, c), cg in zip(self.items, self.grads):
            cg[...] = centroid_gradients(g, labels, c.size)
            g[...] = 0  # the weights move only through their centroid

    def after_step(self) -> None:
        self.opt.step(self.grads)
        for _, w, _, labels, c in self.items:
            w[...] = np.where(labels >= 0, c[np.maximum(labels, 0)], 0.0)

    def shared(self) -> dict[str, SharedWeights]:
        return {n: SharedWeights(np.array(c), labels, 0) for n, _, _, labels, c in self.items}


def fine_tune_shared(network, layers, shared, train_config, epochs: int, x, y, x_val=None, y_val=None,
                     *, progress: bool = False, log=None) -> dict[str, SharedWeights]:
    """Retrain with shared weights (Deep Compression Sec. 3.3); returns the tuned codebooks.

    Biases train normally; every weight equals its centroid after each step.
    """
    check(isinstance(epochs, int) and epochs >= 1, f"fine-tune epochs={epochs!r} must be >= 1")
    rt = replace(train_config, epochs=epochs, weight_decay=0.0, l1=0.0, patience=None)
    hook = SharingHook(network, layers, shared, rt.optimizer, rt.lr)
    fit(network, x, y, rt, x_val, y_val, progress=progress, log=log,
        after_backward=hook.after_backward, after_step=hook.after_step)
    # fit restores the best epoch's weights: read the centroids back from them
    out = {}
    for (n, i), c_last in zip(layers.items(), hook.centroids):
        w = network.layers[i].params["W"]
        labels = shared[n].labels
        c = np.array([w[labels == j].flat[0] if np.any(labels == j) else c_last[j]
                      for j in range(shared[n].k)], dtype=np.float64)
        out[n] = SharedWeights(c, labels, 0)
    return out
