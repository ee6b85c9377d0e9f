"""The datapath knobs of issue 16 (DESIGN.md): frac_acc, product, product_rounding, order,
output_overflow and fmt_bias.

Three kinds (STYLE.md): the dense engine == the Python-int twin on random formats, shapes
and every knob combination (hypothesis); the fast paths == the per-step kernels on calls big
enough to take each of them, and the exactness shortcuts the engine relies on; hand-computed
cases, one per knob. Plus the record (JSON, strict reading) and the engines that refuse knobs.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, seed, settings
from hypothesis import strategies as st

from fxpsim.config import KNOBS, LayerConfig, NetworkConfig
from fxpsim.datapath import core
from fxpsim.datapath import dense as dp
from fxpsim.datapath import reference as ref
from fxpsim.datapath.bitserial import bit_serial_conv2d, bit_serial_dense
from fxpsim.datapath.engines import ENGINES
from fxpsim.datapath.sparse import eie_dense
from fxpsim.errors import FxpsimError
from fxpsim.qformat import MAX_WIDTH, QFormat, Rounding
from fxpsim.sparse.kernel import column_schedule
from fxpsim.sparse.csc import encode
from fxpsim.sparse.pe import eie_matrix
from strategies import _fast_path_case, _raw_array, activation_st, qformat_st, rail_bias_st, rounding_st

DETERMINISTIC = [r.value for r in Rounding if r is not Rounding.STOCHASTIC]


def assert_same(a, b):
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.acc, b.acc)
    assert a.stats == b.stats


# --------------------------------------------------------------------------- strategies

def _order_st(k: int):
    return st.one_of(st.sampled_from(["sequential", "tree"]),
                     st.integers(1, k + 1).map(lambda rf: f"strided:{rf}"))


@st.composite
def knob_config_st(draw, k: int, max_width: int = 12):
    """A LayerConfig with every knob drawn: FL_acc below / equal / above FL_w + FL_x, BW_acc
    near the terms' width (1..62), wrap / clip / ideal (ideal where int64 holds the sums)."""
    fmt_x = draw(qformat_st(min_width=1, max_width=max_width))
    fmt_w = draw(qformat_st(min_width=1, max_width=max_width))
    prod, fl_p = fmt_x.width + fmt_w.width, fmt_x.frac_bits + fmt_w.frac_bits
    where = draw(st.sampled_from(["below", "equal", "above"] if prod < MAX_WIDTH else ["below", "equal"]))
    d = 0 if where == "equal" else draw(st.integers(1, 8 if where == "below" else min(8, MAX_WIDTH - prod)))
    d = -d if where == "below" else d
    term = max(1, prod + d)
    acc_bits = draw(st.one_of(st.integers(max(1, term - 4), min(MAX_WIDTH, term + 4)),
                              st.integers(1, MAX_WIDTH)))
    frac_y = fl_p + d - draw(st.integers(-3, 5))
    width_y = draw(st.sampled_from([1, 2, 4, 8, 16]))
    fmt_y = QFormat(width_y - frac_y, frac_y, draw(st.booleans()))
    overflow = draw(st.sampled_from(["wrap", "clip", "ideal"]))
    if overflow == "ideal":
        worst = (1 << (acc_bits - 1)) + k * core.max_abs_term(
            core.max_abs_raw(fmt_x) * core.max_abs_raw(fmt_w), d)
        overflow = overflow if worst < 1 << 63 else "clip"
    return LayerConfig("knobs", fmt_w, fmt_x, fmt_y, acc_bits=acc_bits, overflow=overflow,
                       rounding=draw(rounding_st), frac_acc=fl_p + d,
                       product=draw(st.sampled_from(["exact", "cast"])),
                       product_rounding=draw(st.sampled_from(DETERMINISTIC)), order=draw(_order_st(k)),
                       output_overflow=draw(st.sampled_from(["clip", "wrap"])))


@st.composite
def knob_dense_case_st(draw, max_batch=6, max_k=24, max_n=5, max_width=12):
    """``(x, w, b, cfg, call keywords)`` of a small dense call: edges (most negative operands,
    zeros), 4-row block tails, K = 1 often, biases at the rails."""
    m, n = draw(st.integers(1, max_batch)), draw(st.integers(1, max_n))
    k = draw(st.one_of(st.just(1), st.integers(1, max_k)))
    cfg = draw(knob_config_st(k, max_width))
    x = _raw_array(draw, cfg.fmt_x, (m, k))
    w = _raw_array(draw, cfg.fmt_w, (k, n))
    b = draw(rail_bias_st(cfg.acc_bits, n))
    kw = dict(activation=draw(activation_st), seed=draw(st.integers(0, 2**63)), prefix_stats=draw(st.booleans()))
    return x, w, b, cfg, kw


@st.composite
def knob_conv_case_st(draw):
    """``(x, w, b, cfg, call keywords)`` of a small NCHW conv with every knob drawn."""
    kh, kw_ = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad, stride = draw(st.integers(0, 2)), draw(st.integers(1, 2))
    h, wd = draw(st.integers(max(1, kh - 2 * pad), 6)), draw(st.integers(max(1, kw_ - 2 * pad), 6))
    bsz, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    cfg = draw(knob_config_st(c * kh * kw_, max_width=10))
    x = _raw_array(draw, cfg.fmt_x, (bsz, c, h, wd))
    w = _raw_array(draw, cfg.fmt_w, (f, c, kh, kw_))
    kw = dict(stride=stride, padding=pad, activation=draw(activation_st), seed=draw(st.integers(0, 2**63)),
              prefix_stats=draw(st.booleans()))
    return x, w, draw(rail_bias_st(cfg.acc_bits, f)), cfg, kw


