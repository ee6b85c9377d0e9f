"""Weight initialisation (lecture notes, "Weight Initialization"), seeded.

``d`` = fan_in is the number of inputs of one neuron: ``n_in`` for a dense
layer, ``c_in * k * k`` for a convolution; fan_out is ``n_out`` or
``c_out * k * k`` (Glorot and Bengio's convention).

=================  ==============================================================
scheme             weights
=================  ==============================================================
``small``          ``0.01 * N(0, 1)`` (the notes' first example; fails for deep nets)
``xavier-uniform`` ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))`` (Glorot 2010)
``xavier-normal``  ``N(0, sqrt(1 / fan_in))``: ``randn(fan_in, fan_out) / sqrt(fan_in)``
``he``             ``N(0, sqrt(2 / fan_in))`` (He et al. 2015, for ReLU)
=================  ==============================================================

``N(0, s)`` means standard deviation ``s``. (The notes' He code line reads
``randn(...) / np.sqrt(2/fan_in)``; its text, "w ~ N(0, sqrt(2/d))", and
He et al. give the standard deviation ``sqrt(2/fan_in)``, which is used here.)
Biases start at zero; BatchNorm at ``gamma = 1``, ``beta = 0``.
"""

from __future__ import annotations

import numpy as np

from ..errors import FxpsimError

INIT_SCHEMES = ("small", "xavier-uniform", "xavier-normal", "he")
_ALIASES = {"glorot": "xavier-uniform", "glorot-uniform": "xavier-uniform", "kaiming": "he"}


def parse_init(name: str) -> str:
    """Canonical scheme name (aliases: glorot, glorot-uniform, kaiming) or a one-line error."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in INIT_SCHEMES:
        raise FxpsimError(f"unknown initialisation {name!r}: use one of {', '.join(INIT_SCHEMES)}")
    return key


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a dense ``W (n_in, n_out)`` or conv ``W (c_out, c_in, k, k)``."""
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if len(shape) == 4:
        receptive = int(shape[2]) * int(shape[3])
        return int(shape[1]) * receptive, int(shape[0]) * receptive
    raise FxpsimError(f"weight shape {shape} is neither dense (n_in, n_out) nor conv (c_out, c_in, k, k)")


def init_weight(shape: tuple[int, ...], scheme: str, rng: np.random.Generator) -> np.ndarray:
    """A float64 weight array of ``shape`` drawn by ``scheme`` from ``rng``."""
    scheme = parse_init(scheme)
    fan_in, fan_out = fans(shape)
    if scheme == "small":
        return 0.01 * rng.standard_normal(shape)
    if scheme == "xavier-uniform":
        a = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, size=shape)
    if scheme == "xavier-normal":
        return rng.standard_normal(shape) / np.sqrt(fan_in)
    return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)  # he


def init_layer(layer, scheme: str, rng: np.random.Generator) -> None:
    """Fill ``layer.params['W']`` in place by ``scheme``; zero its bias.

    Layers without a weight are left alone (BatchNorm keeps gamma = 1, beta = 0).
    """
    if "W" not in layer.params:
        return
    w = layer.params["W"]
    w[...] = init_weight(w.shape, scheme, rng)
    if "b" in layer.params:
        layer.params["b"][...] = 0
