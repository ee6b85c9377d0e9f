"""fxpsim.binary.netsim on conv BNNs: bit-plane first conv, XNOR-popcount convs, max pooling
before the BatchNorm folded into integer thresholds (both pool orders), flatten, dense BNN path.

The integer run must equal the float ±1 forward pass (BNN, Courbariaux, Hubara et al. 2016,
Algorithm 4) bit for bit: hidden ±1 activations and output dots, assert_array_equal.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import fxpsim.binary as fb
from fxpsim.binary.netsim import BnnSimulator, bnn_layers, maxpool_int, threshold_then_pool
from fxpsim.binary.train_layers import SignActivation
from fxpsim.errors import FxpsimError
from fxpsim.modelfile import Model
from fxpsim.network import BatchNorm, build_network
from fxpsim.train.data import Preprocess, load_dataset
from fxpsim.train.trainer import TrainConfig, train

from strategies import batchnorm_st, bitplane_input_st, pm1_st


# --- random conv BNN models ------------------------------------------------------

def _model(spec, input_shape, n_classes=4):
    net = build_network(spec, input_shape, n_classes, dtype=np.float64)
    c = input_shape[0]
    return Model(net, Preprocess("none", np.zeros((c, 1, 1), np.float32), np.ones((c, 1, 1), np.float32)))


def _set_params(model, draw_pm1, draw_bn, x_max):
    """±1 weights and BatchNorm parameters into every binary layer / BatchNorm of ``model``."""
    scale = None
    for layer in model.network.layers:
        if "W" in layer.params and hasattr(layer, "codes"):
            w = layer.params["W"]
            layer.params["W"][...] = draw_pm1(w.shape)
            k = int(np.prod(w.shape[1:])) if w.ndim == 4 else w.shape[0]
            # BN means at the dots' typical scale (~ sqrt(K) x input), so thresholds fall inside
            scale = int(np.sqrt(k) * (x_max if scale is None else 1)) + 1
        elif "W" in layer.params:  # plain fixed-point fc at the end
            layer.params["W"][...] = draw_pm1(layer.params["W"].shape) * 0.3
            layer.params["b"][...] = 0.1
        elif isinstance(layer, BatchNorm):
            bn = draw_bn(layer.num_features, scale)
            layer.params["gamma"][...] = bn.gamma
            layer.params["beta"][...] = bn.beta
            layer.buffers["running_mean"][...] = bn.mean
            layer.buffers["running_var"][...] = bn.var
            layer.eps = bn.eps
    return model


@st.composite
def conv_bnn_spec_st(draw):
    """(spec, (C, H, W)): 1-2 conv blocks (padding, stride, max pool with stride, K around 64),
    a flatten before the last block's bn sometimes, 0-1 hidden dense layers, binary or fixed-point output."""
    c, h = draw(st.integers(1, 3)), draw(st.integers(4, 9))
    w = draw(st.integers(4, 9))
    shape = (c, h, w)
    toks = []
    n_conv = draw(st.sampled_from([1, 2, 2]))
    flat = False
    wide = n_conv == 2 and draw(st.booleans())  # second conv K = 8*9 or 9*9, past one word
    for n in range(n_conv):
        f, k = draw(st.sampled_from([8, 9] if wide and n == 0 else [1, 3, 8, 9])), draw(st.integers(1, 3))
        p, s = draw(st.integers(0, 1)), draw(st.integers(1, 2))
        if wide and n:
            k, p = 3, 1
        if k > min(h, w) + 2 * p:
            k = 1
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        tok = f"bconv{f}x{k}" + (f"s{s}" if s > 1 else "") + (f"p{p}" if p else "") + "bnn"
        toks.append(tok)
        pool = draw(st.sampled_from([None, (2, 2), (2, 1), (3, 2)]))
        if pool and pool[0] <= min(h, w):
            toks.append(f"maxpool{pool[0]}" + (f"s{pool[1]}" if pool[1] != pool[0] else ""))
            h, w = (h - pool[0]) // pool[1] + 1, (w - pool[0]) // pool[1] + 1
        if n == n_conv - 1 and draw(st.booleans()):
            toks.append("flatten")
            flat = True
        toks += ["bn", "sign"]
    if not flat:
        toks.append("flatten")
    for _ in range(draw(st.integers(0, 1))):
        toks += [f"bfc{draw(st.sampled_from([1, 5, 64, 70]))}bnn", "bn", "sign"]
    toks += draw(st.sampled_from([["bfc4bnn", "bn"], ["fc4"]]))
    return "-".join(toks), shape


