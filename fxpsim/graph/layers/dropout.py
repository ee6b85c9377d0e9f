"""Inverted dropout: ``y = x * mask / (1 - p)`` while training, identity at test; ``dx = dy * mask / (1 - p)``."""

from __future__ import annotations

import numpy as np

from ...errors import FxpsimError
from ..registry import register_layer
from .base import Layer


@register_layer
class Dropout(Layer):
    """Inverted dropout: drop each unit with probability ``p`` while training.

    Training: ``y = x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``
    drawn from ``self.rng`` (the owning :class:`Network`'s generator, so
    training is deterministic for a seed); test: identity. (The notes'
    "vanilla" dropout instead scales by the keep probability at test time;
    their ``p`` is the keep probability, ours the drop probability.)
    """

    kind = "dropout"

    def __init__(self, p: float, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.p = float(p)
        if not 0 <= self.p < 1:
            raise FxpsimError(f"dropout p={p}: the drop probability must be in [0, 1)")
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def forward(self, x, training=False):
        if not training or self.p == 0:
            self._cache = None
            return x
        rdtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        keep = self.rng.random(x.shape, dtype=rdtype) >= self.p
        self._cache = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self._cache

    def backward(self, dout):
        return dout if self._cache is None else dout * self._cache

    def config(self):
        return {"kind": self.kind, "p": self.p}