# --------------------------------------------------------------------------- engine == twin

@settings(max_examples=250)
@given(knob_dense_case_st())
def test_dense_equals_twin_for_every_knob(case):
    x, w, b, cfg, kw = case
    assert_same(dp.dense(x, w, b, cfg, **kw), ref.dense(x, w, b, cfg, **kw))


@settings(max_examples=60)
@given(knob_conv_case_st())
def test_conv_equals_twin_for_every_knob(case):
    x, w, b, cfg, kw = case
    assert_same(dp.conv2d(x, w, b, cfg, **kw), ref.conv2d(x, w, b, cfg, **kw))


def _channels_last_st(channels: int, k: int):
    """``channels-last:C`` or ``channels-last:C+strided:RF`` (RF 1..K+1) for C channels of K inputs."""
    return st.one_of(st.just(f"channels-last:{channels}"),
                     st.integers(1, k + 1).map(lambda rf: f"channels-last:{channels}+strided:{rf}"))


@settings(max_examples=150)
@given(knob_dense_case_st(max_k=24), st.data())
def test_dense_channels_last_equals_twin(case, data):
    """A Dense after a flattened (C, H, W) input, added in hls4ml's (position, channel) order
    (then strided), every other knob drawn: the engine == the twin (stats included)."""
    x, w, b, cfg, kw = case
    k = x.shape[1]
    c = data.draw(st.sampled_from([d for d in range(1, k + 1) if k % d == 0]))
    cfg = replace(cfg, order=data.draw(_channels_last_st(c, k)))
    assert_same(dp.dense(x, w, b, cfg, **kw), ref.dense(x, w, b, cfg, **kw))


@settings(max_examples=60)
@given(knob_conv_case_st(), st.data())
def test_conv_channels_last_equals_twin(case, data):
    x, w, b, cfg, kw = case
    cfg = replace(cfg, order=data.draw(_channels_last_st(w.shape[1], w[0].size)))
    assert_same(dp.conv2d(x, w, b, cfg, **kw), ref.conv2d(x, w, b, cfg, **kw))


