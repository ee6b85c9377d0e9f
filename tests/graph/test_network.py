"""The Network container: whole-network gradients, dtypes, grads in place, config and state."""

import json

import numpy as np
import pytest

from fxpsim.errors import FxpsimError
from fxpsim.graph.build import build_network
from fxpsim.graph.network import Network
from fxpsim.train.losses import softmax_cross_entropy
from gradcheck import numeric_grad


def test_whole_network_grads_float64():
    net = build_network("conv3x3s2p1-bn-tanh-maxpool2-conv2x1-sigmoid-fc5-bn-relu-dropout30-fc3", (2, 8, 7), 3,
                        seed=3).astype(np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 8, 7))
    labels = np.array([0, 1, 2, 1])

    def loss():
        net.rng.bit_generator.state = state  # the same dropout mask on every evaluation
        return softmax_cross_entropy(net.forward(x, training=True), labels)[0]

    state = net.rng.bit_generator.state
    _, dlogits = softmax_cross_entropy(net.forward(x, training=True), labels)
    dx = net.backward(dlogits)
    analytic = {key: g.copy() for key, _, g in net.params_and_grads()}
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-4, atol=1e-7)
    for key, p, _ in net.params_and_grads():
        np.testing.assert_allclose(analytic[key], numeric_grad(loss, p), rtol=1e-4, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_compute_in_input_dtype(dtype):
    net = build_network("conv2x3p1-bn-relu-maxpool2-conv2x3-tanh-avgpool1-fc6-sigmoid-dropout20-fc4", (1, 8, 8), 4)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(dtype)
    out = net.forward(x, training=True)
    assert out.dtype == dtype
    _, d = softmax_cross_entropy(out, np.array([0, 1, 3]))
    assert net.backward(d).dtype == dtype


def test_integer_input_is_computed_as_float32():
    net = build_network("mlp", (1, 8, 8), 10)
    assert net.forward(np.zeros((2, 1, 8, 8), dtype=np.uint8)).dtype == np.float32


def test_backward_overwrites_grads_in_place():
    net = build_network("conv2x3-relu-fc3", (1, 5, 5), 3, seed=0)
    refs = [g for _, _, g in net.params_and_grads()]
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    _, d = softmax_cross_entropy(net.forward(x, True), np.array([0, 2]))
    net.backward(d)
    first = [g.copy() for g in refs]
    net.forward(x, True)
    net.backward(d)
    for ref, (_, _, g), f in zip(refs, net.params_and_grads(), first):
        assert ref is g
        np.testing.assert_array_equal(g, f)  # overwritten, not accumulated
    assert any(np.abs(f).sum() > 0 for f in first)


@pytest.mark.parametrize("spec", ["conv2x3-relu-fc3", "fc4-relu-fc3", "bn-conv2x2-fc3"])
def test_backward_without_input_grad_gives_the_same_grads(spec):
    net = build_network(spec, (1, 5, 5), 3, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    _, d = softmax_cross_entropy(net.forward(x, True), np.array([0, 2]))
    assert net.backward(d).shape == x.shape
    full = [g.copy() for _, _, g in net.params_and_grads()]
    for _, _, g in net.params_and_grads():
        g[...] = np.nan
    dx = net.backward(d, input_grad=False)
    assert dx is None if spec[0] != "b" else dx.shape == x.shape
    for f, (_, _, g) in zip(full, net.params_and_grads()):
        np.testing.assert_array_equal(g, f)


def test_config_and_state_dict_round_trip():
    net = build_network("conv3x3p1-bn-relu-maxpool2-fc8-bn-dropout50-fc4", (1, 6, 6), 4, seed=5)
    x = np.random.default_rng(0).standard_normal((8, 1, 6, 6)).astype(np.float32)
    net.forward(x, training=True)  # moves the BN running averages off their initial values
    cfg = json.loads(json.dumps(net.to_config()))
    state = net.state_dict()
    assert "1.running_var" in state and "0.W" in state and "6.running_mean" in state and "7.W" not in state
    copy = Network.from_config(cfg)
    assert not np.array_equal(copy.forward(x), net.forward(x))  # zero params until loaded
    copy.load_state_dict(state)
    np.testing.assert_array_equal(copy.forward(x), net.forward(x))
    assert copy.spec() == net.spec() and copy.to_config() == net.to_config()
    fresh = build_network("conv3x3p1-bn-relu-maxpool2-fc8-bn-dropout50-fc4", (1, 6, 6), 4, seed=5)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(copy.forward(x, True), fresh.forward(x, True))  # same dropout stream
    state["0.W"][...] = 0  # state_dict returns copies
    assert np.abs(net.layers[0].params["W"]).sum() > 0


def test_load_state_dict_rejects_mismatches():
    net = build_network("fc4-bn-fc3", (5,), 3)
    state = net.state_dict()
    with pytest.raises(FxpsimError, match="missing \\['1.running_var'\\]"):
        net.load_state_dict({k: v for k, v in state.items() if k != "1.running_var"})
    with pytest.raises(FxpsimError, match="unexpected \\['9.W'\\]"):
        net.load_state_dict({**state, "9.W": np.zeros(1)})
    with pytest.raises(FxpsimError, match="shape"):
        net.load_state_dict({**state, "0.W": np.zeros((4, 5))})
    with pytest.raises(FxpsimError, match="unknown layer kind"):
        Network.from_config({"input_shape": [5], "layers": [{"kind": "lstm"}]})


def test_network_rejects_wrong_input_shape():
    net = build_network("mlp", (1, 8, 8), 10)
    with pytest.raises(FxpsimError, match="expected \\(batch, 1, 8, 8\\)"):
        net.forward(np.zeros((2, 64)))
