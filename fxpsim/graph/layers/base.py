"""The Layer protocol every layer of the graph follows, and its input checks.

Every layer has ``kind``, ``params``/``grads`` (trainable arrays, same keys),
``buffers`` (non-trainable state), ``forward(x, training=False)``,
``backward(dout) -> dx``, ``config()`` and ``output_shape(input_shape)``
(shapes without the batch axis). Images are NCHW. A layer computes in the
dtype of its input (float32 when training, float64 in the gradient tests);
``backward`` overwrites ``grads`` in place (it never accumulates), so an
optimizer may keep references to the arrays, and must update ``params`` in
place too. A layer that draws random numbers keeps its generator in ``rng``;
the :class:`~fxpsim.graph.network.Network` replaces it with its own stream.
``inputs`` names the earlier layers a layer reads (None: the one before it);
a merge layer (``merge = True``: Add, Concat) takes and returns lists.
"""

from __future__ import annotations

import numpy as np

from ...errors import FxpsimError

DEFAULT_DTYPE = np.float32


def as_float(x: np.ndarray) -> np.ndarray:
    """Float input as is; integer input (e.g. uint8 pixels) as float32."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(DEFAULT_DTYPE)


class Layer:
    """Base class: no parameters, identity shape."""

    kind = "layer"
    _has_params = False  # constructor takes dtype
    merge = False  # forward takes a list of inputs, backward returns a list

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._cache = None
        self.inputs: tuple[int, ...] | None = None
        """Network indices of the layers feeding this one (-1: the network input); None: the previous layer."""

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros(value.shape, value.dtype)  # untouched pages until training writes them

    def _set_grad(self, name: str, value: np.ndarray) -> None:
        self.grads[name][...] = value

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dL/dx`` from ``dL/dy`` of the last forward; fills ``grads`` in place."""
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able constructor arguments plus ``kind``."""
        return {"kind": self.kind}

    @classmethod
    def from_config(cls, cfg: dict, dtype=DEFAULT_DTYPE) -> "Layer":
        args = {k: v for k, v in cfg.items() if k != "kind"}
        if cls._has_params:
            args["dtype"] = dtype
        return cls(**args)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")
        return f"{type(self).__name__}({args})"


def check_ndim(layer: Layer, x: np.ndarray, ndims: tuple[int, ...]) -> None:
    """One-line error unless ``x`` (batch first) has one of ``ndims`` dimensions."""
    if x.ndim not in ndims:
        want = " or ".join(f"{n}-d" for n in ndims)
        raise FxpsimError(f"{layer.kind} got input of shape {x.shape}: expected {want} (batch first)")
