"""fxpsim.binary: popcount, packing, XNOR-popcount / ternary / bit-plane layers,
BatchNorm -> threshold folding, BNN Algorithm 4 and the training quantizers.

Kernels are compared with the float ±1 references (exact: integer sums far
below 2**53) using assert_array_equal: bit-exact means equal.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import fxpsim.binary as fb
from fxpsim.binary.reference import bnn_mlp_float, conv2d_float, dense_float, xnor_words_python
from fxpsim.errors import FxpsimError
from fxpsim.qformat import QFormat, dequantize, quantize

from strategies import (
    batchnorm_st,
    binary_dense_shape_st,
    binary_k_st,
    bitplane_input_st,
    bnn_mlp_st,
    conv_shape_st,
    pm1_st,
    ternary_st,
)

RNG = np.random.default_rng(20261125)


# --- popcount ----------------------------------------------------------------

def test_popcount_helper_matches_numpy_bitwise_count():
    words = RNG.integers(0, 2**64, size=5000, dtype=np.uint64)
    edges = np.array([0, 1, 2**63, 2**64 - 1, 0x5555555555555555, 0xAAAAAAAAAAAAAAAA], dtype=np.uint64)
    words = np.concatenate([words, edges])
    got = fb.popcount_kernel(words)
    assert_array_equal(got, fb.popcount_array(words))
    assert_array_equal(got[-6:], [0, 1, 1, 64, 32, 32])
    assert_array_equal(fb.popcount_array(words), [bin(int(v)).count("1") for v in words])


@given(st.integers(0, 10**6), st.one_of(st.none(), st.integers(1, 40)))
def test_popcount_width_is_ceil_log2_k_plus_1(k, acc_bits):
    w = fb.popcount_width(k, acc_bits)
    assert w.popcount_bits == math.ceil(math.log2(k + 1))
    assert w.dot_bits == w.popcount_bits + 1
    # fits <=> [-K, K] inside a signed acc_bits register
    assert w.fits == (acc_bits is None or k <= 2 ** (acc_bits - 1) - 1)
    assert ("OVERFLOWS" in w.describe()) == (not w.fits)


# --- packing -----------------------------------------------------------------

def test_pack_convention_plus_one_is_bit_one_lsb_first():
    x = -np.ones((1, 70), dtype=np.int64)
    x[0, [0, 3, 64, 69]] = 1
    p = fb.pack_signs(x)
    assert p.k == 70 and p.words.shape == (1, 2) and p.words.dtype == np.uint64
    assert p.words[0, 0] == 0b1001 and p.words[0, 1] == (1 | 1 << 5)  # pad bits 6..63 are 0
    assert fb.pack_signs(np.ones((1, 65))).words[0, 1] == 1
    assert fb.pack_bits01([[1, 0, 1]]).words[0, 0] == 0b101
    with pytest.raises(FxpsimError, match="0/1"):
        fb.pack_bits01([[1, 2]])


@given(binary_dense_shape_st(), st.data())
def test_pack_unpack_round_trip(shape, data):
    b, k, n = shape
    x = data.draw(pm1_st((b, k)))
    assert_array_equal(fb.unpack_signs(fb.pack_signs(x)), x)
    w = data.draw(pm1_st((k, n)))
    pw = fb.pack_weights(w)
    assert pw.words.shape == (-(-k // 64), n)
    assert_array_equal(fb.unpack_weights(pw), w)
    t = data.draw(ternary_st((k, n)))
    assert_array_equal(fb.unpack_weights(fb.pack_ternary_weights(t)), t)
    # pad bits are zero in every packed operand
    if k % 64:
        pad = ~np.uint64((1 << (k % 64)) - 1)
        assert not np.any(fb.pack_signs(x).words[:, -1] & pad)
        assert not np.any(pw.words[-1] & pad)


@given(bitplane_input_st((3, 17)))
def test_bit_planes_reconstruct_raw(case):
    x, fmt = case
    planes, coef = fb.bit_planes(x, fmt)
    assert planes.shape == (fmt.width, 3, 17) and set(np.unique(planes)) <= {0, 1}
    assert_array_equal(np.tensordot(coef, planes.astype(np.int64), axes=(0, 0)), x)


# --- dense kernels -----------------------------------------------------------

@given(binary_dense_shape_st(), st.data())
def test_xnor_dense_equals_float_pm1_matmul(shape, data):
    b, k, n = shape
    a, w = data.draw(pm1_st((b, k))), data.draw(pm1_st((k, n)))
    res = fb.xnor_dense(a, w)
    assert res.y.dtype == np.int64 and res.y.shape == (b, n)
    assert_array_equal(res.y, dense_float(a, w))
    assert res.width.k == k and res.outputs_wrapped == 0
    pa, pw = fb.pack_signs(a), fb.pack_weights(w)  # the word formula itself, in Python ints
    assert_array_equal(xnor_words_python(pa.words, pw.words, k), res.y)


def test_xnor_dense_k1_and_large_blocks():
    assert_array_equal(fb.xnor_dense([[1], [-1]], [[-1, 1]]).y, [[-1, 1], [1, -1]])
    a, w = RNG.choice([-1, 1], size=(67, 300)), RNG.choice([-1, 1], size=(300, 130))  # auto: parallel
    assert_array_equal(fb.xnor_dense(fb.pack_signs(a), fb.pack_weights(w)).y, dense_float(a, w))


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("b, n", [(3, 4), (4, 3), (4, 4), (5, 9), (8, 7), (11, 13)])
@pytest.mark.parametrize("k", [1, 63, 64, 65, 130])
def test_xnor_kernel_tile_edges(b, n, k, parallel):
    """4x4 register tiles: full tiles, column tails, row tails, both drivers."""
    a, w = RNG.choice([-1, 1], size=(b, k)), RNG.choice([-1, 1], size=(k, n))
    assert_array_equal(fb.xnor_dense(a, w, parallel=parallel).y, dense_float(a, w))


@settings(max_examples=25)
@given(binary_dense_shape_st(), st.booleans(), st.data())
def test_parallel_and_serial_drivers_agree(shape, parallel, data):
    b, k, n = shape
    b += 4 * data.draw(st.integers(0, 3))  # more 4-row blocks, same tails
    a, w = data.draw(pm1_st((b, k))), data.draw(pm1_st((k, n)))
    t, tw = data.draw(ternary_st((b, k))), data.draw(ternary_st((k, n)))
    x, fmt = data.draw(bitplane_input_st((b, k)))
    assert_array_equal(fb.xnor_dense(a, w, parallel=parallel).y, dense_float(a, w))
    assert_array_equal(fb.ternary_dense(t, tw, parallel=parallel).y, dense_float(t, tw))
    assert_array_equal(fb.bitplane_dense(x, fmt, w, parallel=parallel).y, dense_float(x, w))


@given(binary_dense_shape_st(), st.data())
def test_ternary_dense_equals_float(shape, data):
    b, k, n = shape
    a, w = data.draw(ternary_st((b, k))), data.draw(ternary_st((k, n)))
    assert_array_equal(fb.ternary_dense(a, w).y, dense_float(a, w))
    wb = data.draw(pm1_st((k, n)))  # ternary input x binary (mask-free) packed weights
    assert_array_equal(fb.ternary_dense(a, fb.pack_weights(wb)).y, dense_float(a, wb))


@given(binary_k_st, st.integers(1, 9), st.integers(1, 12), st.data())
def test_bitplane_dense_is_exact_integer_dot(k, b, n, data):
    x, fmt = data.draw(bitplane_input_st((b, k)))
    w = data.draw(pm1_st((k, n)))
    res = fb.bitplane_dense(x, fmt, w)
    assert_array_equal(res.y, dense_float(x, w))
    bound = max(abs(fmt.raw_min), fmt.raw_max) * k
    assert res.width.dot_bits == bound.bit_length() + 1


def test_narrow_accumulator_wraps_and_counts():
    a = np.ones((4, 100), dtype=np.int64)
    w = np.ones((100, 3), dtype=np.int64)
    w[:50, 1] = -1
    res = fb.xnor_dense(a, w, acc_bits=7)  # dot in [-100, 100] needs 8 bits
    assert not res.width.fits and res.width.dot_bits == 8
    assert_array_equal(res.y[:, 0], 100 - 128)  # two's complement wrap of 100 in 7 bits
    assert_array_equal(res.y[:, 1], 0)
    assert res.outputs_wrapped == 8
    ok = fb.xnor_dense(a, w, acc_bits=8)
    assert ok.width.fits and ok.outputs_wrapped == 0 and ok.y[0, 0] == 100


# --- conv ----------------------------------------------------------------------

@settings(max_examples=60)
@given(conv_shape_st(), st.sampled_from(fb.PAD_MODES), st.data())
def test_xnor_conv2d_equals_float_conv(shapes, pad_mode, data):
    xs, ws, stride, padding = shapes
    x, w = data.draw(pm1_st(xs)), data.draw(pm1_st(ws))
    res = fb.xnor_conv2d(x, w, stride=stride, padding=padding, pad_mode=pad_mode)
    pad_value = 0.0 if pad_mode == "zero" else -1.0
    assert_array_equal(res.y, conv2d_float(x, w, stride, padding, pad_value))


def test_conv_pad_modes_differ_only_at_the_border():
    x, w = RNG.choice([-1, 1], size=(1, 2, 6, 6)), RNG.choice([-1, 1], size=(3, 2, 3, 3))
    zero = fb.xnor_conv2d(x, w, padding=1).y
    minus = fb.xnor_conv2d(x, w, padding=1, pad_mode="minus-one").y
    assert_array_equal(zero[:, :, 1:-1, 1:-1], minus[:, :, 1:-1, 1:-1])
    assert np.any(zero != minus)


@settings(max_examples=40)
@given(conv_shape_st(), st.data())
def test_ternary_and_bitplane_conv2d_equal_float(shapes, data):
    xs, ws, stride, padding = shapes
    x, w = data.draw(ternary_st(xs)), data.draw(ternary_st(ws))
    assert_array_equal(fb.ternary_conv2d(x, w, stride=stride, padding=padding).y,
                       conv2d_float(x, w, stride, padding))
    xr, fmt = data.draw(bitplane_input_st(xs))
    wb = data.draw(pm1_st(ws))
    assert_array_equal(fb.bitplane_conv2d(xr, fmt, wb, stride=stride, padding=padding).y,
                       conv2d_float(xr, wb, stride, padding))


# --- BatchNorm + Sign -> threshold --------------------------------------------

@given(st.integers(1, 12), st.integers(1, 80), st.data())
def test_folded_threshold_equals_float_batchnorm_sign(n, bound, data):
    bn = data.draw(batchnorm_st(n, bound))
    thr = fb.fold_bn_sign(bn, -bound, bound)
    a = np.arange(-bound, bound + 1)[:, None].repeat(n, axis=1)  # every reachable accumulator
    assert_array_equal(thr.apply(a), fb.sign(fb.batchnorm_float(a, bn)))
    assert_array_equal(thr.flip, bn.gamma < 0)
    assert np.all((thr.threshold >= -bound - 1) & (thr.threshold <= bound + 1))


@settings(max_examples=40)
@given(conv_shape_st(), st.data())
def test_conv_layer_with_folded_threshold_equals_float(shapes, data):
    xs, ws, stride, padding = shapes
    x, w = data.draw(pm1_st(xs)), data.draw(pm1_st(ws))
    k = ws[1] * ws[2] * ws[3]
    bn = data.draw(batchnorm_st(ws[0], k))
    acc = fb.xnor_conv2d(x, w, stride=stride, padding=padding).y
    got = fb.fold_bn_sign(bn, -k, k).apply(acc)  # per channel (axis 1) of NCHW
    assert_array_equal(got, fb.sign(fb.batchnorm_float(conv2d_float(x, w, stride, padding), bn)))


def test_threshold_gamma_cases_by_hand():
    # gamma>0: BN >= 0 <=> a >= 2.5 -> t = 3; gamma<0: a <= 2.5 -> t = 2, flipped;
    # gamma=0: constant sign(beta), beta=0 counts as +1
    bn = fb.BatchNormParams([2.0, -2.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0], [2.5, 2.5, 7.0, 7.0],
                            [1.0, 1.0, 1.0, 1.0], eps=0.0)
    thr = fb.fold_bn_sign(bn, -10, 10)
    assert_array_equal(thr.threshold[:2], [3, 2])
    assert_array_equal(thr.flip, [False, True, False, False])
    out = thr.apply(np.array([[2, 2, -10, 10], [3, 3, 10, -10]]))
    assert_array_equal(out, [[-1, 1, 1, -1], [1, -1, 1, -1]])


def test_threshold_tie_at_zero_gives_plus_one():
    bn = fb.BatchNormParams([1.0, -1.0], [0.0, 0.0], [4.0, 4.0], [1.0, 1.0], eps=0.0)
    thr = fb.fold_bn_sign(bn, -8, 8)
    assert_array_equal(thr.apply(np.array([[4, 4]])), [[1, 1]])  # BN(4) = 0 -> +1 both ways
    assert_array_equal(thr.apply(np.array([[3, 5]])), [[-1, -1]])


# --- output layer BatchNorm in fixed point ------------------------------------

def _fixed_bn_reference(a, bn, fmt_scale, fmt_y, frac_acc):
    """Python Fractions: y = a*g_raw*2^-Fs + h (both 2^-(Fa+Fs) exact), round half even, clip."""
    g_raw = quantize(bn.gamma / np.sqrt(bn.var + bn.eps), fmt_scale)
    frac_p = frac_acc + fmt_scale.frac_bits
    h = bn.beta - bn.mean * (bn.gamma / np.sqrt(bn.var + bn.eps))
    out = np.empty(a.shape, dtype=np.int64)
    for i, j in np.ndindex(*a.shape):
        h_raw = round(Fraction(float(h[j])) * 2**frac_p)  # round(Fraction) is half-to-even
        exact = Fraction(int(a[i, j]) * int(g_raw[j]) + h_raw, 2**frac_p)
        y = round(exact * 2**fmt_y.frac_bits)
        out[i, j] = min(max(y, fmt_y.raw_min), fmt_y.raw_max)
    return out


@given(st.integers(1, 6), st.integers(1, 8), st.integers(1, 200), st.data())
def test_batchnorm_fixed_matches_exact_rational_reference(b, n, k, data):
    bn = data.draw(batchnorm_st(n, k))
    a = data.draw(pm1_st((b, k)))
    acc = fb.xnor_dense(a, data.draw(pm1_st((k, n)))).y
    fmt_scale = data.draw(st.sampled_from([QFormat(4, 12), QFormat(8, 8), QFormat(2, 6)]))
    fmt_y = data.draw(st.sampled_from([QFormat(8, 8), QFormat(16, 8), QFormat(12, 4)]))
    y = fb.batchnorm_fixed(acc, bn, fmt_scale=fmt_scale, fmt_y=fmt_y)
    assert_array_equal(y, _fixed_bn_reference(acc, bn, fmt_scale, fmt_y, 0))


def test_batchnorm_fixed_close_to_float_when_in_range():
    bn = fb.BatchNormParams([0.5, -1.5], [0.25, 3.0], [10.0, -4.0], [4.0, 9.0])
    acc = np.array([[-100, 64], [0, 1], [37, -37]])
    fmt_scale, fmt_y = QFormat(4, 12), QFormat(10, 8)
    y = dequantize(fb.batchnorm_fixed(acc, bn, fmt_scale=fmt_scale, fmt_y=fmt_y), fmt_y)
    bound = 100 * fmt_scale.lsb / 2 + 2.0**-13 + fmt_y.lsb / 2  # |a| g-error + h-error + output rounding
    assert np.max(np.abs(y - fb.batchnorm_float(acc, bn))) <= bound


# --- BNN Algorithm 4 end to end ------------------------------------------------

@settings(max_examples=60)
@given(bnn_mlp_st())
def test_bnn_algorithm4_bit_exact_with_float_pm1_network(case):
    net, x = case
    fmt_scale, fmt_y = QFormat(6, 10), QFormat(12, 8)
    res = fb.bnn_mlp(net, x, fmt_scale=fmt_scale, fmt_y=fmt_y)
    acc_f, hidden_f = bnn_mlp_float(net, x)
    assert len(res.hidden) == len(hidden_f) == len(net.weights) - 1
    for got, want in zip(res.hidden, hidden_f):
        assert_array_equal(got, want)
    frac = net.fmt_x.frac_bits if len(net.weights) == 1 else 0
    assert_array_equal(np.ldexp(res.acc_out.astype(np.float64), -frac), acc_f)
    assert_array_equal(res.y, fb.batchnorm_fixed(res.acc_out, net.bns[-1], fmt_scale=fmt_scale,
                                                 fmt_y=fmt_y, frac_bits_acc=frac))
    assert len(res.widths) == len(net.weights) and res.outputs_wrapped == 0


# --- quantizers ------------------------------------------------------------------

def test_binarize_deterministic_plus_one_at_zero():
    assert_array_equal(fb.binarize([-2.0, -1e-300, 0.0, -0.0, 1e-300, 3.0]), [-1, -1, 1, 1, 1, 1])


def test_binarize_stochastic_seeded_and_hard_sigmoid_probability():
    x = np.repeat(np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]), 20000)
    b1, b2 = fb.binarize_stochastic(x, seed=5), fb.binarize_stochastic(x, seed=5)
    assert_array_equal(b1, b2)
    assert set(np.unique(b1)) == {-1.0, 1.0}
    p_plus = (b1.reshape(7, -1) > 0).mean(axis=1)
    assert_array_equal(fb.hard_sigmoid([-3, -1, -0.5, 0, 0.5, 1, 2]), [0, 0, 0.25, 0.5, 0.75, 1, 1])
    assert_array_equal(p_plus[[0, 1, 5, 6]], [0, 0, 1, 1])
    assert np.all(np.abs(p_plus[2:5] - [0.25, 0.5, 0.75]) < 0.02)  # 20000 draws: sd < 0.004
    with pytest.raises(FxpsimError, match="seed"):
        fb.binarize_stochastic(x, seed=None)


def test_ste_gradient_cancelled_where_abs_x_above_one():
    x = np.array([-1.5, -1.0, -0.2, 0.0, 1.0, 1.0001])
    assert_array_equal(fb.ste_grad(x, np.full(6, 2.0)), [0, 2, 2, 2, 2, 0])


def test_bwn_scale_per_output_filter():
    w = np.array([[1.0, -0.5], [-3.0, 0.0], [2.0, 0.25]])  # dense (K=3, N=2)
    sb = fb.bwn_binarize(w)
    assert_array_equal(sb.scale, [[2.0, 0.25]])
    assert_array_equal(sb.sign, [[1, -1], [-1, 1], [1, 1]])
    assert_array_equal(sb.value, sb.scale * sb.sign)
    wc = RNG.normal(size=(4, 3, 2, 2))
    sc = fb.bwn_binarize(wc)
    assert sc.scale.shape == (4, 1, 1, 1)
    assert_array_equal(sc.scale.ravel(), [np.abs(wc[f]).mean() for f in range(4)])
    # A = mean|W| minimises ||W - A B||^2 for B = sign(W) (XNOR-Net Eq. 7)
    for a in (0.9, 1.1):
        assert np.sum((wc - sc.value) ** 2) < np.sum((wc - a * sc.value) ** 2)
    assert_array_equal(fb.xnor_input_scale([[1.0, -3.0], [0.0, 0.5]]), [[2.0], [0.25]])


def test_twn_threshold_and_scale():
    w = np.array([0.1, -0.2, 1.0, -2.0, 0.05, 0.9])  # mean|W| = 0.708333.., Delta = 0.4958..
    t = fb.twn_ternarize(w)
    assert t.delta == pytest.approx(0.7 * np.abs(w).mean(), rel=0, abs=1e-15)
    assert_array_equal(t.codes, [0, 0, 1, -1, 0, 1])
    assert t.pos_scale == t.neg_scale == pytest.approx((1.0 + 2.0 + 0.9) / 3, abs=1e-15)
    assert_array_equal(t.value, [0, 0, 1.3, -1.3, 0, 1.3])


def test_ttq_codes_values_and_gradients():
    w = np.array([[0.5, -0.01], [-0.8, 0.02], [1.0, 0.0]])
    t = fb.ttq_ternarize(w, pos_scale=1.5, neg_scale=0.7, t=0.05)  # Delta = 0.05
    assert t.delta == pytest.approx(0.05)
    assert_array_equal(t.codes, [[1, 0], [-1, 0], [1, 0]])
    assert_array_equal(t.value, [[1.5, 0], [-0.7, 0], [1.5, 0]])
    c = np.array([[2.0, 1.0], [3.0, -1.0], [-0.5, 4.0]])  # L = sum(c * value)
    latent, gp, gn = fb.ttq_grads(t, c)

    def loss(wp, wn):
        return float(np.sum(c * fb.ttq_ternarize(w, wp, wn, 0.05).value))

    h = 1e-6
    assert gp == pytest.approx((loss(1.5 + h, 0.7) - loss(1.5 - h, 0.7)) / (2 * h), rel=1e-6)
    assert gn == pytest.approx((loss(1.5, 0.7 + h) - loss(1.5, 0.7 - h)) / (2 * h), rel=1e-6)
    assert_array_equal(latent, [[1.5 * 2.0, 1.0], [0.7 * 3.0, -1.0], [1.5 * -0.5, 4.0]])


# --- bad input: one line, FxpsimError -------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: fb.xnor_dense([[1, 0]], [[1], [1]]), "not ±1"),
    (lambda: fb.xnor_dense([[1, -1]], [[1], [2]]), "not ±1"),
    (lambda: fb.pack_signs([[0.5, 1]]), "not ±1"),
    (lambda: fb.xnor_conv2d(np.zeros((1, 1, 3, 3)), np.ones((1, 1, 2, 2))), "not ±1"),
    (lambda: fb.BnnMlp([np.array([[1, 3]])], [fb.BatchNormParams([1, 1], [0, 0], [0, 0], [1, 1])],
                       QFormat(8, 0, False)), "not ±1"),
    (lambda: fb.ternary_dense([[2, 0]], [[1], [0]]), "not in"),
    (lambda: fb.xnor_dense(fb.pack_signs(np.ones((2, 65))), fb.pack_weights(np.ones((64, 3)))), "K=65"),
    (lambda: fb.xnor_dense(fb.PackedBits(np.zeros((2, 1), np.uint64), 65), fb.pack_weights(np.ones((65, 3)))),
     "needs 2"),
    (lambda: fb.xnor_dense(fb.PackedBits(np.zeros(2, np.uint64), 65), fb.pack_weights(np.ones((65, 3)))),
     "2-D uint64"),
    (lambda: fb.bitplane_dense(np.ones((2, 5), int), QFormat(8, 0, False), np.ones((4, 3))), "K=5"),
    (lambda: fb.bitplane_dense(np.full((1, 2), 256), QFormat(8, 0, False), np.ones((2, 1))), "outside"),
    (lambda: fb.xnor_conv2d(np.ones((1, 2, 4, 4)), np.ones((1, 3, 2, 2))), "channels"),
    (lambda: fb.xnor_conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), padding=1, pad_mode="same"),
     "pad_mode"),
    (lambda: fb.twn_ternarize([1.0, -1.0], factor=0.0), r"outside \(0, 1\]"),
    (lambda: fb.twn_ternarize([1.0, -1.0], factor=1.2), r"outside \(0, 1\]"),
    (lambda: fb.ttq_ternarize([1.0], 1.0, 1.0, t=float("nan")), r"outside \(0, 1\]"),
    (lambda: fb.ttq_ternarize([1.0], 1.0, -1.0), "must be > 0"),
    (lambda: fb.BatchNormParams([1.0], [0.0], [0.0], [-1.0]), "var"),
    (lambda: fb.BatchNormParams([1.0, 2.0], [0.0], [0.0], [1.0]), "one value per neuron"),
])
def test_bad_input_raises_one_line(call, match):
    with pytest.raises(FxpsimError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