@st.composite
def conv_bnn_st(draw):
    """(BnnSimulator-ready Model, fmt_x, raw input): random ±1 weights and BatchNorms (gamma < 0, = 0, ties)."""
    spec, shape = draw(conv_bnn_spec_st())
    model = _model(spec, shape)
    x, fmt = draw(bitplane_input_st((draw(st.integers(1, 5)),) + shape))
    if draw(st.integers(0, 3)):  # mostly random pixels (bitplane_input_st fills min/max 2 times in 3)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        x = rng.integers(fmt.raw_min, fmt.raw_max + 1, size=x.shape)
    x_max = max(abs(fmt.raw_min), fmt.raw_max)
    _set_params(model, lambda s: draw(pm1_st(s)), lambda n, b: draw(batchnorm_st(n, b)), x_max)
    return model, fmt, x


# --- pooling and the threshold direction -----------------------------------------

def test_pool_direction_by_hand_gamma_positive_negative_zero():
    # ch0 gamma>0: +1 iff a >= 3; ch1 gamma<0: +1 iff a <= 3; ch2 gamma=0, beta<0: always -1
    bn = fb.BatchNormParams([1.0, -1.0, 0.0], [0.0, 0.0, -1.0], [3.0, 3.0, 3.0], [1.0, 1.0, 1.0], eps=0.0)
    thr = fb.fold_bn_sign(bn, -8, 8)
    acc = np.array([1, 5, 0, 0], dtype=np.int64).reshape(1, 1, 2, 2).repeat(3, axis=1)  # window {1, 5, 0, 0}
    want = fb.sign(fb.batchnorm_float(maxpool_int(acc, 2, 2), bn))  # max 5: [+1, -1, -1]
    assert_array_equal(want.ravel(), [1, -1, -1])
    assert_array_equal(thr.apply(maxpool_int(acc, 2, 2)), want)
    assert_array_equal(threshold_then_pool(acc, thr, 2, 2), want)
    bits = thr.apply(acc)  # per dot: ch0 [-1, +1, -1, -1], ch1 [+1, -1, +1, +1]
    assert bits[0, 1].max() == 1 and bits[0, 1].min() == -1  # ch1: OR of the bits is wrong, AND right
    assert_array_equal(bits.reshape(1, 3, 4).max(axis=2)[0, :2], [1, 1])  # naive max pool of the signs
    assert_array_equal(bits.reshape(1, 3, 4).min(axis=2)[0, 1], -1)  # min pool where gamma < 0


@settings(max_examples=60)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(2, 7), st.integers(2, 3), st.integers(1, 3),
       st.booleans(), st.data())
def test_threshold_then_pool_equals_float_pool_bn_sign(b, c, hw, size, stride, flat, data):
    if size > hw:
        size = hw
    bound = data.draw(st.integers(1, 80))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    acc = rng.integers(-bound, bound + 1, size=(b, c, hw, hw))
    pooled = maxpool_int(acc, size, stride)
    n = int(np.prod(pooled.shape[1:])) if flat else c
    bn = data.draw(batchnorm_st(n, bound))
    thr = fb.fold_bn_sign(bn, -bound, bound)
    want = fb.sign(fb.batchnorm_float(pooled.reshape(b, -1) if flat else pooled, bn))
    assert_array_equal(threshold_then_pool(acc, thr, size, stride, flat=flat), want)
    assert_array_equal(thr.apply(pooled.reshape(b, -1) if flat else pooled), want)


# --- whole conv BNNs: integer == float ±1 -----------------------------------------