def _nhwc_patches(x, kh, kw, stride, padding):
    """im2col of NCHW ``x`` written the way hls4ml's channels-last buffer holds it: per output
    pixel, (kernel row, kernel column, channel), zero padding."""
    xp = np.pad(np.asarray(x), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    bsz, c, h, wd = xp.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    rows = [[int(xp[b_, ch, i * stride + di, j * stride + dj]) for di in range(kh) for dj in range(kw)
             for ch in range(c)] for b_ in range(bsz) for i in range(oh) for j in range(ow)]
    return np.array(rows, dtype=np.int64).reshape(bsz * oh * ow, kh * kw * c), (bsz, oh, ow)


@settings(max_examples=40)
@given(knob_conv_case_st())
def test_channels_last_conv_is_a_sequential_dense_over_nhwc_patches(case):
    """What the knob means, built independently of both permutations: the conv in
    ``channels-last:C`` order == the sequential twin over (row, column, channel) patches with
    the weights laid out the same way (hls4ml's conv_2d_latency_cl / RemoveTransposeBeforeFlatten)."""
    x, w, b, cfg, kw = case
    f, c, kh, kw_ = w.shape
    cfg = replace(cfg, order=f"channels-last:{c}")
    patches, (bsz, oh, ow) = _nhwc_patches(x, kh, kw_, kw["stride"], kw["padding"])
    wm = np.asarray(w).transpose(2, 3, 1, 0).reshape(kh * kw_ * c, f)
    flat = ref.dense(patches, wm, b, replace(cfg, order="sequential"), activation=kw["activation"],
                     seed=kw["seed"], prefix_stats=kw["prefix_stats"])
    got = dp.conv2d(x, w, b, cfg, **kw)
    np.testing.assert_array_equal(got.acc, flat.acc.reshape(bsz, oh, ow, f).transpose(0, 3, 1, 2))
    assert (got.stats.overflow_count, got.stats.cast_overflows, got.stats.max_abs_prefix) == (
        flat.stats.overflow_count, flat.stats.cast_overflows, flat.stats.max_abs_prefix)
    if cfg.rounding is not Rounding.STOCHASTIC:  # its draws are indexed by output position
        np.testing.assert_array_equal(got.y, flat.y.reshape(bsz, oh, ow, f).transpose(0, 3, 1, 2))


def test_channels_last_order_changes_what_saturates():
    """K = 4 as C = 2 channels of 2 positions: products 6, 6 (channel 0), -6, -6 (channel 1),
    BW_acc 4 clip. Sequential 6, 12 -> 7 (overflow), 1, -5; channels-last (k = 0, 2, 1, 3):
    6, 0, 6, 0; + strided:2 over that (k = 0, 1, 2, 3) is sequential again; wrap agrees."""
    x, w = [2, 2, -2, -2], [3, 3, 3, 3]
    seq = _one(x, w, acc_bits=4)
    cl = _one(x, w, acc_bits=4, order="channels-last:2")
    assert (cl.acc[0, 0], cl.stats.overflow_count, cl.stats.max_abs_prefix) == (0, 0, 6)
    assert_same(_one(x, w, acc_bits=4, order="channels-last:2+strided:2"), seq)
    assert_same(_one(x, w, acc_bits=4, order="channels-last:1"), seq)
    assert_same(_one(x, w, acc_bits=4, order="channels-last:4"), seq)
    cfg = LayerConfig("fc1", **BASE, order="channels-last:3+strided:2")
    assert core.order_permutation(cfg, 12).tolist() == ref.order_of(12, cfg) == [0, 8, 5, 2, 10, 7, 4, 1,
                                                                                  9, 6, 3, 11]
    assert (cfg.reuse_factor, cfg.channels_last) == (2, 3)
    assert (LayerConfig("fc1", **BASE).channels_last, replace(cfg, order="channels-last:5").reuse_factor) == (None, 1)


@pytest.mark.parametrize("call, message", [
    (lambda cfg: dp.dense(np.zeros((1, 10), np.int64), np.zeros((10, 2), np.int64), None, cfg),
     "layer fc1: order=channels-last:3: K=10 inputs are not 3 channels of equal size"),
    (lambda cfg: ref.dense(np.zeros((1, 10), np.int64), np.zeros((10, 2), np.int64), None, cfg),
     "layer fc1: order=channels-last:3: K=10 inputs are not 3 channels of equal size"),
    (lambda cfg: dp.conv2d(np.zeros((1, 2, 3, 3), np.int64), np.zeros((1, 2, 2, 2), np.int64), None, cfg),
     "layer fc1: order=channels-last:3 names 3 channels but the conv has 2 input channels: use "
     "order=channels-last:2"),
])
def test_channels_last_needs_the_layers_channel_count(call, message):
    with pytest.raises(FxpsimError) as exc:
        call(LayerConfig("fc1", **BASE, order="channels-last:3"))
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


@settings(max_examples=60)
@given(knob_dense_case_st(max_batch=3, max_k=12, max_n=3, max_width=31))
def test_wide_operands_62_bit_accumulators_and_sums_beyond_int64(case):
    """Operands up to 31 bits: terms up to 62 bits, exact sums past 2**63 (Python ints)."""
    x, w, b, cfg, kw = case
    assert_same(dp.dense(x, w, b, cfg, **kw), ref.dense(x, w, b, cfg, **kw))


@pytest.mark.parametrize("order", ["sequential", "strided:2", "tree"])
@pytest.mark.parametrize("d", [-2, 0, 2])
def test_most_negative_operands_on_rail_biases_width_one_and_two(order, d):
    """Q1.0 (raw -1, 0) and Q2.0 (-2..1) operands at the most negative code, K = 1 and 5,
    2-bit and 62-bit accumulators with biases on the rails: every knob against the twin."""
    for fx, fw, k, acc_bits in ((QFormat(1, 0), QFormat(2, 0), 1, 2), (QFormat(2, 0), QFormat(1, 0), 5, 2),
                                (QFormat(2, 0), QFormat(2, 0), 5, 3), (QFormat(2, 0), QFormat(2, 0), 5, 62)):
        x = np.full((3, k), fx.raw_min)
        w = np.full((k, 2), fw.raw_min)
        lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
        for b, product, ov, out in ((np.array([lo, hi]), "cast", "clip", "wrap"),
                                    (np.array([hi, hi - 1]), "exact", "wrap", "clip"),
                                    (np.array([lo + 1, 0]), "cast", "wrap", "clip")):
            cfg = LayerConfig("edge", fw, fx, QFormat(4, 0), acc_bits=acc_bits, overflow=ov, frac_acc=d,
                              product=product, order=order, output_overflow=out, rounding="floor",
                              product_rounding="nearest")
            assert_same(dp.dense(x, w, b, cfg, prefix_stats=True), ref.dense(x, w, b, cfg, prefix_stats=True))


# --------------------------------------------------------------------------- fast paths

class KnobPaths:
    """Which pieces of the dense engine ran (spies around its internals, as test_dense's PathLog)."""

    def __init__(self, monkeypatch):
        self.seen = set()
        for name, key in (("_provably_safe", lambda a, k: ("exact check", "strict" if a[-1] else "plain")),
                          ("_exact_terms_object", lambda a, k: ("python-int sums",)),
                          ("_sequential", lambda a, k: ("lane kernels",)),
                          ("_run_knobs", lambda a, k: ("knob kernel", "tree" if a[4].tree else "sequential"))):
            real = getattr(dp, name)

            def spy(*a, _real=real, _key=key, **k):
                self.seen.add(_key(a, k))
                return _real(*a, **k)

            monkeypatch.setattr(dp, name, spy)


@st.composite
def big_knob_case_st(draw, target, overflow, knob):
    """A call of >= 2**18 MACs (the exact checks and the row sample run) from strategies'
    fast-path cases, with one knob set: ``cast`` products, strided or tree order, or FL_acc
    above / below FL_w + FL_x (mostly-zero x, so the zero-skipping twin stays fast)."""
    shape = draw(st.sampled_from(["long", "short"]))
    rows = draw(st.integers(1, 128) if shape == "short" else st.integers(129, 320))
    n = draw(st.integers(1, 6))
    k = -(-(1 << 18) // (rows * n)) + draw(st.integers(0, 3))
    x, w, b, kw = _fast_path_case(draw, rows, k, n, draw(st.sampled_from(["few", "sparse"])),
                                  target=target, overflow=overflow)
    fmt_x, fmt_w = kw.pop("fmt_x"), kw.pop("fmt_w")
    knobs = {"cast": dict(product="cast"), "strided": dict(order=f"strided:{draw(st.integers(2, 9))}"),
             "tree": dict(order="tree"), "tree-cast": dict(order="tree", product="cast"),
             "above": dict(frac_acc=fmt_x.frac_bits + fmt_w.frac_bits + draw(st.integers(1, 3))),
             "below": dict(frac_acc=fmt_x.frac_bits + fmt_w.frac_bits - draw(st.integers(1, 3)),
                           product="cast")}[knob]
    try:
        cfg = LayerConfig("big", fmt_w, fmt_x, kw.pop("fmt_y"), acc_bits=kw.pop("acc_bits"),
                          overflow=kw.pop("overflow"), rounding=kw.pop("rounding"), **knobs)
    except FxpsimError:
        assume(False)  # e.g. FL_acc past the int64 datapath
    if b is not None and cfg.overflow.value == "ideal":
        b = np.clip(b, cfg.fmt_bias_acc.raw_min, cfg.fmt_bias_acc.raw_max)
    return x, w, b, cfg, kw


def _zero_skipping_twin(x, w, b, cfg, kw):
    """``ref.dense`` over each row's non-zero products in the layer's order (sequential or
    strided; a zero term changes no register, count or prefix), for calls too big for it."""
    xs, ws = x.astype(np.int64), w.astype(np.int64)
    bias = [0] * w.shape[1] if b is None else [int(v) for v in b]
    order = ref.order_of(x.shape[1], cfg)
    plain = replace(cfg, order="sequential")
    accs = []
    for r in range(x.shape[0]):
        ks = [k for k in order if xs[r, k]]
        for j in range(w.shape[1]):
            accs.append(ref.accumulate(bias[j], [int(xs[r, k]) * int(ws[k, j]) for k in ks], plain))
    return ref._finish(accs, (x.shape[0], w.shape[1]), x.size * w.shape[1], cfg, kw["prefix_stats"],
                       kw["activation"], kw["seed"])


BIG_CELLS = [(t, o, kn) for kn in ("cast", "strided", "tree", "tree-cast", "above", "below")
             for t, o in (("int16 lanes", "clip"), ("int32 lanes", "wrap"), ("int64 lanes", "clip"),
                          ("wide products", "clip"), ("huge sums", "wrap"))]


def test_big_calls_take_every_path_and_match(monkeypatch):
    """Fast path == every output through the per-step kernel (tree: also the twin on a few
    rows); sequential and strided orders == the zero-skipping twin; and every path ran."""
    log = KnobPaths(monkeypatch)

    def check(case):
        x, w, b, cfg, kw = case
        res = dp.dense(x, w, b, cfg, **kw)
        xv, wv, bias = core.check_operands(x, w, b, cfg)
        if cfg.product_shift >= 0:
            forced = dp._accumulate(xv, wv, bias, cfg, force_sequential=True, prefix_stats=kw["prefix_stats"])
            np.testing.assert_array_equal(res.acc, forced[0])
            assert res.stats == forced[1]
        if cfg.order != "tree":
            assert_same(res, _zero_skipping_twin(x, w, b, cfg, kw))
        else:
            rows = sorted({0, x.shape[0] // 2, x.shape[0] - 1})
            twin = ref.dense(x[rows], w, b, cfg, activation=kw["activation"], seed=kw["seed"])
            np.testing.assert_array_equal(res.acc[rows], twin.acc)

    for i, (target, overflow, knob) in enumerate(BIG_CELLS):
        seed(i)(settings(max_examples=2)(given(big_knob_case_st(target, overflow, knob))(check)))()
    want = {("exact check", "strict"), ("exact check", "plain"), ("lane kernels",), ("python-int sums",),
            ("knob kernel", "tree"), ("knob kernel", "sequential")}
    assert not want - log.seen, f"paths never reached: {sorted(want - log.seen)}"


@pytest.mark.parametrize("knobs, w01, want", [(dict(order="tree"), (100, 50), 27),
                                              (dict(product="cast"), (150, 0), 27),
                                              (dict(order="strided:3"), (100, 50), 50)])
def test_the_exact_check_keeps_tree_nodes_and_casts_in_range(knobs, w01, want, monkeypatch):
    """64 rows x K = 512 x 8 outputs = 2**18 MACs: <= 128 rows, so the exact check runs. Bias
    -100, BW_acc 8 (-128..127), x = 1 at k = 0, 1 only, products there 100 and 50: every
    prefix from the bias (-100, 0, 50) stays in range, so any sequential order gives 50 with no
    overflow; the tree's first node 100 + 50 = 150 saturates to 127 first: 127 - 100 = 27. A
    product of 150 cast into BW_acc is 127 too: 27. The check must clear neither."""
    log = KnobPaths(monkeypatch)
    x = np.zeros((64, 512), np.int64)
    x[:, :2] = 1
    w = np.zeros((512, 8), np.int64)
    w[:2] = np.array(w01)[:, None]
    cfg = LayerConfig("check", "Q9.0", "Q8.0", "Q8.0", acc_bits=8, overflow="clip", **knobs)
    res = dp.dense(x, w, np.full(8, -100), cfg)
    assert (res.acc == want).all() and ("exact check", "plain" if "strided" in knobs.get("order", "") else
                                        "strict") in log.seen
    assert res.stats.overflow_count + res.stats.cast_overflows == (0 if want == 50 else 64 * 8)


# --------------------------------------------------------------------------- exactness shortcuts

@settings(max_examples=120)
@given(knob_dense_case_st())
def test_cast_equals_exact_when_no_cast_overflows(case):
    """A cast that changes no product (FL_acc = FL_w + FL_x or any) is the exact product."""
    x, w, b, cfg, kw = case
    cast = dp.dense(x, w, b, replace(cfg, product="cast"), **kw)
    if cast.stats.cast_overflows == 0:
        assert_same(cast, dp.dense(x, w, b, replace(cfg, product="exact"), **kw))
    if cfg.product_shift == 0 and cfg.overflow.value != "ideal":
        safe = replace(cfg, product="cast", acc_bits=min(MAX_WIDTH, cfg.fmt_x.width + cfg.fmt_w.width + 1))
        assert dp.dense(x, w, None, safe, **kw).stats.cast_overflows == 0


@settings(max_examples=120)
@given(knob_dense_case_st())
def test_wrap_results_do_not_depend_on_the_order(case):
    """wrap is modular: strided and tree orders give the sequential register, output and
    max_abs_acc (their overflow counts are their own), casts or not."""
    x, w, b, cfg, kw = case
    cfg = replace(cfg, overflow="wrap")
    seq = dp.dense(x, w, b, replace(cfg, order="sequential"), **kw)
    res = dp.dense(x, w, b, cfg, **kw)
    np.testing.assert_array_equal(res.acc, seq.acc)
    np.testing.assert_array_equal(res.y, seq.y)
    assert res.stats.max_abs_acc == seq.stats.max_abs_acc
    assert res.stats.cast_overflows == seq.stats.cast_overflows


# --------------------------------------------------------------------------- hand-computed cases

def _one(x, w, b=None, **knobs):
    """A 1-row dense call of Q2.1 data and weights (raw / 2), Q8.0 output by default."""
    base = dict(fmt_w="Q2.1", fmt_x="Q2.1", fmt_y="Q16.2", acc_bits=16, overflow="clip", rounding="floor")
    base.update(knobs)
    cfg = LayerConfig("hand", **base)
    x, w = np.array([x]), np.array(w).reshape(len(x), -1)
    res = dp.dense(x, w, b, cfg, prefix_stats=True)
    assert_same(res, ref.dense(x, w, b, cfg, prefix_stats=True))
    return res


@pytest.mark.parametrize("product_rounding, up, down", [
    ("floor", 4, -5), ("nearest", 5, -5), ("nearest-even", 4, -4), ("toward-zero", 4, -4)])
def test_frac_acc_below_rounds_each_product(product_rounding, up, down):
    """1.5 * 1.5 = 2.25: raw 3 * 3 = 9 at FL 2; at FL_acc = 1 that is 4.5 lsb, which floor
    takes to 4, nearest (ties away from zero) to 5, nearest-even and toward-zero to 4; -4.5
    goes to -5, -5, -4, -4. Two such products add their rounded values: 8 (or 10, -10, ...)."""
    assert _one([3], [3], frac_acc=1, product_rounding=product_rounding, fmt_y="Q15.1").acc[0, 0] == up
    assert _one([-3], [3], frac_acc=1, product_rounding=product_rounding, fmt_y="Q15.1").acc[0, 0] == down
    assert _one([3, 3], [3, 3], frac_acc=1, product_rounding=product_rounding,
                fmt_y="Q15.1").acc[0, 0] == 2 * up


def test_frac_acc_above_shifts_each_product_left():
    """FL_acc = 3 > FL_w + FL_x = 2: 9 (2.25) becomes 18 at FL 3; the bias is at FL 3 too;
    y (Q16.2) = round(18 + 5 = 23 -> 23 / 2 floor) = 11."""
    res = _one([3], [3], np.array([5]), frac_acc=3)
    assert (res.acc[0, 0], res.y[0, 0], res.stats.max_abs_acc) == (23, 11, 23)


def test_cast_wraps_or_clips_each_product_before_it_is_added():
    """BW_acc = 4 (-8..7), products 9 and 9 (FL 2, the default FL_acc), bias 0.

    wrap, exact: 0 + 9 -> -7 (overflow), -7 + 9 = 2: acc 2, 1 overflow, no cast.
    wrap, cast:  9 -> -7 twice (2 casts), 0 - 7 = -7, -7 - 7 = -14 -> 2 (1 overflow).
    clip, exact: 0 + 9 -> 7 (overflow), 7 + 9 -> 7 (overflow): acc 7, 2 overflows.
    clip, cast:  9 -> 7 twice (2 casts), 0 + 7 = 7, 7 + 7 -> 7 (1 overflow).
    max_abs_acc is |9 + 9| = 18 in every case (terms not range-limited).
    """
    got = {(ov, p): _one([3, 3], [3, 3], acc_bits=4, overflow=ov, product=p).stats
           for ov in ("wrap", "clip") for p in ("exact", "cast")}
    want = {("wrap", "exact"): (1, 0), ("wrap", "cast"): (1, 2), ("clip", "exact"): (2, 0),
            ("clip", "cast"): (1, 2)}
    assert {key: (s.overflow_count, s.cast_overflows) for key, s in got.items()} == want
    assert {s.max_abs_acc for s in got.values()} == {18}
    accs = {key: _one([3, 3], [3, 3], acc_bits=4, overflow=key[0], product=key[1]).acc[0, 0] for key in want}
    assert accs == {("wrap", "exact"): 2, ("wrap", "cast"): 2, ("clip", "exact"): 7, ("clip", "cast"): 7}


def test_strided_order_changes_what_saturates():
    """Products 6, 6, -6, -6 (x = 2, 2, -2, -2 times w = 3: raw 6 each at FL 2), BW_acc = 4
    clip, bias 0. Sequential: 6, 12 -> 7 (overflow), 1, -5. strided:2 (k = 0, 2, 1, 3): 6, 0,
    6, 0, no overflow. max_abs_prefix 12 and 6; strided:4 >= K is sequential."""
    seq = _one([2, 2, -2, -2], [3, 3, 3, 3], acc_bits=4)
    strided = _one([2, 2, -2, -2], [3, 3, 3, 3], acc_bits=4, order="strided:2")
    assert (seq.acc[0, 0], seq.stats.overflow_count, seq.stats.max_abs_prefix) == (-5, 1, 12)
    assert (strided.acc[0, 0], strided.stats.overflow_count, strided.stats.max_abs_prefix) == (0, 0, 6)
    assert_same(_one([2, 2, -2, -2], [3, 3, 3, 3], acc_bits=4, order="strided:4"), seq)


def test_tree_order_adds_pairs_then_the_bias():
    """Products 5, 5, -5, -5 (x = 5, 5, -5, -5 in Q4.1, w = 1: raw 5 at FL 2), BW_acc = 4 clip,
    bias 3. Tree: 5 + 5 = 10 -> 7, -5 - 5 = -10 -> -8 (2 overflows), 7 - 8 = -1, + 3 = 2;
    nodes' exact values 10, -10, 0, 3: max_abs_prefix 10. Sequential: 3, 8 -> 7, 12 -> 7,
    2, -3 (2 overflows), prefixes up to 13. K = 3 carries the odd leaf: (5 + 5) -> 7, 7 - 5
    = 2, + 3 = 5."""
    args = ([5, 5, -5, -5], [1, 1, 1, 1], np.array([3]))
    tree = _one(*args, acc_bits=4, order="tree", fmt_x="Q4.1")
    seq = _one(*args, acc_bits=4, fmt_x="Q4.1")
    assert (tree.acc[0, 0], tree.stats.overflow_count, tree.stats.max_abs_prefix) == (2, 2, 10)
    assert (seq.acc[0, 0], seq.stats.overflow_count, seq.stats.max_abs_prefix) == (-3, 2, 13)
    assert tree.stats.additions == seq.stats.additions == 4
    odd = _one([5, 5, -5], [1, 1, 1], np.array([3]), acc_bits=4, order="tree", fmt_x="Q4.1")
    assert (odd.acc[0, 0], odd.stats.overflow_count) == (5, 1)


def test_output_overflow_wraps_the_requantized_value():
    """acc 200 (FL 2) -> Q8.0 is 50 (shift 2) in range; acc 800 -> 200: clip 127, wrap
    200 - 256 = -56; with ReLU after the wrap: 0. Unsigned UQ8.0: 300 -> wrap 44."""
    fmt = dict(fmt_y="Q8.0", acc_bits=16)
    assert _one([1], [1], np.array([799]), **fmt).y[0, 0] == 127  # 800 / 4 = 200 -> 127
    assert _one([1], [1], np.array([799]), output_overflow="wrap", **fmt).y[0, 0] == -56
    cfg = LayerConfig("hand", "Q2.1", "Q2.1", "Q8.0", acc_bits=16, output_overflow="wrap", rounding="floor")
    relu = dp.dense(np.array([[1]]), np.array([[1]]), np.array([799]), cfg, activation="relu")
    assert relu.y[0, 0] == 0
    u = _one([1], [1], np.array([1199]), fmt_y="UQ8.0", output_overflow="wrap", acc_bits=16)
    assert u.y[0, 0] == 300 - 256


def test_fmt_bias_is_quantized_in_its_format_then_converted():
    """Bias 0.3 in Q4.2: 0.3 * 4 = 1.2 -> 1 (nearest-even); into the accumulator's FL_acc = 6
    that is 1 << 4 = 16. In the default (accumulator) format Q10.6: 0.3 * 64 = 19.2 -> 19 and
    9.0 -> 576. 9.0 saturates in Q4.2 (max 31 = 7.75) -> 31 << 4 = 496. In Q8.0, 0.3 -> 0 and
    9 -> 9 << 6 = 576, which saturates in a 10-bit accumulator with FL 6 (max 511)."""
    from fxpsim.network import build_network
    from fxpsim.simulate import Simulator

    net = build_network("fc2", (3,), 2, seed=0)
    layer = next(lay for lay in net.layers if lay.kind == "dense")
    layer.params["b"][...] = [0.3, 9.0]
    sim = Simulator(net)
    cfg = LayerConfig(sim.names[0], "Q1.3", "Q1.3", "Q4.4", acc_bits=16)
    assert sim.quantized_params(0, cfg)[1].tolist() == [19, 576]
    assert sim.quantized_params(0, replace(cfg, fmt_bias="Q4.2"))[1].tolist() == [16, 496]
    narrow = replace(cfg, acc_bits=10, fmt_bias="Q8.0")
    assert sim.quantized_params(0, narrow)[1].tolist() == [0, 511]


# --------------------------------------------------------------------------- the record

KNOB_VALUES = [("frac_acc", 10), ("product", "cast"), ("product_rounding", "nearest"),
               ("order", "strided:4"), ("order", "tree"), ("order", "channels-last:16+strided:4"), ("output_overflow", "wrap"), ("fmt_bias", "Q6.10")]
BASE = dict(fmt_w="Q1.7", fmt_x="Q2.6", fmt_y="Q3.5", acc_bits=20)


@pytest.mark.parametrize("key, value", KNOB_VALUES)
def test_each_knob_round_trips_through_json_and_only_when_set(key, value, tmp_path):
    cfg = LayerConfig("fc1", **BASE, **{key: value})
    d = cfg.to_dict()
    assert d[key] == value and set(d) - set(LayerConfig("fc1", **BASE).to_dict()) == {key}
    net = NetworkConfig((cfg, LayerConfig("fc2", **BASE)))
    back = NetworkConfig.load(net.save(tmp_path / "c.json"))
    assert back == net and back[0].to_dict() == d and back.to_json() == net.to_json()


def test_defaults_are_omitted_and_follow_the_formats():
    """Knobs at their defaults write nothing (configs of before stay byte-identical, also when
    a default is given explicitly); left at its default, FL_acc and the bias format follow
    ``replace``; set explicitly, they stay."""
    plain = LayerConfig("fc1", **BASE)
    assert list(plain.to_dict()) == ["name", "fmt_w", "fmt_x", "fmt_y", "acc_bits", "overflow", "rounding", "a2q"]
    explicit = LayerConfig("fc1", **BASE, frac_acc=13, product="exact", product_rounding="floor",
                           order="sequential", output_overflow="clip", fmt_bias="Q7.13")
    assert explicit == plain and hash(explicit) == hash(plain) and explicit.to_dict() == plain.to_dict()
    assert (plain.frac_acc, plain.fmt_bias, plain.fmt_bias_acc) == (13, QFormat(7, 13), QFormat(7, 13))
    moved = replace(plain, fmt_w="Q1.9", acc_bits=24)
    assert (moved.frac_acc, moved.fmt_bias, moved.knobs) == (15, QFormat(9, 15), {})
    assert replace(plain, overflow="ideal").fmt_bias == QFormat(MAX_WIDTH - 13, 13)
    fixed = replace(LayerConfig("fc1", **BASE, frac_acc=10, fmt_bias="Q4.4"), fmt_w="Q1.9")
    assert (fixed.frac_acc, fixed.fmt_bias, fixed.product_shift) == (10, QFormat(4, 4), -5)
    assert set(KNOBS) == {"frac_acc", "product", "product_rounding", "order", "output_overflow", "fmt_bias"}
    assert (plain.reuse_factor, replace(plain, order="strided:3").reuse_factor,
            replace(plain, order="tree").reuse_factor) == (1, 3, None)


@pytest.mark.parametrize("change, message", [
    ({"frac_acc": "10"}, "frac_acc='10' is not a whole number"),
    ({"frac_acc": 10.0}, "frac_acc=10.0 is not a whole number"),
    ({"frac_acc": True}, "frac_acc=True is not a whole number"),
    ({"frac_acc": 99}, "frac_acc=99 shifts each 16-bit product 86 bits left"),
    ({"frac_acc": -60}, "frac_acc=-60 drops 73 fraction bits"),
    ({"product": "round"}, "product='round' is not one of exact, cast"),
    ({"product": 1}, "product=1 is not a string"),
    ({"product_rounding": "stochastic"}, "product_rounding='stochastic' is not supported"),
    ({"product_rounding": "up"}, "product_rounding: unknown rounding mode 'up'"),
    ({"order": "strided:0"}, "order: 'strided:0' is not an accumulation order"),
    ({"order": "strided:04"}, "order: 'strided:04' is not an accumulation order"),
    ({"order": "strided"}, "order: 'strided' is not an accumulation order"),
    ({"order": "channels-last"}, "order: 'channels-last' is not an accumulation order"),
    ({"order": "channels-last:0"}, "order: 'channels-last:0' is not an accumulation order"),
    ({"order": "channels-last:4+strided:0"}, "order: 'channels-last:4\\+strided:0' is not an accumulation"),
    ({"order": ["tree"]}, r"order=\['tree'\] is not a string"),
    ({"output_overflow": "ideal"}, "output_overflow: unknown overflow mode 'ideal'"),
    ({"fmt_bias": "Q4"}, "fmt_bias: bad format 'Q4'"),
    ({"fmt_bias": 8}, "fmt_bias=8 is not a string"),
    ({"fmt_bias": None}, "fmt_bias=None is not a string"),
    ({"knob": 1}, "unknown key"),
])
def test_from_dict_reads_the_knobs_strictly(change, message):
    d = {"name": "fc1", **BASE, **change}
    with pytest.raises(FxpsimError, match=message) as exc:
        LayerConfig.from_dict(d)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(("layer 'fc1'", "layer fc1"))
    text = json.dumps({"format": "fxpsim-config", "version": 1, "layers": [d]})
    with pytest.raises(FxpsimError, match=message):
        NetworkConfig.from_json(text)


# --------------------------------------------------------------------------- engines

def _sparse_call(cfg, x, w, b=None):
    enc = encode(eie_matrix(w), 2, 4)
    return eie_dense(x, column_schedule(enc), b, cfg)


@pytest.mark.parametrize("knob, value", [("frac_acc", 10), ("product", "cast"), ("order", "strided:2"),
                                         ("order", "tree"), ("order", "channels-last:3"),
                                         ("product_rounding", "nearest")])
def test_sparse_and_bitserial_refuse_the_knobs_they_cannot_run(knob, value):
    """One line naming the layer, the knob and the engine, pointing at dense (product_rounding
    only matters, so is only refused, when FL_acc < FL_w + FL_x)."""
    extra = {"frac_acc": 10} if knob == "product_rounding" else {}
    cfg = LayerConfig("fc1", **BASE, **{knob: value, **extra})
    shown = "frac_acc=10" if extra else f"{knob}={value!r}"
    x, w = np.zeros((2, 3), np.int64), np.ones((3, 2), np.int64)
    for name, call in (("sparse", lambda: _sparse_call(cfg, x, w)),
                       ("bitserial", lambda: bit_serial_dense(x, w, None, cfg)),
                       ("bitserial", lambda: bit_serial_conv2d(x.reshape(2, 3, 1, 1), w.T.reshape(2, 3, 1, 1),
                                                               None, cfg)),
                       ("sparse", lambda: ENGINES["sparse"].prepare(None, w, cfg))):
        with pytest.raises(FxpsimError) as exc:
            call()
        text = str(exc.value)
        assert text.startswith(f"layer fc1: engine {name} does not run {shown}") and "engine dense" in text
        assert "\n" not in text
    ENGINES["dense"].check_knobs(cfg)  # dense runs them all
    if not extra:
        ENGINES["sparse"].check_knobs(LayerConfig("fc1", **BASE, product_rounding="nearest"))


def test_sparse_and_bitserial_run_output_wrap_and_fmt_bias_like_dense():
    rng = np.random.default_rng(1)
    cfg = LayerConfig("fc1", fmt_w="Q1.3", fmt_x="UQ1.3", fmt_y="Q2.1", acc_bits=12, overflow="wrap",
                      output_overflow="wrap", fmt_bias="Q4.2")
    x = rng.integers(0, 16, (5, 7))
    w = rng.integers(-8, 8, (7, 4))
    b = rng.integers(-2000, 2000, 4)
    want = dp.dense(x, w, b, cfg)
    assert np.any(want.y != dp.dense(x, w, b, replace(cfg, output_overflow="clip")).y)
    got = _sparse_call(cfg, x, w, b)
    np.testing.assert_array_equal(got.y, want.y)
    np.testing.assert_array_equal(bit_serial_dense(x, w, b, cfg).y, want.y)


def test_a_network_with_knobs_on_every_layer_equals_the_twin_and_sparse_refuses_it():
    """A conv + dense network, each layer with FL_acc below FL_w + FL_x, casts, strided or tree
    order, wrapping outputs and its own bias format: the Simulator on the dense engine == on the
    Python-int twin (logits and per-layer stats); the sparse engine refuses it in one line."""
    from fxpsim.kernels import reference
    from fxpsim.network import build_network
    from fxpsim.simulate import Simulator, config_from_profile, profile

    net = build_network("conv3x3p1-relu-maxpool2-fc12-relu-fc10", (1, 6, 6), 10, seed=4)
    x = np.random.default_rng(2).normal(0, 1, (3, 1, 6, 6))
    sim = Simulator(net)
    base = config_from_profile(profile(sim, x), weight_bits=6, data_bits=6, acc_bits=10, overflow="clip")
    knobs = [dict(order="tree", product="cast", fmt_bias="Q3.3"),
             dict(order="strided:5", output_overflow="wrap"),
             dict(order="tree", output_overflow="wrap", fmt_bias="Q2.8")]
    layers = []
    for cfg, kn in zip(base, knobs):
        fl_p = cfg.fmt_w.frac_bits + cfg.fmt_x.frac_bits
        layers.append(replace(cfg, frac_acc=fl_p - 2, product_rounding="nearest", **kn))
    config = NetworkConfig(tuple(layers))
    fast = sim.simulate(x, config)
    slow = Simulator(net, backend=reference).simulate(x, config)
    np.testing.assert_array_equal(fast.logits, slow.logits)
    assert fast.layer_stats == slow.layer_stats
    with pytest.raises(FxpsimError, match=r"^layer conv1: engine sparse does not run frac_acc="):
        sim.simulate(x, config.with_engine("sparse"))


def test_layer_stats_sum_cast_overflows_and_tables_show_knobs_only_when_set():
    """``LayerStats.cast_overflows`` is the engine's count summed over batches (and kept out of
    overflow_count); ``stats_table()`` and ``NetworkConfig.table()`` gain a column only when some
    layer has a cast overflow / sets a knob, so tables of default configs keep their columns."""
    from fxpsim.network import build_network
    from fxpsim.simulate import Simulator, config_from_profile, convert_raw, profile
    from fxpsim.qformat import quantize

    net = build_network("fc12-relu-fc10", (6,), 10, seed=3)
    x = np.random.default_rng(5).normal(0, 2, (40, 6))
    sim = Simulator(net)
    base = config_from_profile(profile(sim, x), weight_bits=8, data_bits=8, acc_bits=12, overflow="clip")
    cast = base.with_all(product="cast", acc_bits=9)
    res = sim.simulate(x, cast, batch_size=7)
    h, want = quantize(sim.prepare(x), cast[0].fmt_x, cast[0].rounding, "clip", sim.seed), []
    for i, c in enumerate(cast):  # the stages one by one, one batch
        if i:
            h = convert_raw(h, cast[i - 1].fmt_y, c.fmt_x, c.rounding, sim.seed)
        _, h, stats = sim.run_stage(i, h, c)
        want.append(int(stats.cast_overflows))
    assert [s.cast_overflows for s in res.layer_stats] == want and sum(want) > 0
    assert "cast_overflows" in res.stats_table().columns
    plain = sim.simulate(x, base)
    assert all(s.cast_overflows == 0 for s in plain.layer_stats)
    assert "cast_overflows" not in plain.stats_table().columns
    assert list(base.table().columns) == ["layer", "weights", "bw_w", "data_in", "bw_x", "data_out", "acc_bits",
                                          "overflow", "rounding", "a2q"]
    knobs = base.with_layer(1, order="strided:3", frac_acc=base[1].frac_acc - 2)
    table = knobs.table()
    assert list(table.columns[-2:]) == ["frac_acc", "order"]
    assert table["order"].tolist() == ["sequential", "strided:3"]
    assert table["frac_acc"].tolist() == [base[0].frac_acc, base[1].frac_acc - 2]
