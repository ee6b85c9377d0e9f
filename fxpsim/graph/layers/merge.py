"""The layers with several inputs (residual networks, He et al. 2016): ``Add`` and channel ``Concat``.

Their ``forward`` takes the list of input arrays and ``backward`` returns the
list of input gradients: Add ``dx_j = dy`` for every input, Concat ``dx_j`` the
slice of ``dy`` along the channel axis that input ``j`` filled. Which earlier
layers feed them is the :class:`~fxpsim.graph.network.Network`'s (``inputs``).
"""

from __future__ import annotations

import numpy as np

from ...errors import FxpsimError
from ..registry import register_layer
from .base import Layer


class MergeLayer(Layer):
    """A layer with ``n_inputs >= 2`` inputs: ``forward([x_0, ...])``, ``backward(dy) -> [dx_0, ...]``."""

    merge = True

    def __init__(self, n_inputs: int = 2) -> None:
        super().__init__()
        self.n_inputs = int(n_inputs)
        if isinstance(n_inputs, bool) or self.n_inputs != n_inputs or self.n_inputs < 2:
            raise FxpsimError(f"{self.kind} n_inputs={n_inputs!r}: a merge layer takes a whole number >= 2 "
                              "of inputs")

    def _check(self, xs) -> None:
        if not isinstance(xs, (list, tuple)) or len(xs) != self.n_inputs:
            raise FxpsimError(f"{self.kind} takes a list of {self.n_inputs} input arrays, got "
                              f"{type(xs).__name__}{'' if not isinstance(xs, (list, tuple)) else f' of {len(xs)}'}")

    def config(self):
        return {"kind": self.kind, "n_inputs": self.n_inputs}


@register_layer
class Add(MergeLayer):
    """Residual addition ``y = x_0 + x_1 + ...`` of equal shapes; ``dx_j = dy``."""

    kind = "add"

    def forward(self, xs, training=False):
        self._check(xs)
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out

    def backward(self, dout):
        return [dout] * self.n_inputs

    def output_shape(self, input_shapes):
        shapes = [tuple(s) for s in input_shapes]
        if len(shapes) != self.n_inputs or any(s != shapes[0] for s in shapes):
            raise FxpsimError(f"add got input shapes {shapes}: expected {self.n_inputs} equal shapes "
                              "(a residual needs the branch to keep the shape; project the skip with a 1x1 conv)")
        return shapes[0]


@register_layer
class Concat(MergeLayer):
    """``y = [x_0, x_1, ...]`` joined along the channel axis (axis 1 with the batch; flat inputs: axis 1 too)."""

    kind = "concat"

    def forward(self, xs, training=False):
        self._check(xs)
        self._cache = [x.shape[1] for x in xs]
        return np.concatenate(xs, axis=1)

    def backward(self, dout):
        cuts = np.cumsum(self._cache)[:-1]
        return [np.ascontiguousarray(d) for d in np.split(dout, cuts, axis=1)]

    def output_shape(self, input_shapes):
        shapes = [tuple(s) for s in input_shapes]
        if (len(shapes) != self.n_inputs or any(len(s) != len(shapes[0]) or s[1:] != shapes[0][1:] for s in shapes)
                or not shapes[0]):
            raise FxpsimError(f"concat got input shapes {shapes}: expected {self.n_inputs} shapes equal but for "
                              "the channel (first) axis")
        return (sum(s[0] for s in shapes), *shapes[0][1:])
