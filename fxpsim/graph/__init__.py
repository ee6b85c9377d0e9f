"""The layer graph shared by the NumPy trainer and the fixed-point simulator.

Simple to complex: :mod:`.geometry` (window sizes, pooling folds),
:mod:`.registry` (layer kind -> class, spec token rules), :mod:`.layers`
(the float layers with forward and backward), :mod:`.spec` (the spec
grammar), :mod:`.zoo` (named architectures), :mod:`.network` (the
container and its state), :mod:`.init` (weight initialisation),
:mod:`.build` (:func:`build_network`).

Other layer kinds register themselves when their module is imported
(:mod:`fxpsim.binary.train_layers`: ``bdense``, ``bconv2d``, ``sign``);
``import fxpsim`` does that, so this package never imports them.
"""

from .build import build_network
from .geometry import conv_out_size, pool_reduce, window_view
from .init import INIT_SCHEMES, fans, init_layer, init_weight, parse_init
from .layers import (DEFAULT_DTYPE, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU,
                     Sigmoid, Tanh)
from .network import Network, layer_from_config
from .registry import LAYER_KINDS, TokenRule, layer_class, register_layer, register_tokens, token_rule
from .spec import GRAMMAR, format_spec, layer_token, parse_spec, resolve_spec
from .zoo import ARCHITECTURES

__all__ = [
    "ARCHITECTURES", "DEFAULT_DTYPE", "GRAMMAR", "INIT_SCHEMES", "LAYER_KINDS", "AvgPool2D", "BatchNorm", "Conv2D",
    "Dense", "Dropout", "Flatten", "Layer", "MaxPool2D", "Network", "ReLU", "Sigmoid", "Tanh", "TokenRule",
    "build_network", "conv_out_size", "fans", "format_spec", "init_layer", "init_weight", "layer_class",
    "layer_from_config", "layer_token", "parse_init", "parse_spec", "pool_reduce", "register_layer",
    "register_tokens", "resolve_spec", "token_rule", "window_view",
]
