"""Build a freshly initialised Network from an architecture name or a spec string."""

from __future__ import annotations

import numpy as np

from ..errors import FxpsimError
from .init import init_layer, parse_init
from .layers import DEFAULT_DTYPE, Dense
from .network import Network
from .spec import parse_spec, resolve_spec


def build_network(arch_or_spec: str, input_shape: tuple[int, ...], n_classes: int, seed: int = 0,
                  init: str = "he", dtype=DEFAULT_DTYPE, max_bytes: int | None = None) -> Network:
    """A freshly initialised network from an architecture name or a spec string.

    The last fc layer must have ``n_classes`` outputs and the network must end
    with a flat ``(n_classes,)`` output. Weights are drawn by ``init``
    (:mod:`fxpsim.graph.init`) from a generator seeded by ``seed``; Dropout
    masks come from a second, independent stream of the same seed.
    """
    init = parse_init(init)
    if int(n_classes) < 2:
        raise FxpsimError(f"n_classes={n_classes}: a classifier needs at least 2 classes")
    spec = resolve_spec(arch_or_spec, input_shape, n_classes)
    layers = parse_spec(spec, input_shape, dtype)
    dense = [layer for layer in layers if isinstance(layer, Dense)]
    if not dense:
        raise FxpsimError(f"architecture spec {spec!r} has no fc layer: end it with fc{n_classes}")
    if dense[-1].n_out != int(n_classes):
        raise FxpsimError(
            f"architecture spec {spec!r} ends with fc{dense[-1].n_out} but the data has {n_classes} classes: "
            f"make the last fc fc{n_classes}"
        )
    if max_bytes is not None:  # before init writes a page: the zero arrays so far are only reserved
        need = sum(2 * a.nbytes for layer in layers for a in layer.params.values())
        need += sum(a.nbytes for layer in layers for a in layer.buffers.values())
        if need > max_bytes:
            raise FxpsimError(f"architecture spec {spec!r} needs {need / 2**30:.3g} GiB of parameters and "
                              f"gradients, more than the {max_bytes / 2**30:.3g} GiB model budget: choose "
                              "smaller layers (or raise $FXPSIM_MAX_MODEL_BYTES)")
    init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(init_seq)
    for layer in layers:
        init_layer(layer, init, rng)
    net = Network(layers, input_shape, seed=int(dropout_seq.generate_state(1)[0]))
    if net.output_shape != (int(n_classes),):
        raise FxpsimError(f"architecture spec {spec!r} outputs shape {net.output_shape}, not ({n_classes},)")
    return net
