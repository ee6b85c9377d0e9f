"""Every float layer: gradients against central differences, forward against direct formulas."""

import numpy as np
import pytest

from fxpsim.graph.build import build_network
from fxpsim.graph.layers import AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Tanh
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
