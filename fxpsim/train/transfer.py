"""Transfer learning: freeze trained layers, replace the head for another data set.

The lecture notes' recipe for a small data set: take a network trained on a large one, keep its
lower layers ("freeze" them: no update), and train a new last layer (or fine-tune the top
layers) on the new data. Layers are named as the simulator and every config name them
(``conv1, conv2, ..., fc1, fc2, ...``: the Dense/Conv2D layers counted per kind in order, as
:func:`fxpsim.simulate.stages.build_stages` does). A named layer stands for its compute layer and
what follows it up to the next compute layer (ReLU, pooling); a frozen layer's parameters are
left out of the optimizer, so they stay bit-identical, while the gradient still flows through it
to the layers below it that are not frozen.
"""

from __future__ import annotations

import numpy as np

from ..errors import FxpsimError, check
from ..graph import Network
from ..graph.init import init_layer, parse_init
from ..graph.layers import Dense

_COMPUTE_PREFIX = {"dense": "fc", "conv2d": "conv"}


def layer_groups(network: Network) -> dict[str, range]:
    """``name -> range`` of network layer indices: each Dense/Conv2D and the layers after it up to
    the next one (the first group also holds the layers before it)."""
    starts, names, counters = [], [], {"dense": 0, "conv2d": 0}
    for i, layer in enumerate(network.layers):
        if layer.kind in counters:
            counters[layer.kind] += 1
            starts.append(i)
            names.append(f"{_COMPUTE_PREFIX[layer.kind]}{counters[layer.kind]}")
    check(names, "the network has no Dense or Conv2D layer to freeze or replace")
    bounds = [0, *starts[1:], len(network.layers)]
    return {name: range(bounds[k], bounds[k + 1]) for k, name in enumerate(names)}


def parse_layer_names(text) -> tuple[str, ...]:
    """``"conv1,conv2"`` (or a sequence) as a tuple of lower-case names; ``""``/None: none."""
    if text is None:
        return ()
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(str(p).strip().lower() for p in parts if str(p).strip())
    check(len(set(names)) == len(names), f"layer names {', '.join(names)} repeat one: give each once")
    return names


def _check_names(network: Network, names, what: str) -> dict[str, range]:
    groups = layer_groups(network)
    bad = [n for n in names if n not in groups]
    check(not bad, f"{what} {', '.join(bad)}: the network's layers are {', '.join(groups)} "
                   "(Dense/Conv2D counted per kind, as in configs)")
    return groups


def frozen_layers(network: Network, freeze) -> set[int]:
    """Network indices of the layers of the frozen groups ``freeze`` (names; a one-line error on an
    unknown name or on a frozen BatchNorm, whose running statistics training would still move)."""
    names = parse_layer_names(freeze)
    groups = _check_names(network, names, "--freeze")
    indices = {i for n in names for i in groups[n]}
    bn = sorted(i for i in indices if network.layers[i].kind == "batchnorm")
    check(not bn, f"--freeze {','.join(names)} holds BatchNorm layer {bn[0] if bn else ''}: training mode "
                  "would still move its statistics; freeze layers without BatchNorm or fold it first")
    return indices


def trainable(network: Network, freeze=()) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``network.params_and_grads()`` without the parameters of the frozen groups ``freeze``."""
    frozen = frozen_layers(network, freeze) if freeze else set()
    entries = [e for e in network.params_and_grads() if int(e[0].split(".", 1)[0]) not in frozen]
    check(entries, f"--freeze {','.join(parse_layer_names(freeze))} leaves nothing to train: "
                   "keep at least one layer unfrozen (or give --new-head)")
    return entries


def clone(network: Network) -> Network:
    """An independent copy of ``network`` (architecture, parameters and buffers)."""
    copy = Network.from_config(network.to_config())
    copy.load_state_dict(network.state_dict())
    return copy


def new_head(network: Network, name: str, n_classes: int, seed: int = 0, init: str = "he") -> Network:
    """A copy of ``network`` whose Dense layer ``name`` is replaced by a fresh ``(n_in, n_classes)``
    Dense initialised by ``init`` from ``seed``; it must be the last compute layer (the head)."""
    groups = _check_names(network, (name,), "--new-head")
    last = list(groups)[-1]
    check(name == last and name.startswith("fc"),
          f"--new-head {name}: only the last layer can be replaced by a new head; give --new-head {last}"
          + ("" if last.startswith("fc") else " (a Dense layer)"))
    check(isinstance(n_classes, int) and n_classes >= 2, f"n_classes={n_classes!r} must be >= 2")
    index = groups[name].start
    old = network.layers[index]
    head = Dense(old.n_in, n_classes, dtype=old.params["W"].dtype)
    init_layer(head, parse_init(init), np.random.default_rng(np.random.SeedSequence([seed, 0x6864])))
    layers = list(clone(network).layers)  # the trunk's weights copied, the model left alone
    layers[index] = head
    out = Network(layers, network.input_shape, network.seed)
    if out.output_shape != (n_classes,):
        raise FxpsimError(f"--new-head {name} gives outputs {out.output_shape}, not ({n_classes},): "
                          "the head must be the network's last layer")
    return out


def check_fits(network: Network, dataset: str, input_shape, n_classes: int) -> Network:
    """``network`` if it reads images of ``input_shape`` and has ``n_classes`` outputs, else a
    one-line error that says how to adapt it (resize the data, replace the head)."""
    shape = tuple(int(d) for d in input_shape)
    check(network.input_shape == shape,
          f"the network reads inputs {network.input_shape}, {dataset} has {shape}: use a data set of that "
          "size (e.g. --dataset digits28, digits upsampled to 28x28 for an MNIST trunk)")
    check(network.output_shape == (int(n_classes),),
          f"the network has {network.output_shape[0]} outputs, {dataset} has {n_classes} classes: "
          "replace the last layer (--new-head)")
    return network
