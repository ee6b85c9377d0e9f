"""Import shim: the layer graph lives in :mod:`fxpsim.graph` (README and docs/INTERFACES.md name this path)."""

from .graph import (ARCHITECTURES, DEFAULT_DTYPE, GRAMMAR, LAYER_KINDS, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout,
                    Flatten, Layer, MaxPool2D, Network, ReLU, Sigmoid, Tanh, build_network, init_layer,
                    layer_from_config, parse_init, parse_spec, pool_reduce, resolve_spec)

__all__ = ["ARCHITECTURES", "DEFAULT_DTYPE", "GRAMMAR", "LAYER_KINDS", "AvgPool2D", "BatchNorm", "Conv2D", "Dense",
           "Dropout", "Flatten", "Layer", "MaxPool2D", "Network", "ReLU", "Sigmoid", "Tanh", "build_network",
           "init_layer", "layer_from_config", "parse_init", "parse_spec", "pool_reduce", "resolve_spec"]
