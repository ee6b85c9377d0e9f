"""DAG networks: the new layers' gradients, the topological container, the spec grammar, model files."""

import json

import numpy as np
import pytest

from fxpsim.errors import FxpsimError
from fxpsim.graph import Network, build_network
from fxpsim.graph.layers import Add, Clip, Concat, Conv2D, Dense, GlobalAvgPool, Identity, ReLU
from fxpsim.modelfile import check_architecture
from gradcheck import numeric_grad

from .test_layers import check_layer_grads, float64_layer


def check_merge_grads(layer, xs, rtol=1e-5, atol=1e-7):
    """Every input's gradient of ``sum(forward(xs) * G)`` against central differences."""
    g = np.random.default_rng(1).standard_normal(layer.forward(xs).shape)

    def loss():
        return float(np.sum(layer.forward(xs) * g))

    layer.forward(xs)
    dxs = layer.backward(g)
    assert len(dxs) == len(xs)
    for x, dx in zip(xs, dxs):
        assert dx.shape == x.shape
        np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=rtol, atol=atol)


@pytest.mark.parametrize("n", [2, 3])
def test_add_grads(n):
    rng = np.random.default_rng(0)
    check_merge_grads(Add(n), [rng.standard_normal((2, 3, 4, 4)) for _ in range(n)])


def test_concat_grads_and_values():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, c, 3, 3)) for c in (1, 3, 2)]
    layer = Concat(3)
    np.testing.assert_array_equal(layer.forward(xs)[:, 1:4], xs[1])
    check_merge_grads(layer, xs)
    check_merge_grads(Concat(), [rng.standard_normal((2, 4)), rng.standard_normal((2, 1))])  # flat inputs


def test_global_avg_pool_grads_and_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(GlobalAvgPool().forward(x), x.mean(axis=(2, 3)))
    check_layer_grads(GlobalAvgPool(), x)


@pytest.mark.parametrize("lo, hi", [(0.0, 6.0), (-0.5, 0.7)])
def test_clip_grads(lo, hi):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 7, (3, 20))
    x[np.abs(x - lo) < 1e-3] += 0.01  # no kink within the difference step
    x[np.abs(x - hi) < 1e-3] += 0.01
    np.testing.assert_array_equal(Clip(lo, hi).forward(x), np.clip(x, lo, hi))
    check_layer_grads(Clip(lo, hi), x)
    check_layer_grads(Identity(), x)


@pytest.mark.parametrize("c_in, c_out, groups, k, stride, padding", [(4, 6, 2, 3, 1, 1), (3, 3, 3, 3, 2, 1),
                                                                    (4, 8, 4, 1, 1, 0), (2, 4, 1, 3, 1, 0)])
def test_grouped_conv_grads_and_against_blocks(c_in, c_out, groups, k, stride, padding):
    rng = np.random.default_rng(0)
    layer = float64_layer(Conv2D(c_in, c_out, k, stride, padding, groups), rng)
    x = rng.standard_normal((2, c_in, 5, 5))
    check_layer_grads(layer, x)
    y = layer.forward(x)
    ci, co = c_in // groups, c_out // groups
    for g in range(groups):  # each group is an ordinary conv on its slice of channels
        part = Conv2D(ci, co, k, stride, padding, dtype=np.float64)
        part.params["W"][...] = layer.params["W"][g * co:(g + 1) * co]
        part.params["b"][...] = layer.params["b"][g * co:(g + 1) * co]
        np.testing.assert_allclose(y[:, g * co:(g + 1) * co], part.forward(x[:, g * ci:(g + 1) * ci]), atol=1e-12)


def test_grouped_conv_refuses_groups_that_do_not_divide():
    with pytest.raises(FxpsimError, match="groups=2 with c_in=3"):
        Conv2D(3, 4, 3, groups=2)


RESNET = "conv4x3p1-relu-res[conv4x3p1-bn-relu-conv4x3p1g2]-relu-res[conv4x1]-gap-fc3"


def test_residual_network_gradients_against_finite_differences():
    net = build_network(RESNET, (1, 5, 5), 3, seed=1, dtype=np.float64)
    assert net.is_dag and net.inputs[6] == (1, 5) and net.spec() == RESNET
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 5, 5))
    g = rng.standard_normal((3, 3))

    def loss():
        return float(np.sum(net.forward(x, training=False) * g))

    net.forward(x, training=False)
    dx = net.backward(g)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    for key, p, grad in net.params_and_grads():
        if "gamma" in key or "beta" in key:
            continue  # BN in test mode: its param grads are the training-mode ones
        np.testing.assert_allclose(grad, numeric_grad(loss, p), rtol=1e-5, atol=1e-7, err_msg=key)