@settings(max_examples=40)
@given(conv_bnn_st())
def test_conv_bnn_integer_run_bit_exact_with_float_pm1(case):
    model, fmt, x = case
    sim = BnnSimulator(model, fmt_x=fmt)
    res = sim.run(x)
    ref_out, ref_hidden = sim.float_reference(x)
    bits = BnnSimulator(model, fmt_x=fmt, pool_on="bits").run(x)  # compare, then OR/AND pool
    for got, want in zip(bits.hidden, ref_hidden):
        assert_array_equal(got, want)
    assert_array_equal(bits.y_raw, res.y_raw)
    assert len(res.hidden) == len(ref_hidden) == len(sim.layers) - 1
    for got, want in zip(res.hidden, ref_hidden):
        assert got.dtype == np.int8
        assert_array_equal(got, want)
    assert res.outputs_wrapped == 0 and len(res.widths) == sum(layer.binary for layer in sim.layers)
    last = sim.layers[-1]
    if last.binary:
        assert_array_equal(res.acc_out, ref_out)
    else:  # fixed-point fc: weights rounded to fmt_w over K ±1 terms, output to fmt_y
        assert np.abs(res.logits - ref_out).max() <= last.weights.shape[0] * 2.0**-sim.fmt_w.frac_bits \
            + 2.0**-sim.fmt_y.frac_bits


def test_conv_bnn_matches_the_network_own_float_forward():
    """Differential check against fxpsim.network's layers (layout, pooling, padding, flatten order)."""
    rng = np.random.default_rng(3)
    for spec in ("bconv7x3p1bnn-maxpool2-bn-sign-bconv9x3s1p1bnn-maxpool3s2-bn-sign-bfc70bnn-bn-sign-bfc4bnn-bn",
                 "bconv5x2s2bnn-maxpool2s1-flatten-bn-sign-bfc4bnn-bn",
                 "bconv8x3bnn-bn-sign-fc4"):
        model = _model(spec, (2, 9, 9))

        def bn(n, k):
            return fb.BatchNormParams(rng.normal(size=n) * np.where(rng.random(n) < 0.4, -1, 1),
                                      rng.normal(size=n), rng.normal(size=n) * k / 4, rng.random(n) * k + 1)
        _set_params(model, lambda s: rng.choice([-1.0, 1.0], size=s), bn, 255)
        x = rng.integers(0, 256, size=(6, 2, 9, 9))
        sim = BnnSimulator(model)
        res = sim.run(x)
        h, signs = x.astype(np.float64), []
        for layer in model.network.layers:
            h = layer.forward(h)
            if isinstance(layer, SignActivation):
                signs.append(h)
        for got, want in zip(res.hidden, signs):
            assert_array_equal(got, want)
        if sim.layers[-1].binary:
            assert_array_equal(res.acc_out, sim.float_reference(x)[0])
        assert_array_equal(res.y_raw.argmax(axis=1), h.argmax(axis=1))


def test_conv_bnn_layer_list_and_widths():
    model = _model("bconv8x3p1bnn-maxpool2-bn-sign-bconv9x3p1bnn-maxpool2-bn-sign-bfc4bnn-bn", (1, 8, 8))
    layers = bnn_layers(model.network)
    assert [layer.name for layer in layers] == ["conv1", "conv2", "fc3"]
    assert [layer.k for layer in layers] == [9, 72, 36]  # K = 72: not a multiple of 64
    assert layers[0].conv == (1, 1) and layers[0].pool == (2, 2) and not layers[0].bn_flat
    res = BnnSimulator(model).run(np.full((2, 1, 8, 8), 255))
    assert [w.k for w in res.widths] == [9, 72, 36] and res.widths[0].dot_bits == (255 * 9).bit_length() + 1
    assert res.hidden[0].shape == (2, 8, 4, 4) and res.hidden[1].shape == (2, 9, 2, 2)


# --- a trained conv BNN on the bundled digits ----------------------------------------

