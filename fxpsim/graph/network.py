"""The Network container: a sequential stack of layers, its forward/backward pass and its state.

State is ``"<layer index>.<name>"`` -> array for every param and buffer
(:meth:`Network.state_dict`); the architecture is :meth:`Network.to_config`,
rebuilt through the kind registry (:func:`layer_from_config`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import FxpsimError
from .layers import DEFAULT_DTYPE, Conv2D, Dense, Layer, as_float
from .registry import layer_class
from .spec import format_spec


def layer_from_config(cfg: dict, dtype=DEFAULT_DTYPE) -> Layer:
    """Rebuild a layer (parameters zero) from its :meth:`Layer.config` (kinds: the registry)."""
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    cls = layer_class(kind)
    try:
        return cls.from_config(cfg, dtype=dtype)
    except TypeError as err:
        raise FxpsimError(f"bad {kind} layer config {cfg}: {err}") from None


class Network:
    """A sequential stack of layers on inputs of ``input_shape`` (no batch axis).

    ``seed`` seeds the generator ``rng`` that every layer with an ``rng`` (Dropout masks,
    stochastic BinaryConnect samples) draws from, so training is deterministic for a seed.
    """

    def __init__(self, layers: Iterable[Layer], input_shape: tuple[int, ...], seed: int | None = 0) -> None:
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        for layer in self.layers:
            if hasattr(layer, "rng"):  # Dropout, stochastic BinaryConnect: draws from the network's stream
                layer.rng = self.rng
        self.shapes = [self.input_shape]  # shapes[i] = input of layer i; shapes[-1] = output
        for layer in self.layers:
            self.shapes.append(tuple(layer.output_shape(self.shapes[-1])))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x = as_float(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise FxpsimError(
                f"network input has shape {x.shape}: expected (batch, {', '.join(map(str, self.input_shape))})"
            )
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Fill every layer's ``grads``; return ``dL/dx`` of the network input.

        ``input_grad=False`` (training) stops at the first layer with
        parameters, skipping the input gradient nobody uses; returns None.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params), 0)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if not input_grad and i == first and isinstance(layer, (Dense, Conv2D)):
                layer.backward(dout, input_grad=False)
                return None
            dout = layer.backward(dout)
        return dout

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Test-mode outputs (logits) of ``x``, in batches."""
        outs = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, *self.output_shape))

    def params_and_grads(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``[(key, param, grad), ...]`` with keys like ``"3.W"``; arrays by reference."""
        return [
            (f"{i}.{name}", layer.params[name], layer.grads[name])
            for i, layer in enumerate(self.layers)
            for name in layer.params
        ]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all params and buffers, keys ``"<layer index>.<name>"``."""
        state = {}
        for i, layer in enumerate(self.layers):
            for name, arr in (*layer.params.items(), *layer.buffers.items()):
                state[f"{i}.{name}"] = arr.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the params/buffers (in place); keys and shapes must match exactly."""
        targets = {}
        for i, layer in enumerate(self.layers):
            for name, arr in (*layer.params.items(), *layer.buffers.items()):
                targets[f"{i}.{name}"] = arr
        missing, extra = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
        if missing or extra:
            raise FxpsimError(
                f"state does not match the network: missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        for key, arr in targets.items():
            value = np.asarray(state[key])
            if value.shape != arr.shape:
                raise FxpsimError(f"state {key!r} has shape {value.shape}: the network expects {arr.shape}")
            arr[...] = value

    def astype(self, dtype) -> "Network":
        """Convert params, grads and buffers to ``dtype`` (e.g. float64 for gradient checks); returns self."""
        for layer in self.layers:
            for store in (layer.params, layer.grads, layer.buffers):
                for name in store:
                    store[name] = store[name].astype(dtype)
        return self

    def to_config(self) -> dict:
        """JSON-able architecture: ``{"input_shape", "seed", "layers": [layer configs]}``."""
        return {"input_shape": list(self.input_shape), "seed": self.seed,
                "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, cfg: dict, dtype=DEFAULT_DTYPE) -> "Network":
        """Rebuild from :meth:`to_config` with zero params (then :meth:`load_state_dict`)."""
        try:
            layers = [layer_from_config(c, dtype) for c in cfg["layers"]]
            return cls(layers, tuple(cfg["input_shape"]), cfg.get("seed", 0))
        except (KeyError, TypeError) as err:
            raise FxpsimError(f"bad network config: {err!r}; expected keys input_shape, layers") from None

    def spec(self) -> str:
        """The spec string of this stack; ``build_network(net.spec(), ...)`` rebuilds the same layers."""
        return format_spec(self.layers)

    def __repr__(self) -> str:
        return f"Network({self.spec()!r}, input_shape={self.input_shape})"
