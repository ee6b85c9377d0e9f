"""The spec grammar: flatten insertion, round trips, one-line errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.errors import FxpsimError
from fxpsim.graph.build import build_network
from fxpsim.graph.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, ReLU
from fxpsim.graph.spec import parse_spec


def test_flatten_inserted_only_where_needed():
    layers = parse_spec("fc4-relu-fc3", (1, 2, 2))
    assert [type(layer) for layer in layers] == [Flatten, Dense, ReLU, Dense]
    layers = parse_spec("conv2x1-bn-dropout10-fc3", (1, 2, 2))
    assert [type(layer) for layer in layers] == [Conv2D, BatchNorm, Dropout, Flatten, Dense]
    assert layers[1].num_features == 2  # per channel before the flatten


@pytest.mark.parametrize(
    "spec, canonical",
    [("conv4x3s2p1-bn-relu-avgpool2-flatten-bn-dropout50-fc10", None),
     ("conv3x2-maxpool3s2-tanh-fc7-sigmoid-fc10", None), ("flatten-fc10", "fc10"), ("fc10-bn", None),
     ("dropout12.5-fc10", None), ("avgpool2s1-conv5x2p2-fc10", None),
     ("conv2x3s1p0-maxpool2s2-fc10", "conv2x3-maxpool2-fc10"),
     (" LeNet5 ", "conv6x5-relu-maxpool2-conv16x5-relu-maxpool2-fc120-relu-fc84-relu-fc10")],
)
def test_spec_round_trip(spec, canonical):
    shape = (1, 28, 28) if "lenet" in spec.lower() else (2, 9, 9)
    net = build_network(spec, shape, 10, seed=1)
    assert net.spec() == (canonical or spec)
    again = build_network(net.spec(), shape, 10, seed=1)
    assert again.to_config() == net.to_config()
    for (k1, a, _), (k2, b, _) in zip(net.params_and_grads(), again.params_and_grads()):
        assert k1 == k2
        np.testing.assert_array_equal(a, b)


@st.composite
def spec_st(draw):
    """A random valid spec on (2, 12, 12): convs/pools first, then fcs, ending with fc10."""
    tokens, size = [], 12
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["conv", "pool", "act", "bn"]))
        if kind == "conv":
            k, s, p = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
            if (size + 2 * p - k) // s + 1 < 1:
                continue
            size = (size + 2 * p - k) // s + 1
            tokens.append(f"conv{draw(st.integers(1, 4))}x{k}" + (f"s{s}" if s > 1 else "") + (f"p{p}" if p else ""))
        elif kind == "pool" and size >= 2:
            tokens.append(draw(st.sampled_from(["maxpool2", "avgpool2"])))
            size //= 2
        elif kind in ("act", "bn"):
            tokens.append(draw(st.sampled_from(["relu", "tanh", "sigmoid", "bn"])))
    for _ in range(draw(st.integers(0, 2))):
        tokens.append(f"fc{draw(st.integers(1, 9))}")
        tokens.append(draw(st.sampled_from(["relu", "bn", "dropout25", "tanh"])))
    tokens.append("fc10")
    return "-".join(tokens)


@given(spec_st())
def test_any_valid_spec_round_trips(spec):
    net = build_network(spec, (2, 12, 12), 10, seed=0)
    assert net.spec() == spec
    assert net.output_shape == (10,)


@pytest.mark.parametrize(
    "spec, token",
    [("conv6x5-relu-fc11", None), ("foo", "foo"), ("conv6-fc10", "conv6"), ("fc10--relu", ""),
     ("conv6x5-rulu-fc10", "rulu"), ("fc10-dropout100", "dropout100"), ("fcx-fc10", "fcx"),
     ("conv0x3-fc10", "conv0x3"), ("maxpool0-fc10", "maxpool0"), ("fc0-fc10", "fc0"), ("", ""),
     ("conv4x9-fc10", "conv4x9"), ("maxpool3-maxpool3-maxpool3-fc10", "maxpool3"), ("relu", None),
     ("conv4x3 - fc10", "conv4x3 ")],
)
def test_malformed_specs_are_one_line_errors(spec, token):
    with pytest.raises(FxpsimError) as info:
        build_network(spec, (1, 8, 8), 10)
    message = str(info.value)
    assert "\n" not in message
    if token is not None:
        assert f"token {token!r}" in message
    if token and token.rstrip("0123456789") in {"foo", "conv", "rulu", "fcx"}:
        assert "conv<C>x<k>" in message and "lenet5" in message  # the grammar and the names


def test_spec_errors_name_the_fix():
    with pytest.raises(FxpsimError, match="make the last fc fc10"):
        build_network("fc64-relu-fc11", (1, 8, 8), 10)
    with pytest.raises(FxpsimError, match="no fc layer"):
        build_network("conv2x3-relu", (1, 8, 8), 10)
    with pytest.raises(FxpsimError, match="conv needs"):
        build_network("conv2x3-fc10", (64,), 10)
    with pytest.raises(FxpsimError, match="initialisation"):
        build_network("mlp", (64,), 10, init="zeros")