def test_trained_conv_bnn_integer_accuracy_equals_float():
    digits = load_dataset("digits")
    model, _ = train(digits, "conv8x3p1-relu-maxpool2-conv16x3p1-relu-maxpool2-fc10",
                     TrainConfig(epochs=5, lr=1e-2, method="bnn", preprocess="none", init="xavier-uniform"),
                     progress=False)
    assert model.network.spec() == \
        "bconv8x3p1bnn-maxpool2-bn-sign-bconv16x3p1bnn-maxpool2-bn-sign-bfc10bnn-bn"
    sim = BnnSimulator(model)
    x_raw = sim.input_raw(digits.x_test)
    res = sim.run(x_raw)
    ref_out, ref_hidden = sim.float_reference(x_raw)
    for got, want in zip(res.hidden, ref_hidden):
        assert_array_equal(got, want)
    assert_array_equal(res.acc_out, ref_out)
    assert_array_equal(BnnSimulator(model, pool_on="bits").run(x_raw).acc_out, res.acc_out)
    logits = model.network.forward(model.preprocess.apply(digits.x_test).astype(np.float64))
    int_pred = sim.predict(digits.x_test)
    assert_array_equal(int_pred, logits.argmax(axis=1))
    int_acc = float((int_pred == digits.y_test).mean())
    assert int_acc == float((logits.argmax(axis=1) == digits.y_test).mean()) > 0.6
    # trained BNs have gamma > 0: negate gamma of every other conv channel (a valid BNN, flipped
    # thresholds under max pooling) and check against the network's own forward again
    for layer in model.network.layers:
        if isinstance(layer, BatchNorm) and layer.num_features in (8, 16):
            layer.params["gamma"][::2] *= -1
    h, signs = model.preprocess.apply(digits.x_test).astype(np.float64), []
    for layer in model.network.layers:
        h = layer.forward(h)
        if isinstance(layer, SignActivation):
            signs.append(h)
    for pool_on in ("dots", "bits"):
        res = BnnSimulator(model, pool_on=pool_on).run(x_raw)
        assert np.any(BnnSimulator(model).layers[0].bn.gamma < 0)
        for got, want in zip(res.hidden, signs):
            assert_array_equal(got, want)
        assert_array_equal(res.y_raw.argmax(axis=1), h.argmax(axis=1))


# --- bad input: one clear line ---------------------------------------------------------

@pytest.mark.parametrize("spec,match", [
    ("bconv8x3bnn-bn-maxpool2-sign-bfc4bnn-bn", r"hidden layer conv1 \(bconv8x3bnn\) must end in sign, "
                                                r"expected bconv<F>x<k>\[s<s>\]\[p<p>\]bnn\[-maxpool<n>\]-bn-sign; "
                                                r"got maxpool2d"),
    ("bconv8x3bnn-avgpool2-bn-sign-bfc4bnn-bn", r"conv1 \(bconv8x3bnn\) is followed by avgpool2d: average"),
    ("bconv8x3bnn-maxpool2-sign-bfc4bnn-bn", r"conv1 \(bconv8x3bnn\) is followed by sign: .* expected bconv"),
    ("bconv8x3bnn-maxpool2-bn-relu-bfc4bnn-bn", r"got relu after its bn"),
    ("bconv8x3bc-maxpool2-bn-sign-bfc4bnn-bn", r"conv1 is a bc binary layer: .*method bnn"),
    ("conv8x3-maxpool2-bn-sign-bfc4bnn-bn", r"layer conv2d at position 0 has no place in an integer BNN: "
                                            r"expected bconv<F>x<k>"),
])
def test_bad_layer_order_one_line_naming_layer_and_spec(spec, match):
    model = _model(spec, (1, 8, 8))
    with pytest.raises(FxpsimError, match=match) as err:
        BnnSimulator(model)
    assert "\n" not in str(err.value)


def test_bad_pool_on_and_input_shape():
    model = _model("bconv4x3bnn-maxpool2-bn-sign-bfc4bnn-bn", (1, 8, 8))
    with pytest.raises(FxpsimError, match="pool_on='max': use one of dots, bits"):
        BnnSimulator(model, pool_on="max")
    with pytest.raises(FxpsimError, match=r"conv BNN input has shape \(2, 7\): expected \(B, 1, 8, 8\)"):
        BnnSimulator(model).run(np.zeros((2, 7), dtype=np.int64))