def test_concat_network_gradients_and_shared_input():
    layers = [Conv2D(1, 2, 3, padding=1, dtype=np.float64), ReLU(), Conv2D(1, 3, 1, dtype=np.float64),
              Concat(), Add(), GlobalAvgPool(), Dense(5, 2, dtype=np.float64)]
    layers[2].inputs, layers[3].inputs, layers[4].inputs = (-1,), (1, 2), (3, 3)  # add(x, x): grads summed
    rng = np.random.default_rng(0)
    for layer in layers:
        float64_layer(layer, rng)
    net = Network(layers, (1, 4, 4))
    x = rng.standard_normal((2, 1, 4, 4))
    g = rng.standard_normal((2, 2))
    net.forward(x)
    dx = net.backward(g)
    np.testing.assert_allclose(dx, numeric_grad(lambda: float(np.sum(net.forward(x) * g)), x), rtol=1e-5, atol=1e-7)
    assert net.backward(g, input_grad=False) is None
    assert net.spec() == "conv2x3p1-relu-conv3x1@in-concat@1,2-add@3,3-gap-fc2"
    rebuilt = build_network(net.spec(), (1, 4, 4), 2)
    assert rebuilt.inputs == net.inputs


def test_chain_configs_unchanged_and_dag_configs_round_trip():
    chain = build_network("cnn-small", (1, 8, 8), 10)
    assert not chain.is_dag and all("inputs" not in c for c in chain.to_config()["layers"])
    net = build_network(RESNET, (1, 5, 5), 3, seed=2)
    cfg = json.loads(json.dumps(net.to_config()))
    assert cfg["layers"][6] == {"kind": "add", "n_inputs": 2, "inputs": [1, 5]}
    back = Network.from_config(cfg)
    back.load_state_dict(net.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x), net.forward(x))
    check_architecture(cfg, 2**30)


@pytest.mark.parametrize("inputs, why", [([6], "in \\[-1, 5\\]"), ([1, 1, 1], "list of 2"), ("1,5", "list of 2"),
                                         ([1.0, 5], "list of 2"), ([-2, 5], "in \\[-1, 5\\]"), ([True, 5], "list")])
def test_model_file_refuses_bad_inputs(inputs, why):
    cfg = build_network(RESNET, (1, 5, 5), 3).to_config()
    cfg["layers"][6]["inputs"] = inputs
    with pytest.raises(FxpsimError, match=f"layer 6 \\(add\\): inputs=.* is not a {why}" if "list" in why else why):
        check_architecture(cfg, 2**30)


def test_model_file_refuses_bad_new_fields():
    cfg = build_network(RESNET, (1, 5, 5), 3).to_config()
    bad = json.loads(json.dumps(cfg))
    bad["layers"][6]["n_inputs"] = 1
    with pytest.raises(FxpsimError, match="n_inputs=1 is not a whole number in \\[2, 64\\]"):
        check_architecture(bad, 2**30)
    bad = json.loads(json.dumps(cfg))
    bad["layers"][5]["groups"] = 3
    with pytest.raises(FxpsimError, match="groups=3 does not divide"):
        check_architecture(bad, 2**30)
    bad = json.loads(json.dumps(cfg))
    bad["layers"][1] = {"kind": "clip", "lo": 2.0, "hi": 1.0}
    with pytest.raises(FxpsimError, match="lo=2.0 is not below hi=1.0"):
        check_architecture(bad, 2**30)


def test_dead_branch_and_wrong_input_count_are_refused():
    with pytest.raises(FxpsimError, match="layer 1 \\(relu\\)'s output feeds no later layer"):
        build_network("conv2x3-relu-conv2x3@0-fc2", (1, 6, 6), 2)
    a = Add()
    a.inputs = (-1,)
    with pytest.raises(FxpsimError, match="has 1 inputs \\[-1\\]: it takes 2"):
        Network([a], (3,))
    with pytest.raises(FxpsimError, match="add got input shapes"):
        build_network("conv2x3-relu-res[conv3x1]-fc2", (1, 6, 6), 2)
