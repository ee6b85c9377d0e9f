"""The Network container: layers in topological order (a chain or a DAG), forward/backward and state.

Layer ``i`` reads the outputs of ``layer.inputs`` (network indices below
``i``; -1 the network input; None, the default, the layer before it), so a
chain is a DAG whose every layer reads its predecessor. The network output
is the last layer's; every other layer's output must feed a later layer.
Backward sums the gradients of a layer's consumers. State is ``"<layer index>.<name>"`` -> array for every param and buffer
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


def _check_inputs(i: int, layer: Layer) -> tuple[int, ...]:
    """Layer ``i``'s input indices (default ``(i - 1,)``), each an earlier layer or -1, as many as it takes."""
    ins = getattr(layer, "inputs", None)
    if ins is None:
        ins = (i - 1,)
    ins = tuple(ins)
    ok = all(isinstance(j, (int, np.integer)) and not isinstance(j, bool) and -1 <= j < i for j in ins)
    if not ok:
        raise FxpsimError(f"layer {i} ({layer.kind}) has inputs {list(ins)}: each must be an earlier layer's "
                          f"index in [0, {i - 1}] or -1 for the network input (layers are in topological order)")
    want = getattr(layer, "n_inputs", 1) if layer.merge else 1
    if len(ins) != want:
        raise FxpsimError(f"layer {i} ({layer.kind}) has {len(ins)} inputs {list(ins)}: it takes {want}")
    return tuple(int(j) for j in ins)


class Network:
    """Layers in topological order on inputs of ``input_shape`` (no batch axis); a chain by default.

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
        self.inputs = [_check_inputs(i, layer) for i, layer in enumerate(self.layers)]
        self.is_dag = any(ins != (i - 1,) for i, ins in enumerate(self.inputs))
        # shapes[j + 1] = output of layer j, shapes[0] the input: for a chain shapes[i] is layer i's input
        self.shapes = [self.input_shape]
        for i, layer in enumerate(self.layers):
            got = [self.shapes[j + 1] for j in self.inputs[i]]
            try:
                self.shapes.append(tuple(layer.output_shape(got if layer.merge else got[0])))
            except FxpsimError as exc:
                if not self.is_dag:
                    raise
                raise FxpsimError(f"layer {i} ({layer.kind}) on inputs {list(self.inputs[i])}: {exc}") from None
        used = {j for ins in self.inputs for j in ins}
        dead = [i for i in range(len(self.layers) - 1) if i not in used]
        if dead:
            raise FxpsimError(f"layer {dead[0]} ({self.layers[dead[0]].kind})'s output feeds no later layer: only "
                              "the last layer's output may go unused; remove the layer or name it in an inputs list")
        self._last_use = {}
        for i, ins in enumerate(self.inputs):
            for j in ins:
                self._last_use[j] = i

    def input_shape_of(self, i: int) -> tuple[int, ...]:
        """The (first) input shape of layer ``i``."""
        return self.shapes[self.inputs[i][0] + 1]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x = as_float(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise FxpsimError(
                f"network input has shape {x.shape}: expected (batch, {', '.join(map(str, self.input_shape))})"
            )
        if not self.is_dag:
            for layer in self.layers:
                x = layer.forward(x, training)
            return x
        return self.forward_nodes(x, training, keep=False)[-1]

    def forward_nodes(self, x: np.ndarray, training: bool = False, keep: bool = True) -> list:
        """Every layer's output on ``x`` (a list by layer index; ``keep=False`` drops each value after
        its last consumer, leaving None, so only the output stays)."""
        values = {-1: as_float(x)}
        out = [None] * len(self.layers)
        for i, layer in enumerate(self.layers):
            got = [values[j] for j in self.inputs[i]]
            values[i] = out[i] = layer.forward(got if layer.merge else got[0], training)
            if not keep:
                for j in set(self.inputs[i]):
                    if self._last_use[j] == i:
                        del values[j]
                        if j >= 0:
                            out[j] = None
        return out

    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Fill every layer's ``grads``; return ``dL/dx`` of the network input.

        ``input_grad=False`` (training) stops at the first layer with
        parameters, skipping the input gradient nobody uses; returns None.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params), 0)
        if self.is_dag:
            return self._backward_dag(dout, input_grad, first)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if not input_grad and i == first and isinstance(layer, (Dense, Conv2D)):
                layer.backward(dout, input_grad=False)
                return None
            dout = layer.backward(dout)
        return dout

    def _backward_dag(self, dout, input_grad, first):
        """Reverse topological order; a layer's gradient is the sum over its consumers'."""
        grads = {len(self.layers) - 1: dout}
        for i in reversed(range(len(self.layers))):
            layer, g = self.layers[i], grads.pop(i)
            if not input_grad and i == first and isinstance(layer, (Dense, Conv2D)):
                layer.backward(g, input_grad=False)  # layers before it have no params: nothing needs more
                return None
            dx = layer.backward(g)
            for j, d in zip(self.inputs[i], dx if layer.merge else [dx]):
                grads[j] = d if j not in grads else grads[j] + d
        return grads.get(-1)

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
        layers = []
        for i, layer in enumerate(self.layers):
            cfg = layer.config()
            if self.inputs[i] != (i - 1,):  # absent for a chain: its model files stay as they were
                cfg["inputs"] = list(self.inputs[i])
            layers.append(cfg)
        return {"input_shape": list(self.input_shape), "seed": self.seed, "layers": layers}

    @classmethod
    def from_config(cls, cfg: dict, dtype=DEFAULT_DTYPE) -> "Network":
        """Rebuild from :meth:`to_config` with zero params (then :meth:`load_state_dict`)."""
        try:
            layers = []
            for c in cfg["layers"]:
                c = dict(c) if isinstance(c, dict) else c
                ins = c.pop("inputs", None) if isinstance(c, dict) else None
                layers.append(layer_from_config(c, dtype))
                layers[-1].inputs = None if ins is None else tuple(ins)
            return cls(layers, tuple(cfg["input_shape"]), cfg.get("seed", 0))
        except (KeyError, TypeError) as err:
            raise FxpsimError(f"bad network config: {err!r}; expected keys input_shape, layers") from None

    def spec(self) -> str:
        """The spec string of this stack; ``build_network(net.spec(), ...)`` rebuilds the same layers."""
        return format_spec(self.layers, self.inputs)

    def __repr__(self) -> str:
        return f"Network({self.spec()!r}, input_shape={self.input_shape})"
