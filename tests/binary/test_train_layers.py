"""Training-side binary/ternary layers, the integer BNN run and `fxpsim binary` (digits / synthetic only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fxpsim.binary.netsim import BnnSimulator
from fxpsim.binary.quantizers import bwn_binarize, ttq_ternarize
from fxpsim.binary.train_layers import (
    METHODS,
    BinaryConv2D,
    BinaryDense,
    SignActivation,
    binary_spec,
    parse_method,
)
from fxpsim.cli import main
from fxpsim.cli.binary import macs, model_bits
from fxpsim.errors import FxpsimError
from fxpsim.modelfile import Model, load_model, save_model
from fxpsim.network import Network, build_network
from fxpsim.train.data import Preprocess, load_dataset
from fxpsim.train.trainer import TrainConfig, train
from gradcheck import numeric_grad

RNG = np.random.default_rng(7)
MLP = "fc32-bn-relu-fc32-bn-relu-fc10"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def bnn_model(digits):
    model, _ = train(digits, "fc64-bn-relu-fc64-bn-relu-fc10",
                     TrainConfig(epochs=6, lr=3e-3, method="bnn", preprocess="none", init="xavier-uniform"),
                     progress=False)
    return model


def _weights(shape, scale=0.6):
    w = RNG.uniform(-scale, scale, size=shape)
    w[np.abs(w) < 0.05] += 0.1  # keep away from the sign/threshold discontinuities
    return w


def _dense(method, n_in=7, n_out=5):
    layer = BinaryDense(n_in, n_out, method, dtype=np.float64)
    layer.params["W"][...] = _weights((n_in, n_out))
    if "b" in layer.params:
        layer.params["b"][...] = RNG.standard_normal(n_out)
    return layer


def _conv(method):
    layer = BinaryConv2D(2, 3, 3, 1, 1, method, dtype=np.float64)
    layer.params["W"][...] = _weights((3, 2, 3, 3))
    return layer


# ---------------------------------------------------------------- forward: the quantizers of each method


@pytest.mark.parametrize("method", METHODS)
def test_forward_uses_the_method_quantized_weights(method):
    layer = _dense(method)
    x = RNG.standard_normal((4, 7))
    y = layer.forward(x, training=False)
    w = layer.params["W"]
    b = layer.params.get("b", np.zeros(5))
    if method in ("bc", "bnn"):
        wq = np.where(w >= 0, 1.0, -1.0)
    elif method == "bcs":
        wq = w  # test time: the expectation of the stochastic samples
    elif method in ("bwn", "xnor"):
        wq = np.mean(np.abs(w), axis=0, keepdims=True) * np.where(w >= 0, 1, -1)
    elif method == "twn":
        delta = 0.7 * np.abs(w).mean()
        alpha = np.abs(w)[np.abs(w) > delta].mean()
        wq = alpha * np.where(np.abs(w) > delta, np.sign(w), 0)
    else:
        s = layer.params["wp"][0]
        assert s > 0 and layer.params["wn"][0] == s
        wq = np.where(w > 0.05 * np.abs(w).max(), s, np.where(w < -0.05 * np.abs(w).max(), -s, 0))
    if method == "xnor":
        beta = np.abs(x).mean(axis=1, keepdims=True)
        expect = beta * (np.where(x >= 0, 1.0, -1.0) @ wq)
    else:
        expect = x @ wq + b
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)


def test_stochastic_binaryconnect_samples_hard_sigmoid_with_the_network_stream():
    layer = BinaryDense(1, 20000, "bcs", dtype=np.float64)
    layer.params["W"][...] = 0.5  # P(+1) = hard_sigmoid(0.5) = 0.75
    net = Network([layer], (1,), seed=3)
    assert layer.rng is net.rng
    y = net.forward(np.ones((1, 1)), training=True)
    assert set(np.unique(y)) == {-1.0, 1.0}
    assert abs((y > 0).mean() - 0.75) < 0.02
    assert np.array_equal(net.forward(np.ones((1, 1))), np.full((1, 20000), 0.5))


# ---------------------------------------------------------------- backward: STE rules and gradient checks


def test_sign_activation_straight_through_rule_exactly():
    x = np.array([[-2.0, -1.0, -0.3, 0.0, 0.7, 1.0, 1.5]])
    layer = SignActivation()
    assert np.array_equal(layer.forward(x, True), [[-1, -1, -1, 1, 1, 1, 1]])
    dy = np.arange(1.0, 8.0)[None]
    assert np.array_equal(layer.backward(dy), [[0, 2, 3, 4, 5, 6, 0]])


@pytest.mark.parametrize("method", ["bc", "bcs", "bnn"])
def test_binary_weight_gradient_is_straight_through_cancelled_outside_unit(method):
    layer = _dense(method)
    layer.params["W"][0, :2] = [1.5, -1.2]  # outside [-1, 1]: gradient cancelled
    x = RNG.standard_normal((4, 7))
    dy = RNG.standard_normal((4, 5))
    layer.forward(x, training=True)
    layer.backward(dy)
    expect = (x.T @ dy) * (np.abs(layer.params["W"]) <= 1)
    np.testing.assert_allclose(layer.grads["W"], expect, rtol=1e-12)
    assert layer.grads["W"][0, 0] == 0 and layer.grads["W"][0, 1] == 0


@pytest.mark.parametrize("method", ["bc", "bnn", "bwn", "twn", "ttq"])
@pytest.mark.parametrize("conv", [False, True])
def test_input_gradient_matches_finite_differences(method, conv):
    layer = _conv(method) if conv else _dense(method)
    x = RNG.standard_normal((2, 2, 5, 5) if conv else (3, 7))
    y0 = layer.forward(x)
    dy = RNG.standard_normal(y0.shape)
    layer.forward(x, training=True)
    dx = layer.backward(dy)
    num = numeric_grad(lambda: float(np.sum(layer.forward(x) * dy)), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def _dl_dwq(layer, x, dy):
    """dL/dW~ from the float twin of ``layer`` holding the quantized weights."""
    from fxpsim.network import Conv2D, Dense

    wq = layer.quantized_weights()
    twin = (Conv2D(2, 3, 3, 1, 1, dtype=np.float64) if wq.ndim == 4 else Dense(*wq.shape, dtype=np.float64))
    twin.params["W"][...] = wq
    twin.forward(x, training=True)
    twin.backward(dy)
    return twin.grads["W"]


@pytest.mark.parametrize("conv", [False, True])
def test_ttq_gradients_scales_by_finite_differences_latent_by_the_ttq_rule(conv):
    layer = _conv("ttq") if conv else _dense("ttq")
    layer.params["W"].reshape(-1)[:2] = [0.01, -0.01]  # below Delta = 0.05 max|W|: code 0
    x = RNG.standard_normal((2, 2, 5, 5) if conv else (3, 7))
    layer.forward(x)
    layer.params["wp"][...] = 0.8
    layer.params["wn"][...] = 0.3
    dy = RNG.standard_normal(layer.forward(x).shape)
    layer.forward(x, training=True)
    layer.backward(dy)
    for name in ("wp", "wn"):
        num = numeric_grad(lambda: float(np.sum(layer.forward(x) * dy)), layer.params[name])
        np.testing.assert_allclose(layer.grads[name], num, rtol=1e-6)
    g = _dl_dwq(layer, x, dy)
    codes = ttq_ternarize(layer.params["W"], 0.8, 0.3, 0.05).codes
    assert np.array_equal(layer.codes(), codes) and set(np.unique(codes)) == {-1, 0, 1}
    expect = np.where(codes > 0, 0.8 * g, np.where(codes < 0, 0.3 * g, g))  # Zhu et al. Eq. 8
    np.testing.assert_allclose(layer.grads["W"], expect, rtol=1e-12)


@pytest.mark.parametrize("conv", [False, True])
def test_bwn_weight_gradient_is_the_exact_chain_rule_plus_straight_through(conv):
    """W~ = A(W) sign(W): finite differences see only the A term; the STE adds g A 1{|W|<=1}."""
    layer = _conv("bwn") if conv else _dense("bwn")
    x = RNG.standard_normal((2, 2, 5, 5) if conv else (3, 7))
    dy = RNG.standard_normal(layer.forward(x).shape)
    layer.forward(x, training=True)
    layer.backward(dy)
    fd = numeric_grad(lambda: float(np.sum(layer.forward(x) * dy)), layer.params["W"])
    w = layer.params["W"]
    axes = (0,) if not conv else (1, 2, 3)
    n = np.prod([w.shape[i] for i in axes])
    a = np.mean(np.abs(w), axis=axes, keepdims=True)
    sgn = np.where(w >= 0, 1.0, -1.0)
    g = _dl_dwq(layer, x, dy)
    cross = sgn / n * np.sum(g * sgn, axis=axes, keepdims=True)
    np.testing.assert_allclose(fd, cross, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(layer.grads["W"], g * a + cross, rtol=1e-10, atol=1e-12)


def test_twn_weight_gradient_is_straight_through():
    layer = _dense("twn")
    x, dy = RNG.standard_normal((3, 7)), RNG.standard_normal((3, 5))
    layer.forward(x, training=True)
    layer.backward(dy)
    np.testing.assert_allclose(layer.grads["W"], x.T @ dy, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], dy.sum(axis=0), rtol=1e-12)


def test_xnor_input_gradient_is_the_sign_straight_through_with_scale():
    layer = _dense("xnor")
    x = RNG.standard_normal((4, 7)) * 1.5
    dy = RNG.standard_normal((4, 5))
    layer.forward(x, training=True)
    dx = layer.backward(dy)
    beta = np.abs(x).mean(axis=1, keepdims=True)
    wq = bwn_binarize(layer.params["W"]).value
    np.testing.assert_allclose(dx, ((dy * beta) @ wq.T) * (np.abs(x) <= 1), rtol=1e-12)
    assert "b" not in layer.params


def test_xnor_conv_scale_is_the_box_filtered_channel_mean():
    layer = _conv("xnor")
    x = RNG.standard_normal((1, 2, 5, 5))
    k = layer._input_scale(x)
    a = np.pad(np.abs(x).mean(axis=1)[0], 1)
    assert k.shape == (1, 1, 5, 5)
    assert np.isclose(k[0, 0, 2, 3], a[2:5, 3:6].mean())


# ---------------------------------------------------------------- specs, configs, model files, errors


@pytest.mark.parametrize("method", METHODS)
def test_spec_config_and_model_file_round_trip(method, tmp_path, digits):
    spec = binary_spec("conv4x3p1-relu-maxpool2-fc16-relu-fc10", method)
    net = build_network(spec, (1, 8, 8), 10)
    assert net.spec() == spec
    x = digits.x_test[:5].astype(np.float32)
    net2 = Network.from_config(net.to_config())
    net2.load_state_dict(net.state_dict())
    assert np.array_equal(net.forward(x), net2.forward(x))
    save_model(tmp_path / "m.npz", Model(net, Preprocess.fit(digits.x_train, "none"), {"dataset": "digits"}))
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.network.spec() == spec
    assert np.array_equal(loaded.network.forward(x), net.forward(x))


def test_binary_spec_variants():
    assert binary_spec(MLP, "bnn") == "bfc32bnn-bn-sign-bfc32bnn-bn-sign-bfc10bnn-bn"
    assert binary_spec(MLP, "xnor") == "bfc32bwn-bn-bfc32xnor-bn-bfc10xnor-bn"
    assert binary_spec(MLP, "twn") == "bfc32twn-bn-relu-bfc32twn-bn-relu-bfc10twn"
    assert binary_spec("conv8x3-relu-maxpool2-fc10", "bnn") == "bconv8x3bnn-maxpool2-bn-sign-bfc10bnn-bn"
    drop = "dropout20-fc32-bn-relu-dropout50-fc32-bn-relu-fc10"
    assert binary_spec(drop, "bnn") == "dropout20-bfc32bnn-bn-sign-dropout50-bfc32bnn-bn-sign-bfc10bnn-bn"
    assert binary_spec(drop, "bc") == "dropout20-bfc32bc-bn-relu-dropout50-bfc32bc-bn-relu-bfc10bc"


@pytest.mark.parametrize("bad", ["binary", "ternary", "", "bc2"])
def test_unknown_method_is_one_line_error(bad):
    with pytest.raises(FxpsimError, match="unknown binary method .* use one of"):
        parse_method(bad)
    with pytest.raises(FxpsimError):
        TrainConfig(method=bad)


def test_bad_binary_tokens():
    with pytest.raises(FxpsimError, match="bad token 'bfc10zz'"):
        build_network("bfc10zz", (1, 8, 8), 10)
    with pytest.raises(FxpsimError, match="already has binary layers"):
        binary_spec("bfc10bc", "bnn")


# ---------------------------------------------------------------- training


def test_training_clips_real_weights_and_learns(digits):
    model, hist = train(digits, MLP, TrainConfig(epochs=3, lr=0.05, method="bc"), progress=False)
    for layer in model.network.layers:
        if isinstance(layer, BinaryDense):
            w = layer.params["W"]
            assert np.abs(w).max() <= 1.0
            assert np.isclose(np.abs(w).max(), 1.0)  # the large steps did reach the clip
    assert model.metadata["spec"] == binary_spec(MLP, "bc")
    assert model.metadata["test_accuracy"] > 0.7


@pytest.mark.parametrize("method,floor", [("bc", 0.85), ("bnn", 0.8), ("bwn", 0.85), ("xnor", 0.8),
                                          ("twn", 0.9), ("ttq", 0.85)])
def test_binary_methods_learn_digits(digits, method, floor):
    model, _ = train(digits, "fc64-bn-relu-fc64-bn-relu-fc10",
                     TrainConfig(epochs=6, lr=3e-3, method=method, init="xavier-uniform",
                                 preprocess="none" if method == "bnn" else "standardize"), progress=False)
    assert model.metadata["test_accuracy"] > floor


# ---------------------------------------------------------------- integer BNN simulation


def test_bnn_integer_run_is_bit_exact_to_the_float_pm1_computation(bnn_model, digits):
    sim = BnnSimulator(bnn_model)
    x_raw = sim.input_raw(digits.x_test)
    res = sim.run(x_raw)
    ref_out, ref_hidden = sim.float_reference(x_raw)
    assert len(res.hidden) == 2
    for a, b in zip(res.hidden, ref_hidden):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.acc_out, ref_out)
    assert res.outputs_wrapped == 0 and res.widths[0].dot_bits <= 32
    # the trained network's own float64 forward: same hidden signs, same predictions
    net = bnn_model.network.astype(np.float64)
    x = bnn_model.preprocess.apply(digits.x_test).astype(np.float64)
    h = x
    signs = []
    for layer in net.layers:
        h = layer.forward(h)
        if isinstance(layer, SignActivation):
            signs.append(h)
    for a, b in zip(res.hidden, signs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.y_raw.argmax(axis=1), h.argmax(axis=1))
    np.testing.assert_allclose(res.logits, h, atol=1e-3)


def integer_run_with_equal_hidden_signs(model, digits):
    """(simulator, integer run, float reference output) on digits' test split; asserts the
    hidden +-1 activations of the integer run equal the float +-1 computation."""
    sim = BnnSimulator(model)
    x_raw = sim.input_raw(digits.x_test)
    res = sim.run(x_raw)
    ref_out, ref_hidden = sim.float_reference(x_raw)
    for a, b in zip(res.hidden, ref_hidden):
        np.testing.assert_array_equal(a, b)
    return sim, res, ref_out


def test_bnn_with_fixed_point_output_layer(digits):
    model, _ = train(digits, "bfc64bnn-bn-sign-bfc32bnn-bn-sign-fc10",
                     TrainConfig(epochs=4, lr=3e-3, preprocess="none"), progress=False)
    sim, res, ref_out = integer_run_with_equal_hidden_signs(model, digits)
    step = 2.0 ** -sim.fmt_w.frac_bits * 32  # weight quantization over K = 32 ±1 terms
    assert np.abs(res.logits - ref_out).max() <= step
    assert (res.logits.argmax(1) == ref_out.argmax(1)).mean() > 0.99


def test_simulator_rejects_non_bnn_models(digits):
    model, _ = train(digits, MLP, TrainConfig(epochs=1, method="bc"), progress=False)
    with pytest.raises(FxpsimError, match="runs method bnn"):
        BnnSimulator(model)


def test_simulator_rejects_standardized_input(digits):
    model, _ = train(digits, MLP, TrainConfig(epochs=1, method="bnn"), progress=False)
    with pytest.raises(FxpsimError, match="preprocess none"):
        BnnSimulator(model)


# ---------------------------------------------------------------- size, ops, CLI


def test_model_bits_and_macs():
    net = build_network("bconv4x3twn-maxpool2-bfc10bwn", (1, 8, 8), 10)
    bits, fbits = model_bits(net)
    conv_w, fc_w = 4 * 9, 4 * 3 * 3 * 10
    assert bits == 2 * conv_w + 32 * (4 + 1) + 1 * fc_w + 32 * (10 + 10)
    assert fbits == 32 * (conv_w + 4 + fc_w + 10)
    assert macs(net) == (conv_w * 36 + fc_w, conv_w * 36 + fc_w)
    net = build_network("conv4x3-maxpool2-bfc10bc", (1, 8, 8), 10)
    assert macs(net) == (fc_w, conv_w * 36 + fc_w)


def test_cli_trains_compares_and_appends(tmp_path, capsys):
    args = ["binary", "--dataset", "digits", "--arch", MLP, "--epochs", "2", "--quiet",
            "--model-dir", str(tmp_path / "m"), "--out", str(tmp_path / "r"), "--report", "t"]
    assert main(args + ["--methods", "float,bnn"]) == 0
    assert main(args + ["--methods", "twn", "--append", "--reuse"]) == 0
    df = pd.read_csv(tmp_path / "r" / "t.csv")
    assert list(df["method"]) == ["float", "bnn", "twn"]
    assert df.loc[1, "int_sim_error_pct"] >= 0 and df.loc[1, "model_bits"] < df.loc[0, "model_bits"]
    assert (tmp_path / "r" / "t.md").read_text().startswith("# Binary and ternary networks on digits")
    assert main(args + ["--methods", "bnn", "--reuse"]) == 0  # loads, does not retrain
    assert "loading" in capsys.readouterr().out


@pytest.mark.parametrize("methods,match", [("bc,quaternary", "unknown binary method 'quaternary'"),
                                           (",", "names no method")])
def test_cli_bad_method_one_line_exit_2(methods, match, tmp_path, capsys):
    rc = main(["binary", "--methods", methods, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and err.count("\n") == 1


def test_binary_models_are_cut_into_stages_bnn_on_xnor_bc_on_fixed_point():
    from fxpsim.simulate import build_stages

    bnn = build_stages(build_network("bfc16bnn-bn-sign-bfc10bnn-bn", (1, 8, 8), 10))
    assert [s.name for s in bnn] == ["fc1", "fc2"] and all(s.binary is not None for s in bnn)
    bc = build_stages(build_network("bfc16bc-bn-relu-bfc10bc-bn", (1, 8, 8), 10))
    assert all(s.binary is None for s in bc) and bc[0].relu  # binary weights, BN folded, ReLU fused
    with pytest.raises(FxpsimError, match="must end in sign"):
        build_stages(build_network("bfc16bnn-bn-relu-bfc10bnn-bn", (1, 8, 8), 10))


def test_train_cli_method_builds_the_binary_variant(tmp_path, capsys):
    from fxpsim.cli import main
    from fxpsim.modelfile import load_model

    out = tmp_path / "b.npz"
    assert main(["train", "--arch", "mlp-small", "--dataset", "digits", "--method", "bwn", "--epochs", "1",
                 "--out", str(out), "--quiet"]) == 0
    kinds = [layer.kind for layer in load_model(out).network.layers]
    assert "bdense" in kinds and "dense" not in kinds
    assert main(["train", "--arch", "mlp-small", "--dataset", "digits", "--method", "foo",
                 "--out", str(tmp_path / "c.npz"), "--quiet"]) == 2
    assert "unknown binary method" in capsys.readouterr().err and not (tmp_path / "c.npz").exists()


# ---------------------------------------------------------------- square hinge loss (BC / BNN output cost)


def test_square_hinge_value_and_gradient_by_finite_differences():
    from fxpsim.train.losses import square_hinge

    z = np.array([[0.5, -2.0, 1.5], [-0.3, 0.2, -1.0]])
    y = np.array([0, 2])
    t = np.array([[1, -1, -1], [-1, -1, 1]])
    expected = np.mean(np.maximum(0, 1 - t * z) ** 2)
    loss, dz = square_hinge(z, y)
    assert loss == pytest.approx(expected, rel=1e-12)
    num = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += 1e-6
        zm[idx] -= 1e-6
        num[idx] = (square_hinge(zp, y)[0] - square_hinge(zm, y)[0]) / 2e-6
    np.testing.assert_allclose(dz, num, atol=1e-8)
    assert dz[0, 1] == 0  # margin met: no gradient


def test_loss_names_and_bad_loss():
    from fxpsim.train.losses import parse_loss

    assert parse_loss("hinge") == "square-hinge" and parse_loss("CE") == "cross-entropy"
    assert TrainConfig(loss="l2-svm").loss == "square-hinge"
    with pytest.raises(FxpsimError, match="unknown loss 'mse': use one of cross-entropy, square-hinge"):
        TrainConfig(loss="mse")


def test_square_hinge_training_learns_and_is_recorded(digits):
    config = TrainConfig(epochs=6, lr=3e-3, method="bnn", preprocess="none", init="xavier-uniform",
                         loss="square-hinge")
    model, hist = train(digits, "fc64-bn-relu-fc64-bn-relu-fc10", config, progress=False)
    assert model.metadata["loss"] == "square-hinge"
    assert hist.epochs[-1]["loss"] < hist.epochs[0]["loss"]
    assert model.metadata["test_accuracy"] > 0.8


def test_cli_loss_option_and_bad_loss(tmp_path, capsys):
    args = ["binary", "--dataset", "digits", "--arch", MLP, "--epochs", "1", "--quiet", "--methods", "bc",
            "--model-dir", str(tmp_path / "m"), "--out", str(tmp_path / "r"), "--report", "t"]
    assert main(args + ["--loss", "square-hinge"]) == 0
    model = load_model(next((tmp_path / "m").glob("*.npz")))
    assert model.metadata["loss"] == "square-hinge"
    rc = main(args + ["--loss", "mse"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown loss 'mse'" in err and err.count("\n") == 1


def test_bnn_with_dropout_trains_and_the_integer_run_skips_it(digits):
    model, _ = train(digits, "dropout10-fc64-bn-relu-dropout20-fc64-bn-relu-fc10",
                     TrainConfig(epochs=4, lr=3e-3, method="bnn", preprocess="none", init="xavier-uniform"),
                     progress=False)
    assert [layer.kind for layer in model.network.layers].count("dropout") == 2
    _, res, ref_out = integer_run_with_equal_hidden_signs(model, digits)
    np.testing.assert_array_equal(res.acc_out, ref_out)
    logits = model.network.forward(model.preprocess.apply(digits.x_test), training=False)
    assert (res.y_raw.argmax(axis=1) == logits.argmax(axis=1)).mean() > 0.99
    assert model.metadata["test_accuracy"] > 0.75
