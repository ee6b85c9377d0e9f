"""The compiled plan: each kernel against its Python twin, the whole plan against Simulator.simulate."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fxpsim.api import Config
from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.datapath import plan_kernels as pk
from fxpsim.datapath import plan_reference as twin
from fxpsim.datapath import reference
from fxpsim.errors import FxpsimError
from fxpsim.modelfile import load_model
from fxpsim.network import build_network
from fxpsim.qformat import MAX_WIDTH, Overflow, QFormat, Rounding, convert, quantize
from fxpsim.simulate import SimResult, Simulator
from fxpsim.simulate.plan import Plan, PlanOutput, lane_plan, layer_operands, seed_words
from fxpsim.simulate.post import post_int
from fxpsim.train.data import Preprocess, load_dataset

from strategies import qformat_st, raw_array_st, rounding_st

MODELS = Path(__file__).resolve().parents[1] / "models"
DIGITS = load_dataset("digits")
MODEL = {name: load_model(MODELS / f"{name}.npz") for name in ("digits-mlp", "digits-cnn")}

overflow3_st = st.sampled_from(list(Overflow))
seed_st = st.integers(0, 2**64 + 5)


# --- strategies --------------------------------------------------------------------------------

@st.composite
def layer_config_st(draw, max_x: int = 10, max_w: int = 8, name: str = "layer", knobs: bool = True,
                    overflow=overflow3_st, wide: bool = True):
    """A valid LayerConfig: any formats (widths from 1), BW_acc near the product width or up to 62,
    every overflow and rounding mode, and the knobs (FL_acc, cast, product rounding, strided order,
    output wrap, a bias format)."""
    fmt_x = draw(qformat_st(1, max_x))
    fmt_w = draw(qformat_st(1, max_w))
    pw = fmt_x.width + fmt_w.width
    acc = draw(st.one_of(st.integers(max(1, pw - 4), min(MAX_WIDTH, pw + 6)),
                         st.integers(1, MAX_WIDTH) if wide else st.integers(max(1, pw - 4), pw + 6),
                         st.sampled_from([15, 16, 17, 31, 32, 33])))  # the int16 / int32 lanes' edges
    fl_p = fmt_x.frac_bits + fmt_w.frac_bits
    kw = {}
    if knobs and draw(st.booleans()):
        d = draw(st.integers(-6, min(6, MAX_WIDTH - pw)))
        kw = dict(frac_acc=fl_p + d, product=draw(st.sampled_from(["exact", "cast"])),
                  product_rounding=draw(st.sampled_from([r for r in Rounding if r is not Rounding.STOCHASTIC])),
                  order=draw(st.sampled_from(["sequential", "strided:1", "strided:2", "strided:3", "strided:7"])),
                  output_overflow=draw(st.sampled_from(["clip", "wrap"])))
        if draw(st.booleans()):
            kw["fmt_bias"] = draw(qformat_st(1, 20, signed=True))
    fl_acc = kw.get("frac_acc", fl_p)
    y_width = draw(st.integers(1, 18))
    y_frac = draw(st.integers(max(fl_acc - MAX_WIDTH, -4 - y_width), min(fl_acc + MAX_WIDTH, 24)))
    fmt_y = QFormat(y_width - y_frac, y_frac, draw(st.booleans()))
    try:
        return LayerConfig(name, fmt_w, fmt_x, fmt_y, acc, draw(overflow), draw(rounding_st), **kw)
    except FxpsimError:
        assume(False)


def _run_dense(cfg, x, w, b, relu, seed):
    ops = layer_operands(cfg, w, b, relu, x, seed)
    y = np.full(x.shape[0] * w.shape[1], 7, np.int64)
    pk.dense_step(x.shape[0], np.ascontiguousarray(x, np.int64).ravel(), y, ops.w, ops.bias, ops.perm,
                  ops.accp, ops.req, seed_words(seed))
    return y.reshape(x.shape[0], -1)


def _run_conv(cfg, x, w, b, relu, seed, stride, padding):
    ops = layer_operands(cfg, w, b, relu, x, seed, stride, padding)
    oh, ow = ops.geo[3], ops.geo[4]
    y = np.full(x.shape[0] * w.shape[0] * oh * ow, 7, np.int64)
    pk.conv_step(x.shape[0], np.ascontiguousarray(x, np.int64).ravel(), y, ops.w, ops.bias, ops.taps,
                 ops.geo, ops.accp, ops.req, seed_words(seed))
    return y.reshape(x.shape[0], w.shape[0], oh, ow)


def _same_outcome(fast, ref):
    """Both give the same array, or both refuse with the same one-line message."""
    try:
        want = ref()
    except FxpsimError as exc:
        with pytest.raises(FxpsimError) as got:
            fast()
        assert str(got.value) == str(exc)
        return
    np.testing.assert_array_equal(fast(), want)


# --- kernels against their twins -----------------------------------------------------------------

def _channels_last(cfg, data, channels: int, k: int):
    """A third of the time ``cfg`` in ``channels-last:C`` order (hls4ml's conv and flatten-Dense
    order), strided over it in half of those; else ``cfg`` as it is."""
    if data.draw(st.integers(0, 2)):
        return cfg
    rf = data.draw(st.one_of(st.none(), st.integers(1, k + 1)))
    return replace(cfg, order=f"channels-last:{channels}" + (f"+strided:{rf}" if rf else ""))


@given(data=st.data(), cfg=st.one_of(layer_config_st(), layer_config_st(max_x=30, max_w=30, knobs=False)),
       relu=st.booleans(), seed=seed_st)
def test_dense_step_matches_the_python_int_twin(data, cfg, relu, seed):
    """Every format (width 1 up), BW_acc up to 62, wrap/clip/ideal, every rounding, the knobs; K = 1
    included; operands and biases drawn at their rails; wide operands for the int32 and int64
    lanes (clip by clamp and by the lane's saturating add, wrap per addition or once); channels-last
    order (K as C channels, position-major, then strided)."""
    m, k, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 5))
    cfg = _channels_last(cfg, data, data.draw(st.sampled_from([d for d in range(1, k + 1) if k % d == 0])), k)
    x = data.draw(raw_array_st(cfg.fmt_x, (m, k)))
    w = data.draw(raw_array_st(cfg.fmt_w, (k, n)))
    b = data.draw(raw_array_st(cfg.fmt_bias_acc, (n,)))
    act = "relu" if relu else "none"
    _same_outcome(lambda: _run_dense(cfg, x, w, b, relu, seed),
                  lambda: reference.dense(x, w, b, cfg, activation=act, seed=seed).y)


@pytest.mark.parametrize("fx, fw, acc, overflow, lane, add, endwrap", [
    ("Q8.0", "Q8.0", 16, "clip", np.int16, "sat", False),  # 2**14 products, BW_acc = lane
    ("Q4.0", "Q4.0", 12, "clip", np.int16, "clamp", False),  # 2**6 + 2**11 <= 2**15
    ("Q8.0", "Q8.0", 15, "clip", np.int16, "clamp", False),  # 2**14 + 2**14 <= 2**15: just fits
    ("Q9.0", "Q8.0", 15, "clip", np.int32, "clamp", False),  # 2**15 + 2**14: not
    ("Q16.0", "Q16.0", 32, "clip", np.int32, "sat", False),
    ("Q16.0", "Q16.0", 40, "clip", np.int64, "clamp", False),
    ("Q8.0", "Q8.0", 16, "wrap", np.int16, "plain", True),
    ("Q31.0", "Q31.0", 62, "wrap", np.int64, "mask", False),  # exact sums may leave int64
    ("Q8.0", "Q8.0", 30, "ideal", np.int32, "plain", False),
    ("Q4.0", "Q4.0", 16, "ideal", np.int16, "plain", False),  # 8 * 2**6 fits int16
    ("Q8.0", "Q8.0", 16, "ideal", np.int32, "plain", False),  # the int16 lane cannot hold the sum
])
def test_lane_plan_picks_the_narrowest_exact_lane(fx, fw, acc, overflow, lane, add, endwrap):
    cfg = LayerConfig("l", fw, fx, "Q8.0", acc, overflow)
    qx, qw = (1 << (QFormat.parse(f).width - 1) for f in (fx, fw))
    assert lane_plan(cfg, 8, qx, qw, 0, False) == (lane, add, endwrap)
    x = np.full((2, 8), -qx)
    w = np.array([[-qw, qw - 1, 3]] * 8)
    _same_outcome(lambda: _run_dense(cfg, x, w, None, False, 0), lambda: reference.dense(x, w, None, cfg).y)


@given(data=st.data(), cfg=layer_config_st(max_x=8, max_w=6), relu=st.booleans(), seed=seed_st)
def test_conv_step_matches_the_python_int_twin(data, cfg, relu, seed):
    """Direct conv in the order channel -> row -> column (or strided, or channels-last: row ->
    column -> channel), padding and stride."""
    kh = data.draw(st.integers(1, 3))
    bsz, c, f = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    h, wd = data.draw(st.integers(kh, 6)), data.draw(st.integers(kh, 6))
    stride, padding = data.draw(st.integers(1, 3)), data.draw(st.integers(0, 2))
    cfg = _channels_last(cfg, data, c, c * kh * kh)
    x = data.draw(raw_array_st(cfg.fmt_x, (bsz, c, h, wd)))
    w = data.draw(raw_array_st(cfg.fmt_w, (f, c, kh, kh)))
    b = data.draw(raw_array_st(cfg.fmt_bias_acc, (f,)))
    act = "relu" if relu else "none"
    _same_outcome(lambda: _run_conv(cfg, x, w, b, relu, seed, stride, padding),
                  lambda: reference.conv2d(x, w, b, cfg, stride=stride, padding=padding, activation=act,
                                           seed=seed).y)


def test_dense_step_at_the_int64_edges():
    """62-bit accumulator, most-negative operands, K = 1, a bias at each rail."""
    fx, fw = QFormat(31, 0), QFormat(31, 0)
    for acc, ov in ((62, "wrap"), (62, "clip"), (61, "ideal"), (1, "clip"), (2, "wrap")):
        cfg = LayerConfig("l", fw, fx, QFormat(62, 0), acc, ov, "nearest")
        lo, hi = cfg.fmt_bias_acc.raw_min, cfg.fmt_bias_acc.raw_max
        x = np.array([[fx.raw_min], [fx.raw_max], [0]])
        w = np.array([[fw.raw_min, fw.raw_max, fw.raw_min]])
        b = np.array([lo, hi, hi])
        _same_outcome(lambda: _run_dense(cfg, x, w, b, False, 0), lambda: reference.dense(x, w, b, cfg).y)


@given(src=qformat_st(1, 30), dst=qformat_st(1, 30), rounding=rounding_st, seed=seed_st, data=st.data())
def test_convert_step_matches_its_twin_and_qformat(src, dst, rounding, seed, data):
    s = src.frac_bits - dst.frac_bits
    assume(s <= MAX_WIDTH)
    v = data.draw(raw_array_st(src, (data.draw(st.integers(1, 20)),)))
    k = max(-s, 0)
    conv = np.array([s, rounding.code, dst.raw_min, dst.raw_max, -((-dst.raw_min) >> k), dst.raw_max >> k],
                    np.int64)
    out = np.empty_like(v)
    pk.convert_step(1, v, out, v.size, conv, seed_words(seed))
    assert out.tolist() == twin.convert(v, src, dst, rounding, seed)
    if src != dst:  # convert returns equal formats unchanged (the plan has no step then)
        np.testing.assert_array_equal(out, convert(v, src, dst, rounding, seed))


_float_st = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 2.0 ** -60, -(2.0 ** -60), 1e-300, -1e-300, 3e38, -3e38,
                     1e39, 1e300, float("nan"), float("inf")]),
    st.integers(-300, 300).map(lambda i: i / 8))


_extreme_format_st = st.builds(lambda w, f, signed: QFormat(w - f, f, signed), st.integers(1, 62),
                               st.integers(-1100, 1100), st.booleans())


@given(values=st.lists(_float_st, min_size=1, max_size=12), fmt=st.one_of(qformat_st(1, 62), _extreme_format_st),
       rounding=rounding_st, seed=seed_st, pre=st.booleans(), data=st.data())
def test_quantize_input_matches_its_twin_and_the_numpy_path(values, fmt, rounding, seed, pre, data):
    """Preprocessing in float32 then qformat.quantize: ties, tiny negatives, rails, overflow of
    float32, NaN/inf (status 1) and scalings beyond the normal doubles (status 2)."""
    e = len(values)
    mean = np.array(data.draw(st.lists(st.floats(-3, 3, width=32), min_size=e, max_size=e)), np.float32)
    std = np.array(data.draw(st.lists(st.floats(0.015625, 5, width=32), min_size=e, max_size=e)), np.float32)
    x = np.array(values, np.float64)
    out = np.zeros(e, np.int64)
    fq = np.array([fmt.frac_bits, fmt.raw_min, fmt.raw_max, rounding.code], np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        status = pk.quantize_input(1, x, mean, std, pre, fq, seed_words(seed), out)
        want_status, want = twin.quantize_input(x, mean, std, fmt, rounding, seed, pre)
        assert status == want_status
        if status == 0:
            assert out.tolist() == want
            pp = Preprocess("standardize", mean.reshape(e, 1, 1), std.reshape(e, 1, 1))
            xf = pp.apply(x.reshape(1, e, 1, 1)).astype(np.float64).ravel() if pre else x
            np.testing.assert_array_equal(out, quantize(xf, fmt, rounding, "clip", seed))


def test_a_draw_equal_to_the_dropped_fraction_rounds_down():
    """Stochastic rounding goes up iff u < fraction: values equal to their own draw stay down."""
    seed = 12345
    u = np.array([int(v) for v in twin_draws(seed, 6)], np.float64) * 2.0 ** -53
    x = np.concatenate([u, u + 3.0, -1.0 + u])  # fractions u, u, u above the floor
    fmt = QFormat(8, 0)
    out = np.zeros(x.size, np.int64)
    fq = np.array([0, fmt.raw_min, fmt.raw_max, Rounding.STOCHASTIC.code], np.int64)
    pk.quantize_input(1, x, np.zeros(x.size, np.float32), np.ones(x.size, np.float32), False, fq,
                      seed_words(seed), out)
    draws = np.array(twin_draws(seed, x.size), np.float64) * 2.0 ** -53
    want = np.floor(x) + (draws < x - np.floor(x))
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out, quantize(x, fmt, "stochastic", "clip", seed))
    assert out[:6].tolist() == [0] * 6


def twin_draws(seed, n):
    return [reference.splitmix_bits(seed, i, 53) for i in range(n)]


class _Pool:
    def __init__(self, size, stride=None):
        self.size, self.stride = size, stride


@given(data=st.data(), rounding=rounding_st, seed=seed_st, fmt=qformat_st(1, 20))
def test_pool_steps_match_their_twins_and_post_int(data, rounding, seed, fmt):
    k = data.draw(st.integers(1, 3))
    stride = data.draw(st.one_of(st.none(), st.integers(1, 3)))
    b, c = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    h, w = data.draw(st.integers(k, 7)), data.draw(st.integers(k, 7))
    x = data.draw(raw_array_st(fmt, (b, c, h, w)))
    s = stride or k
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    cfg = LayerConfig("l", "Q1.7", "Q1.7", fmt, rounding=rounding)
    geo = [c, h, w, k, s, oh, ow]
    n = k * k
    shift = n.bit_length() - 1 if n & (n - 1) == 0 else -1
    out = np.empty(b * c * oh * ow, np.int64)
    pk.pool_step(b, x.ravel(), out, np.array(geo + [0, rounding.code, shift], np.int64), seed_words(seed))
    assert out.tolist() == twin.maxpool(x, k, s)
    np.testing.assert_array_equal(out, post_int("maxpool2d", _Pool(k, stride), x, fmt, cfg, seed).ravel())
    if rounding is Rounding.STOCHASTIC and shift < 0:
        return  # the plan runs post_int there (its draw is not counter-based)
    pk.pool_step(b, x.ravel(), out, np.array(geo + [1, rounding.code, shift], np.int64), seed_words(seed))
    assert out.tolist() == twin.avgpool(x, k, s, rounding, seed)
    np.testing.assert_array_equal(out, post_int("avgpool2d", _Pool(k, stride), x, fmt, cfg, seed).ravel())


@given(data=st.data(), fmt=qformat_st(1, 62))
def test_logits_step_matches_its_twin(data, fmt):
    assume(-900 <= fmt.frac_bits <= 1000)
    m, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6))
    x = data.draw(raw_array_st(fmt, (m, n)))
    raw, logits, pred = np.empty((m, n), np.int64), np.empty((m, n)), np.empty(m, np.int64)
    pk.logits_step(m, x.ravel(), n, fmt.frac_bits, raw, logits, pred)
    want_logits, want_pred = twin.logits(x, fmt.frac_bits)
    assert (raw.tolist(), logits.tolist(), pred.tolist()) == (x.tolist(), want_logits, want_pred)


# --- the plan against Simulator.simulate -----------------------------------------------------------

@st.composite
def network_config_st(draw, names, knobs: bool = True):
    """One config per layer of a shipped model: formats of useful sizes, BW_acc 6..40, every
    overflow and rounding mode, the knobs."""
    layers = []
    for name in names:
        fw, fx, fy = (QFormat(i, draw(st.integers(max(lo, 1 - i), hi)), signed)
                      for i, lo, hi, signed in ((draw(st.integers(-1, 3)), 1, 9, True),
                                                (draw(st.integers(1, 6)), -1, 8, draw(st.booleans())),
                                                (draw(st.integers(1, 7)), -1, 9, draw(st.booleans()))))
        acc = draw(st.integers(6, 40))
        kw = {}
        if knobs and draw(st.booleans()):
            fl_p = fw.frac_bits + fx.frac_bits
            kw = dict(frac_acc=fl_p + draw(st.integers(-4, 3)), product=draw(st.sampled_from(["exact", "cast"])),
                      order=draw(st.sampled_from(["sequential", "strided:3"])),
                      output_overflow=draw(st.sampled_from(["clip", "wrap"])))
        try:
            layers.append(LayerConfig(name, fw, fx, fy, acc, draw(overflow3_st), draw(rounding_st),
                                      a2q=draw(st.booleans()) and draw(st.booleans()), **kw))
        except FxpsimError:
            assume(False)
    return NetworkConfig(tuple(layers))


def _check_plan(sim, config, x, max_batch):
    """plan(x) and plan(one image) equal Simulator.simulate with batch_size=max_batch, or both
    refuse with the same message."""
    try:
        ref = sim.simulate(x, config, batch_size=max_batch)
    except FxpsimError as exc:
        with pytest.raises(FxpsimError) as got:
            Plan(sim, config, max_batch)(x)
        assert str(got.value) == str(exc)
        return None
    plan = Plan(sim, config, max_batch)
    out = plan(x)
    np.testing.assert_array_equal(out.logits, ref.logits)
    np.testing.assert_array_equal(out.predictions, ref.predictions)
    np.testing.assert_array_equal(out.raw * 2.0 ** -config[-1].fmt_y.frac_bits, ref.logits)
    one = plan(x[0])
    np.testing.assert_array_equal(one.logits, sim.simulate(x[:1], config).logits[0])
    assert one.predictions == int(np.argmax(one.logits)) and one.raw.shape == ref.logits.shape[1:]
    return plan


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
@given(data=st.data(), seed=st.integers(0, 2**63 - 1))
def test_plan_is_bit_identical_to_simulate(name, data, seed):
    sim = Simulator(MODEL[name], seed=seed)
    config = data.draw(network_config_st(sim.names))
    n = data.draw(st.integers(1, 9))
    x = DIGITS.x_test[data.draw(st.integers(0, 400)):][:n]
    plan = _check_plan(sim, config, x, data.draw(st.sampled_from([n, max(1, n - 2), 64])))
    if plan is not None:
        assert plan.fallbacks == []


@given(data=st.data(), seed=st.integers(0, 2**63 - 1))
def test_plan_runs_channels_last_convs_and_flatten_dense_bit_identically(data, seed):
    """digits-cnn with conv2 and fc1 (after conv2's flatten, 16 channels) in hls4ml's
    channels-last order, strided or not: the plan's kernels == simulate, no fallback."""
    sim = Simulator(MODEL["digits-cnn"], seed=seed)
    config = data.draw(network_config_st(sim.names))
    for name in ("conv2", "fc1"):
        rf = data.draw(st.sampled_from(["", "+strided:2", "+strided:3"]))
        config = config.with_layer(sim.names.index(name), order=f"channels-last:16{rf}")
    x = DIGITS.x_test[data.draw(st.integers(0, 400)):][:data.draw(st.integers(1, 5))]
    plan = _check_plan(sim, config, x, len(x))
    if plan is not None:
        assert plan.fallbacks == []


def test_a_batch_larger_than_max_batch_runs_in_max_batch_chunks():
    """Stochastic draws count over a batch: the plan's chunks are simulate's batches."""
    sim = Simulator(MODEL["digits-cnn"], seed=11)
    config = Config.uniform(sim.names, "Q2.6", "Q4.4", "Q4.4", acc_bits=14, overflow="clip", rounding="stochastic")
    x = DIGITS.x_test[:23]
    out = Plan(sim, config, max_batch=5)(x)
    np.testing.assert_array_equal(out.logits, sim.simulate(x, config, batch_size=5).logits)
    assert not np.array_equal(out.logits, sim.simulate(x, config, batch_size=23).logits)


@pytest.mark.parametrize("engine, options, why", [
    ("sparse", {"pes": 4}, "engine sparse"), ("bitserial", {"lanes": 4}, "engine bitserial"),
])
def test_other_engines_and_tree_order_run_on_the_simulators_code(engine, options, why):
    """Stages the plan has no kernel for run the Simulator's engine for that stage only."""
    sim = Simulator(MODEL["digits-cnn"], seed=3)
    base = Config.uniform(sim.names, "Q2.6", "Q4.4", "Q4.4", acc_bits=16, overflow="wrap", rounding="nearest")
    config = base.with_engine(engine, ["conv2", "fc2"], **options).with_layer(2, order="tree", overflow="clip")
    plan = _check_plan(sim, config, DIGITS.x_test[:6], 6)
    assert plan.fallbacks == [f"conv2: {why}", "fc1: order tree", f"fc2: {why}"]


def test_tanh_average_pooling_and_wide_conversions_fall_back_bit_identically():
    net = build_network("conv3x3p1-avgpool3-fc8-tanh-fc10", (1, 8, 8), 10, seed=2)
    sim = Simulator(net, seed=5)
    config = NetworkConfig((LayerConfig("conv1", "Q2.6", "Q3.5", "Q3.5", 20, "clip", "stochastic"),
                            LayerConfig("fc1", "Q2.6", "Q3.5", "Q2.8", 24, "wrap", "stochastic"),
                            LayerConfig("fc2", "Q2.6", "Q2.8", "Q4.4", 24, "clip", "stochastic")))
    x = np.random.default_rng(0).normal(0, 1, (7, 1, 8, 8))
    plan = _check_plan(sim, config, x, 7)
    assert plan.fallbacks == ["conv1: stochastic avgpool2d over 9 values", "fc1: tanh"]
    wide = config.with_layer(0, fmt_y=QFormat(-60, 70))
    plan = _check_plan(sim, wide, x, 7)
    assert plan.fallbacks[1] == "fc1: conversion Q-60.70 -> Q3.5"
    assert _check_plan(sim, config.with_all(rounding="floor"), x, 4).fallbacks == ["fc1: tanh"]


@given(rounding=rounding_st, seed=st.integers(0, 2**63 - 1), overflow=overflow3_st)
def test_post_ops_run_on_kernels_bit_identically(rounding, seed, overflow):
    """Max pooling, a ReLU after it, 2x2 average pooling (stochastic too) and a sigmoid (on the
    Simulator's post_int) between stages."""
    sim = Simulator(POST_NET, seed=seed)
    config = Config.uniform(sim.names, "Q2.6", "Q3.5", "Q3.5", acc_bits=14, overflow=overflow, rounding=rounding)
    plan = _check_plan(sim, config, POST_X, 5)
    assert plan is None or plan.fallbacks == ["fc1: sigmoid"]


POST_NET = build_network("conv4x3p1-maxpool2-relu-conv3x3p1-avgpool2-fc6-sigmoid-fc10", (2, 8, 8), 10, seed=4)
POST_X = np.random.default_rng(1).normal(0, 1.5, (5, 2, 8, 8))


def test_stats_are_the_simulators_on_the_same_batches():
    sim = Simulator(MODEL["digits-mlp"], seed=2)
    config = Config.uniform(sim.names, "Q2.6", "Q4.4", "Q4.4", acc_bits=12, overflow="clip", rounding="stochastic")
    x, y = DIGITS.x_test[:30], DIGITS.y_test[:30]
    plan = Plan(sim, config, max_batch=8)
    res = plan(x, y, stats=True)
    ref = sim.simulate(x, config, y, batch_size=8)
    assert isinstance(res, SimResult) and res.layer_stats == ref.layer_stats
    assert sum(s.overflow_count for s in res.layer_stats) > 0
    out = plan(x, y)
    assert isinstance(out, PlanOutput) and out.accuracy == ref.accuracy
    np.testing.assert_array_equal(out.logits, res.logits)
    assert plan(x, y, prefix_stats=True).layer_stats[0].max_abs_prefix is not None


def test_prepared_inputs_skip_the_preprocessing():
    sim = Simulator(MODEL["digits-cnn"])
    config = Config.uniform(sim.names, "Q2.6", "Q4.4", "Q4.4", acc_bits=16, overflow="clip")
    xf = sim.prepare(DIGITS.x_test[:5])
    out = Plan(sim, config, 8)(xf, prepared=True)
    np.testing.assert_array_equal(out.logits, sim.simulate(xf, config, prepared=True).logits)


def test_bad_inputs_and_configs_are_one_line_errors():
    sim = Simulator(MODEL["digits-mlp"])
    config = Config.uniform(sim.names, "Q2.6", "Q4.4", "Q4.4", acc_bits=16, overflow="clip")
    plan = Plan(sim, config)
    cases = [
        (lambda: plan(np.zeros((2, 64))), r"x has shape \(2, 64\), not one image \(1, 8, 8\) or a batch"),
        (lambda: plan(np.zeros((0, 1, 8, 8))), "no input samples to simulate"),
        (lambda: plan(np.full((2, 1, 8, 8), "a")), "x has dtype <U1, not numbers"),
        (lambda: plan(np.full((1, 8, 8), np.nan)), "input data contains NaN or inf: fix the data set"),
        (lambda: plan(np.full((2, 1, 8, 8), np.inf), prepared=True), "non-finite value"),
        (lambda: Plan(sim, config, max_batch=0), "max_batch=0 is not a whole number >= 1"),
        (lambda: Plan(sim, config, max_batch=10**9), "need .* MiB of buffers"),
        (lambda: Plan(sim, "cfg.json"), "config str is not a NetworkConfig"),
        (lambda: Plan(sim, NetworkConfig(config.layers[:2])), "the config has 2 layers but the model has 3"),
        (lambda: Plan(Simulator(MODEL["digits-mlp"], seed=None), config.with_all(rounding="stochastic")),
         "stochastic rounding needs an integer seed"),
    ]
    for call, message in cases:
        with pytest.raises(FxpsimError, match=message) as exc:
            call()
        assert "\n" not in str(exc.value)
    ideal = config.with_layer(0, overflow="ideal", fmt_x="Q31.0", fmt_w="Q31.0", acc_bits=62)
    with pytest.raises(FxpsimError) as ref:
        sim.simulate(DIGITS.x_test[:1], ideal)
    with pytest.raises(FxpsimError) as got:
        Plan(sim, ideal)
    assert str(got.value) == str(ref.value)
    with pytest.raises(FxpsimError, match="order=tree has no plan kernel"):
        layer_operands(replace(config[0], order="tree"), np.zeros((64, 128), np.int64), None, False,
                       np.zeros((1, 64), np.int64))
