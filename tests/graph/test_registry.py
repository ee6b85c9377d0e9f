"""The kind registry: float kinds in order, binary kinds registered by their module, conflicts refused."""

import subprocess
import sys

import numpy as np
import pytest

import fxpsim.binary.train_layers as binary_layers
import fxpsim.graph as graph
import fxpsim.network
import fxpsim.train.init
from fxpsim.errors import FxpsimError
from fxpsim.graph.build import build_network
from fxpsim.graph.layers import Dense, Dropout, Layer
from fxpsim.graph.registry import LAYER_KINDS, TokenRule, layer_class, register_layer, register_tokens, token_rule

FLOAT_KINDS = ["dense", "conv2d", "maxpool2d", "avgpool2d", "flatten", "relu", "tanh", "sigmoid", "batchnorm",
               "dropout"]


def test_float_kinds_first_in_their_old_order_then_binary():
    assert list(LAYER_KINDS)[:10] == FLOAT_KINDS
    for cls in binary_layers.BINARY_LAYERS:
        assert layer_class(cls.kind) is cls
    with pytest.raises(FxpsimError, match="unknown layer kind 'lstm': expected one of dense, conv2d"):
        layer_class("lstm")


def test_conflicting_kind_or_token_prefix_is_refused_and_nothing_changes():
    kinds, dense_rule = dict(LAYER_KINDS), token_rule("fc10")

    class Other(Layer):
        kind = "dense"

    with pytest.raises(FxpsimError, match="layer kind 'dense' of .*Other is already registered by .*Dense"):
        register_layer(Other)
    assert register_layer(Dense) is Dense  # the same class again: no-op
    with pytest.raises(FxpsimError, match="prefix 'fcx' overlaps the registered prefix 'fc'"):
        register_tokens(TokenRule(("fcx",), lambda tok, shape, dtype: None))
    with pytest.raises(FxpsimError, match="prefix 'b' overlaps"):
        register_tokens(TokenRule(("b",), lambda tok, shape, dtype: None))
    assert LAYER_KINDS == kinds and token_rule("fc10") is dense_rule and token_rule("fcx10") is dense_rule


def test_every_token_has_one_rule():
    claims = {tok: token_rule(tok) for tok in ["conv6x5", "fc10", "maxpool2", "avgpool2s1", "dropout50", "bn",
                                                "relu", "tanh", "sigmoid", "flatten", "bfc10bnn", "bconv4x3xnor",
                                                "sign"]}
    assert all(rule is not None for rule in claims.values())
    assert claims["fc10"].flat_input and claims["bfc10bnn"].flat_input and not claims["conv6x5"].flat_input
    assert claims["bfc10bnn"].build is binary_layers.parse_binary_token
    assert token_rule("lstm4") is None and token_rule("") is None


def test_old_import_paths_are_the_same_objects():
    for name in fxpsim.network.__all__:
        assert getattr(fxpsim.network, name) is getattr(graph, name), name
    for name in fxpsim.train.init.__all__:
        assert getattr(fxpsim.train.init, name) is getattr(graph, name), name


def test_layers_with_an_rng_draw_from_the_network_stream():
    net = build_network("bfc8bcs-dropout50-bfc4bc-fc3", (5,), 3, seed=0)
    assert all(layer.rng is net.rng for layer in net.layers if hasattr(layer, "rng"))
    assert sum(isinstance(layer, Dropout) for layer in net.layers) == 1 and len(net.layers) == 4
    x = np.ones((2, 5), dtype=np.float32)
    again = build_network("bfc8bcs-dropout50-bfc4bc-fc3", (5,), 3, seed=0)
    np.testing.assert_array_equal(net.forward(x, training=True), again.forward(x, training=True))


_FRESH = r"""
import sys
import numpy as np
from fxpsim.graph import Network, build_network, parse_spec
from fxpsim.graph.layers import Layer
from fxpsim.graph.registry import TokenRule, register_layer, register_tokens

net = build_network("bconv2x3p1bnn-bn-sign-bfc10xnor-bn", (1, 6, 6), 10, seed=0)  # binary kinds, no binary import
back = Network.from_config(net.to_config())
assert [l.kind for l in back.layers] == ["bconv2d", "batchnorm", "sign", "flatten", "bdense", "batchnorm"]

@register_layer
class Square(Layer):
    kind = "square"
    def forward(self, x, training=False):
        self._cache = x
        return x * x
    def backward(self, dout):
        return 2 * self._cache * dout
    def token(self):
        return "square"

register_tokens(TokenRule(("square",), lambda tok, shape, dtype: Square() if tok == "square" else None))
net = build_network("fc4-square-fc3", (2,), 3, seed=1)
assert net.spec() == "fc4-square-fc3"
back = Network.from_config(net.to_config())
back.load_state_dict(net.state_dict())
x = np.arange(4, dtype=np.float32).reshape(2, 2)
assert np.array_equal(back.forward(x), net.forward(x))
print("ok")
"""


def test_registered_kinds_resolve_in_a_fresh_interpreter():
    """``import fxpsim.graph`` alone resolves binary kinds (``import fxpsim`` registers them), and a
    new kind registered from outside builds, prints and reloads like a built-in one."""
    proc = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
