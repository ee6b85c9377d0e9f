"""The layer graph: gradients against finite differences, shapes, specs, configs."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.errors import FxpsimError
from fxpsim.network import (ARCHITECTURES, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                            Network, ReLU, Sigmoid, Tanh, build_network, parse_spec, pool_reduce)
from fxpsim.train.init import INIT_SCHEMES, init_weight, parse_init
from fxpsim.train.losses import log_softmax, softmax, softmax_cross_entropy
from gradcheck import numeric_grad

# ---------------------------------------------------------------- helpers


def float64_layer(layer, rng):
    """Params as random float64 (BN gamma around 1), so differences are accurate."""
    for name, p in list(layer.params.items()):
        value = rng.standard_normal(p.shape)
        if name == "gamma":
            value = 1 + 0.5 * value
        layer.params[name] = value
        layer.grads[name] = np.zeros_like(value)
    for name, b in list(layer.buffers.items()):
        layer.buffers[name] = b.astype(np.float64)
    return layer


def check_layer_grads(layer, x, training=True, before_forward=lambda: None, rtol=1e-5, atol=1e-7):
    """Input and parameter gradients of ``sum(forward(x) * G)`` against central differences."""
    rng = np.random.default_rng(1)
    before_forward()
    y = layer.forward(x, training)
    g = rng.standard_normal(y.shape)

    def loss():
        before_forward()
        return float(np.sum(layer.forward(x, training) * g))

    before_forward()
    layer.forward(x, training)
    dx = layer.backward(g)
    analytic = {name: grad.copy() for name, grad in layer.grads.items()}
    assert dx.shape == x.shape and dx.dtype == np.float64
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=rtol, atol=atol)
    for name, p in layer.params.items():
        np.testing.assert_allclose(analytic[name], numeric_grad(loss, p), rtol=rtol, atol=atol, err_msg=name)


# ---------------------------------------------------------------- gradients of every layer


def test_dense_grads():
    rng = np.random.default_rng(0)
    layer = float64_layer(Dense(5, 4), rng)
    check_layer_grads(layer, rng.standard_normal((3, 5)))


@pytest.mark.parametrize(
    "c_in, c_out, k, stride, padding, hw",
    [(1, 2, 3, 1, 0, (5, 5)), (2, 3, 3, 2, 1, (7, 6)), (3, 2, 2, 2, 0, (6, 5)), (2, 2, 3, 1, 2, (4, 4)),
     (1, 1, 5, 3, 1, (8, 9))],
)
def test_conv_grads(c_in, c_out, k, stride, padding, hw):
    rng = np.random.default_rng(0)
    layer = float64_layer(Conv2D(c_in, c_out, k, stride, padding), rng)
    check_layer_grads(layer, rng.standard_normal((2, c_in, *hw)))


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("size, stride, hw", [(2, None, (4, 6)), (3, 2, (7, 6)), (2, 1, (3, 4)), (2, 2, (5, 5))])
def test_pool_grads(cls, size, stride, hw):
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 3 * hw[0] * hw[1]).reshape(2, 3, *hw) / 7.0  # distinct values: no ties
    check_layer_grads(cls(size, stride), x)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),
       st.integers(3, 9), st.integers(3, 9), st.integers(0, 2**32 - 1))
def test_pool_reduce_equals_window_reductions(b, c, k, stride, h, w, seed):
    """Max and sum over k x k windows at any stride, incl. overlapping and ragged edges."""
    x = np.random.default_rng(seed).integers(-2**40, 2**40, (b, c, h, w))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    np.testing.assert_array_equal(pool_reduce(x, k, stride, np.maximum), win.max(axis=(-2, -1)))
    np.testing.assert_array_equal(pool_reduce(x, k, stride, np.add), win.sum(axis=(-2, -1)))


@pytest.mark.parametrize("cls", [ReLU, Tanh, Sigmoid, Flatten])
def test_elementwise_grads(cls):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 3, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU's kink away from the difference step
    check_layer_grads(cls(), x)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_grads(shape, training):
    rng = np.random.default_rng(0)
    layer = float64_layer(BatchNorm(shape[1]), rng)
    layer.buffers["running_mean"][...] = rng.standard_normal(shape[1])
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2, shape[1])
    check_layer_grads(layer, 2 + 3 * rng.standard_normal(shape), training=training, rtol=1e-4, atol=1e-6)


def test_dropout_grads_with_fixed_mask():
    rng = np.random.default_rng(0)
    layer = Dropout(0.4)

    def same_mask():
        layer.rng = np.random.default_rng(42)

    check_layer_grads(layer, rng.standard_normal((4, 6)), before_forward=same_mask)
    same_mask()
    y = layer.forward(np.ones((4, 6)), training=True)
    assert set(np.unique(y)) <= {0.0, 1 / 0.6} and (y == 0).any()


def test_loss_grad_and_value():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    loss, dz = softmax_cross_entropy(z, y)
    naive = -np.mean(np.log(np.exp(z[np.arange(5), y]) / np.exp(z).sum(axis=1)))
    assert loss == pytest.approx(naive, rel=1e-12)
    np.testing.assert_allclose(dz, numeric_grad(lambda: softmax_cross_entropy(z, y)[0], z), rtol=1e-6, atol=1e-9)


def test_log_softmax_is_stable():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4]], dtype=np.float32)
    lp = log_softmax(z)
    assert np.isfinite(lp).all() and lp.dtype == np.float32
    np.testing.assert_allclose(lp[0], [0.0, -1e4, -2e4])
    np.testing.assert_allclose(softmax(z).sum(axis=1), 1, rtol=1e-6)
    loss, dz = softmax_cross_entropy(z, np.array([1, 2]))
    assert loss == pytest.approx((1e4 + np.log(3)) / 2) and np.isfinite(dz).all() and dz.dtype == np.float32


def test_loss_rejects_bad_labels():
    with pytest.raises(FxpsimError, match="labels outside"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(FxpsimError, match="integer class"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


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


# ---------------------------------------------------------------- forward semantics


def test_conv_forward_matches_direct_formula():
    rng = np.random.default_rng(0)
    layer = float64_layer(Conv2D(2, 3, 3, stride=2, padding=1), rng)
    x = rng.standard_normal((2, 2, 6, 5))
    y = layer.forward(x)
    w, b = layer.params["W"], layer.params["b"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((2, 3, 3, 3))
    for n in range(2):
        for f in range(3):
            for i in range(3):
                for j in range(3):
                    ref[n, f, i, j] = b[f] + np.sum(w[f] * xp[n, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3])
    np.testing.assert_allclose(y, ref, rtol=1e-12)


def test_pool_forward_and_tie_routing():
    x = np.array([[[[1.0, 5, 2, 2], [3, 4, 2, 2], [0, 0, 9, 1], [0, -1, 1, 1]]]])
    mp, ap = MaxPool2D(2), AvgPool2D(2)
    np.testing.assert_array_equal(mp.forward(x), [[[[5, 2], [0, 9]]]])
    np.testing.assert_array_equal(ap.forward(x), [[[[13 / 4, 2], [-1 / 4, 3]]]])
    dx = mp.backward(np.ones((1, 1, 2, 2)))
    expected = [[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]  # ties: first maximum only
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_overlapping_maxpool_matches_loops():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 7, 8))
    y = MaxPool2D(3, 2).forward(x)
    ref = np.array([[[[x[n, c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max() for j in range(3)] for i in range(3)]
                     for c in range(2)] for n in range(2)])
    np.testing.assert_array_equal(y, ref)


def test_batchnorm_train_and_test_modes():
    rng = np.random.default_rng(0)
    bn = BatchNorm(3, momentum=0.5)
    x = (5 + 2 * rng.standard_normal((64, 3, 4, 4))).astype(np.float32)
    y = bn.forward(x, training=True)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.5 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(bn.buffers["running_var"], 0.5 + 0.5 * x.var(axis=(0, 2, 3)), rtol=1e-5)
    before = {k: v.copy() for k, v in bn.buffers.items()}
    y_test = bn.forward(x[:2], training=False)  # test mode: running averages, no update
    mean, var = before["running_mean"], before["running_var"]
    np.testing.assert_allclose(y_test, (x[:2] - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), rtol=1e-5)
    for k in before:
        np.testing.assert_array_equal(bn.buffers[k], before[k])


def test_dropout_inverted_and_deterministic():
    x = np.ones((200, 50), dtype=np.float32)
    layer = Dropout(0.5)
    np.testing.assert_array_equal(layer.forward(x), x)  # test mode: identity
    y = layer.forward(x, training=True)
    assert y.dtype == np.float32 and 0.45 < (y == 0).mean() < 0.55
    assert abs(y.mean() - 1) < 0.05  # scaled by 1/(1-p): expectation kept
    a = build_network("fc8-dropout50-fc3", (5,), 3, seed=7)
    b = build_network("fc8-dropout50-fc3", (5,), 3, seed=7)
    xs = np.ones((4, 5), dtype=np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(a.forward(xs, training=True), b.forward(xs, training=True))
    assert not np.array_equal(a.forward(xs, training=True), a.forward(xs, training=True))


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


# ---------------------------------------------------------------- shapes, specs, architectures


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 28, 28)])
def test_architectures_build_and_shapes(name, input_shape):
    if name == "lenet5" or name == "lenet5-caffe":
        if input_shape == (1, 8, 8):
            with pytest.raises(FxpsimError, match="does not fit"):
                build_network(name, input_shape, 10)
            return
    net = build_network(name, input_shape, 10, seed=0)
    x = np.zeros((2, *input_shape), dtype=np.float32)
    h = x
    for layer, shape_in, shape_out in zip(net.layers, net.shapes, net.shapes[1:]):
        assert h.shape[1:] == shape_in
        h = layer.forward(h)
        assert h.shape[1:] == shape_out == layer.output_shape(shape_in)
    assert h.shape == (2, 10)
    rebuilt = build_network(net.spec(), input_shape, 10, seed=0)
    assert [layer.config() for layer in rebuilt.layers] == [layer.config() for layer in net.layers]


def test_named_architectures():
    assert build_network("lenet5", (1, 28, 28), 10).spec() == (
        "conv6x5-relu-maxpool2-conv16x5-relu-maxpool2-fc120-relu-fc84-relu-fc10")
    assert build_network("mlp", (1, 28, 28), 10).spec() == "fc300-relu-fc100-relu-fc10"
    assert build_network("mlp", (1, 8, 8), 10).spec() == "fc64-relu-fc32-relu-fc10"
    assert build_network("cnn-small", (1, 8, 8), 10).spec() == (
        "conv16x3p1-relu-maxpool2-conv32x3p1-relu-maxpool2-fc10")
    caffe = build_network("lenet5-caffe", (1, 28, 28), 10)
    assert sum(p.size for _, p, _ in caffe.params_and_grads()) == 431080  # Han et al.'s 431K
    lenet = build_network("LeNet5", (1, 28, 28), 10)
    assert [type(layer) for layer in lenet.layers][:7] == [Conv2D, ReLU, MaxPool2D, Conv2D, ReLU, MaxPool2D, Flatten]
    assert lenet.shapes[7] == (256,)


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


# ---------------------------------------------------------------- config and state round trips


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


# ---------------------------------------------------------------- initialisation


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_statistics(scheme):
    rng = np.random.default_rng(0)
    shape = (64, 32, 5, 5)  # fan_in 800, fan_out 1600
    w = init_weight(shape, scheme, rng)
    expected_std = {"small": 0.01, "xavier-uniform": np.sqrt(6 / 2400) / np.sqrt(3),
                    "xavier-normal": 1 / np.sqrt(800), "he": np.sqrt(2 / 800)}[scheme]
    assert w.std() == pytest.approx(expected_std, rel=0.02)
    assert abs(w.mean()) < 0.02 * expected_std * 10
    if scheme == "xavier-uniform":
        assert np.abs(w).max() <= np.sqrt(6 / 2400)


def test_init_dense_fans_and_seeding():
    w = init_weight((300, 100), "he", np.random.default_rng(0))
    assert w.std() == pytest.approx(np.sqrt(2 / 300), rel=0.02)
    a = build_network("lenet5", (1, 28, 28), 10, seed=1, init="xavier-uniform")
    b = build_network("lenet5", (1, 28, 28), 10, seed=1, init="glorot")
    c = build_network("lenet5", (1, 28, 28), 10, seed=2, init="xavier-uniform")
    for (_, pa, _), (_, pb, _), (key, pc, _) in zip(a.params_and_grads(), b.params_and_grads(),
                                                   c.params_and_grads()):
        np.testing.assert_array_equal(pa, pb)
        if key.endswith(".b"):
            assert not pa.any()  # biases start at zero
        else:
            assert pa.dtype == np.float32 and not np.array_equal(pa, pc)
    assert parse_init("Kaiming") == "he"
    with pytest.raises(FxpsimError, match="unknown initialisation"):
        parse_init("xavier")
