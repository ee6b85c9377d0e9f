"""The dense engine: kernels == reference twin, fast paths == sequential kernel.

Three kinds (STYLE.md): kernel == plain-Python reference on random formats
and shapes (hypothesis), fast path == per-step kernel, and edge cases with
hand-computed results. The shared checks and requantization: test_core.py.
"""

import numpy as np
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from fxpsim.datapath import core
from fxpsim.datapath import dense as dp
from fxpsim.datapath import reference as ref
from fxpsim.datapath.dense import conv2d, dense
from fxpsim.qformat import Overflow, QFormat
from strategies import big_conv_case_st, big_dense_case_st, conv_case_st, dense_case_st, rail_dense_case_st


def assert_same(a, b):
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.acc, b.acc)
    assert a.y.dtype == b.y.dtype == np.int64 and a.acc.dtype == np.int64
    assert a.stats == b.stats


CFG_KEYS = ("fmt_x", "fmt_w", "fmt_y", "acc_bits", "overflow", "rounding")


def validate(x, w, b, kwargs, conv=False):
    """The shared validation (core, not arithmetic) of dense/conv2d keyword arguments:
    ``(x, w, bias, cfg, activation, seed)``."""
    cfg = core.layer_config(**{k: v for k, v in kwargs.items() if k in CFG_KEYS})
    activation = kwargs.get("activation", "none")
    seed = core.check_requantize_args(cfg, activation, kwargs.get("seed"))
    return (*core.check_operands(x, w, b, cfg, conv=conv), cfg, activation, seed)


def both_paths(x, w, b, kwargs):
    """(fast path, every output through the per-step kernel) accumulators and stats."""
    x, w, bias, cfg, _, _ = validate(x, w, b, kwargs)
    prefix = kwargs.get("prefix_stats", False)
    return (dp._accumulate(x, w, bias, cfg, prefix_stats=prefix),
            dp._accumulate(x, w, bias, cfg, force_sequential=True, prefix_stats=prefix))


def zero_skipping_dense(x, w, b, kwargs):
    """The reference twin over each row's non-zero inputs only, for calls too big for it.

    A zero product changes no register, no overflow count and no prefix, so
    this equals ``ref.dense`` (``ref._Accumulator`` per output, one addition
    at a time in order k, ``ref``'s requantization and statistics).
    """
    x, w, bias, cfg, activation, seed = validate(x, w, b, kwargs)
    bs = bias.tolist()
    idle = [ref._Accumulator(v, cfg) for v in bs]  # an all-zero row leaves every register at its bias
    accs = []
    for i in range(x.shape[0]):
        steps = [(int(x[i, k]), w[k].tolist()) for k in np.flatnonzero(x[i])]
        if not steps:
            accs.extend(idle)
            continue
        for j in range(w.shape[1]):
            a = ref._Accumulator(bs[j], cfg)
            for xv, wr in steps:
                a.add(xv * wr[j])
            accs.append(a)
    return ref._finish(accs, (x.shape[0], w.shape[1]), x.size * w.shape[1], cfg,
                       kwargs.get("prefix_stats", False), activation, seed)


def zero_skipping_conv(x, w, b, kwargs):
    """``ref.conv2d`` over the non-zero input pixels of each window only (as above).

    Taps of one output in (c, ih, iw) order are in (c, i, j) order: i = ih + pad - oh * stride.
    """
    stride, pad = kwargs["stride"], kwargs["padding"]
    x, w, bias, cfg, activation, seed = validate(x, w, b, kwargs, conv=True)
    oh_, ow_ = core.conv_geometry(x.shape, w.shape, stride, pad)
    bsz, c_, _, _ = x.shape
    f_, _, kh, kw = w.shape
    taps = {}
    for b_, c, ih, iw in zip(*np.nonzero(x)):  # C order: sorted by (b, c, ih, iw)
        for oh in range(oh_):
            i = ih + pad - oh * stride
            for ow in range(ow_):
                j = iw + pad - ow * stride
                if 0 <= i < kh and 0 <= j < kw:
                    taps.setdefault((b_, oh, ow), []).append((c, i, j, int(x[b_, c, ih, iw])))
    ws, bs = w.tolist(), bias.tolist()
    accs = []
    for b_ in range(bsz):
        for f in range(f_):
            for oh in range(oh_):
                for ow in range(ow_):
                    a = ref._Accumulator(bs[f], cfg)
                    for c, i, j, v in taps.get((b_, oh, ow), ()):
                        a.add(v * ws[f][c][i][j])
                    accs.append(a)
    return ref._finish(accs, (bsz, f_, oh_, ow_), bsz * f_ * oh_ * ow_ * c_ * kh * kw, cfg,
                       kwargs.get("prefix_stats", False), activation, seed)


# ----------------------------------------------------------------- kernel == reference

@given(dense_case_st(), st.booleans())
def test_dense_matches_reference(case, prefix_stats):
    x, w, b, kwargs = case
    kwargs = dict(kwargs, prefix_stats=prefix_stats)
    before = [np.copy(a) for a in (x, w, b) if a is not None]
    assert_same(dense(x, w, b, **kwargs), ref.dense(x, w, b, **kwargs))
    for a, a0 in zip([a for a in (x, w, b) if a is not None], before):
        np.testing.assert_array_equal(a, a0)  # operands are never modified


@given(conv_case_st(), st.booleans())
def test_conv2d_matches_reference(case, prefix_stats):
    x, w, b, kwargs = case
    kwargs = dict(kwargs, prefix_stats=prefix_stats)
    assert_same(conv2d(x, w, b, **kwargs), ref.conv2d(x, w, b, **kwargs))


@settings(max_examples=60)
@given(dense_case_st(max_batch=700, max_k=300, max_n=8))
def test_fast_path_equals_sequential_kernel(case):
    x, w, b, kwargs = case
    if kwargs["overflow"] == "ideal":
        kwargs["overflow"] = "clip"
    small, dp._SMALL_SEQUENTIAL = dp._SMALL_SEQUENTIAL, 0  # exact checks on tiny cases too
    try:
        (acc_f, st_f), (acc_s, st_s) = both_paths(x, w, b, kwargs)
    finally:
        dp._SMALL_SEQUENTIAL = small
    np.testing.assert_array_equal(acc_f, acc_s)
    assert st_f == st_s


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
@pytest.mark.parametrize("wx,ww,acc_bits", [(31, 31, 62), (30, 28, 40), (26, 26, 62), (20, 12, 33)])
def test_wide_operands_match_reference(wx, ww, acc_bits, overflow):
    """Products up to 62 bits: int64 matmul and Python-int sums beyond int64 stay exact."""
    rng = np.random.default_rng(wx * 100 + ww)
    fx, fw = QFormat(wx, 0), QFormat(ww, 0)
    x = rng.integers(fx.raw_min, fx.raw_max, (3, 9), endpoint=True)
    w = rng.integers(fw.raw_min, fw.raw_max, (9, 4), endpoint=True)
    x[0] = fx.raw_min
    w[:, 0] = fw.raw_min
    kwargs = dict(fmt_x=fx, fmt_w=fw, fmt_y=QFormat(20, 0), acc_bits=acc_bits, overflow=overflow,
                  prefix_stats=True)  # prefixes beyond int64 (31 x 31): Python ints
    res = dense(x, w, None, **kwargs)
    assert_same(res, ref.dense(x, w, None, **kwargs))
    (acc_f, st_f), (acc_s, st_s) = both_paths(x, w, None, kwargs)
    np.testing.assert_array_equal(acc_f, acc_s)
    assert st_f == st_s


@pytest.mark.parametrize("bound", [10.0, 2.0**30, 2.0**60, 2.0**70])
def test_exact_matmul_every_branch(bound):
    rng = np.random.default_rng(1)
    x = rng.integers(-100, 100, (5, 7))
    w = rng.integers(-100, 100, (7, 3))
    got = dp._exact_matmul(x, w, bound)
    np.testing.assert_array_equal(got.astype(np.int64), x @ w)


# ----------------------------------------------------------------- fast path internals

def test_only_risky_outputs_go_sequential(monkeypatch):
    """Columns with large weights are risky; the rest take the exact BLAS sum."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 128, (600, 200))
    w = rng.integers(-4, 5, (200, 12))
    w[:, [3, 7]] = rng.integers(-128, 128, (200, 2))
    seen = []
    real = dp._sequential
    monkeypatch.setattr(dp, "_sequential",
                        lambda x_, w_, *a, **kw: seen.append(w_.shape) or real(x_, w_, *a, **kw))
    kwargs = dict(fmt_x=QFormat(8, 0), fmt_w=QFormat(8, 0), fmt_y=QFormat(16, 0),
                  acc_bits=18, overflow="clip")
    res = dense(x, w, None, **kwargs)
    assert seen == [(200, 2)]
    assert res.stats.outputs_affected > 0
    (acc_f, st_f), (acc_s, st_s) = both_paths(x, w, None, kwargs)
    np.testing.assert_array_equal(acc_f, acc_s)
    assert st_f == st_s == res.stats


def test_hopeless_exact_check_is_skipped_and_still_exact(monkeypatch):
    """PERF-NOTES: at BW_acc 16 every output is at risk; the sample says so."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 128, (1100, 300))
    w = rng.integers(-128, 128, (300, 8))
    assert x.shape[0] > 2 * dp._SAMPLE_ROWS
    calls, chose = [], []
    real = dp._provably_safe
    monkeypatch.setattr(dp, "_provably_safe",
                        lambda *a: calls.append(a[0].shape[0]) or real(*a))
    real_pays = dp._all_sequential_pays
    monkeypatch.setattr(dp, "_all_sequential_pays",
                        lambda *a, **kw: chose.append(real_pays(*a, **kw)) or chose[-1])
    kwargs = dict(fmt_x=QFormat(8, 0), fmt_w=QFormat(8, 0), fmt_y=QFormat(16, 0), acc_bits=16)
    for overflow in ("wrap", "clip"):
        (acc_f, st_f), (acc_s, st_s) = both_paths(x, w, None, dict(kwargs, overflow=overflow))
        np.testing.assert_array_equal(acc_f, acc_s)
        assert st_f == st_s and st_f.outputs_affected > 0
    assert chose and all(chose)  # the sample chose the all-sequential path
    # most sampled sums end out of range: the check is skipped even on the sample
    assert all(n == dp._SAMPLE_ROWS for n in calls)


def test_lane_plans():
    assert dp.lane_plan(16, 128, 127) == (np.int16, 16, False)
    assert dp.lane_plan(12, 64, 31) == (np.int16, 16, False)
    assert dp.lane_plan(12, 0, 5000) == (np.int16, 16, True)  # x all zero
    assert dp.lane_plan(20, 1, 1) == (np.int32, 32, False)
    assert dp.lane_plan(40, 1, 1) == (np.int64, 64, False)
    assert dp.lane_plan(8, 16, 16) is None  # product wider than the accumulator


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
@pytest.mark.parametrize("acc_bits,scale", [(6, 5), (9, 15), (16, 127), (20, 1000), (33, 2**15), (45, 2**21)])
def test_every_lane_kernel_matches_int64_kernel(acc_bits, scale, overflow, monkeypatch):
    """Shifted int16/int32/int64 lanes == the plain int64 per-step kernel."""
    rng = np.random.default_rng(acc_bits)
    x = rng.integers(-scale, scale, (9, 70), endpoint=True)
    w = rng.integers(-scale, scale, (70, 21), endpoint=True)
    half = 1 << (acc_bits - 1)
    b = rng.integers(-half, half, 21)
    fmt = QFormat(int(scale).bit_length() + 1, 0)
    kwargs = dict(fmt_x=fmt, fmt_w=fmt, fmt_y=QFormat(30, 0), acc_bits=acc_bits, overflow=overflow)
    lane = both_paths(x, w, b, kwargs)[1]
    monkeypatch.setattr(dp, "lane_plan", lambda *a: None)
    plain = both_paths(x, w, b, kwargs)[1]
    np.testing.assert_array_equal(lane[0], plain[0])
    assert lane[1] == plain[1] and lane[1].overflow_count > 0


# ----------------------------------------------------------------- edges, hand-computed

Q8 = QFormat(8, 0)


def run_both(x, w, b=None, **kwargs):
    kwargs.setdefault("fmt_y", QFormat(20, 0))
    res = dense(np.array(x), np.array(w), b, **kwargs)
    assert_same(res, ref.dense(np.array(x), np.array(w), b, **kwargs))
    return res


def test_most_negative_operands():
    x, w = [[-128, -128, -128]], [[-128], [-128], [-128]]  # products 16384 each
    clip = run_both(x, w, fmt_x=Q8, fmt_w=Q8, acc_bits=16, overflow="clip")
    assert clip.acc.tolist() == [[32767]] and clip.stats.overflow_count == 2
    wrap = run_both(x, w, fmt_x=Q8, fmt_w=Q8, acc_bits=16, overflow="wrap")
    assert wrap.acc.tolist() == [[-16384]] and wrap.stats.overflow_count == 1
    ideal = run_both(x, w, fmt_x=Q8, fmt_w=Q8, acc_bits=16, overflow="ideal")
    assert ideal.acc.tolist() == [[49152]] and ideal.stats.max_abs_acc == 49152
    assert ideal.stats.overflow_count == 0 and ideal.stats.additions == 3


@pytest.mark.parametrize("sign", [1, -1])
def test_accumulator_filled_to_the_rail_then_one_more(sign):
    w = [[100 * sign], [27 * sign], [sign]]
    rail = 127 if sign > 0 else -128
    w_exact = [[100 * sign], [(27 if sign > 0 else 28) * sign]]
    full = run_both([[1, 1]], w_exact, fmt_x=Q8, fmt_w=Q8, acc_bits=8, overflow="clip")
    assert full.acc.tolist() == [[rail]] and full.stats.overflow_count == 0
    if sign < 0:
        w = [[-100], [-28], [-1]]
    clip = run_both([[1, 1, 1]], w, fmt_x=Q8, fmt_w=Q8, acc_bits=8, overflow="clip")
    assert clip.acc.tolist() == [[rail]] and clip.stats.overflow_count == 1
    wrap = run_both([[1, 1, 1]], w, fmt_x=Q8, fmt_w=Q8, acc_bits=8, overflow="wrap")
    assert wrap.acc.tolist() == [[-rail - 1]] and wrap.stats.overflow_count == 1
    assert wrap.stats.outputs_affected == clip.stats.outputs_affected == 1


@pytest.mark.parametrize("overflow", ["wrap", "clip", "ideal"])
@pytest.mark.parametrize("fx,fw,acc_bits", [(QFormat(1, 0), QFormat(1, 0), 1),
                                            (QFormat(1, 0, False), QFormat(2, 0), 2),
                                            (QFormat(2, 0), QFormat(2, -1), 2)])
def test_width_one_and_two(fx, fw, acc_bits, overflow):
    rng = np.random.default_rng(acc_bits)
    x = rng.integers(fx.raw_min, fx.raw_max, (5, 6), endpoint=True)
    w = rng.integers(fw.raw_min, fw.raw_max, (6, 3), endpoint=True)
    run_both(x, w, fmt_x=fx, fmt_w=fw, fmt_y=QFormat(2, 0), acc_bits=acc_bits, overflow=overflow)


def test_k_one_and_all_zero_input():
    b = np.array([5, -7, 300])
    res = run_both(np.zeros((4, 1), dtype=np.int64), [[3, -2, 1]], b,
                   fmt_x=Q8, fmt_w=Q8, fmt_y=QFormat(8, -2), acc_bits=10, overflow="clip",
                   rounding="nearest", activation="relu")
    np.testing.assert_array_equal(res.acc, np.tile(b, (4, 1)))
    np.testing.assert_array_equal(res.y, np.tile([1, 0, 31], (4, 1)))  # round(5/4)=1, relu(-2)=0, 75 clips to 31
    assert res.stats == core.OverflowStats(12, 0, 0, 300)


def test_conv_padding_taps_count_as_additions():
    x = np.ones((1, 2, 3, 3), dtype=np.int64)
    w = np.ones((1, 2, 3, 3), dtype=np.int64)
    kw = dict(stride=1, padding=1, fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=8, overflow="clip")
    res = conv2d(x, w, None, **kw)
    assert_same(res, ref.conv2d(x, w, None, **kw))
    np.testing.assert_array_equal(res.acc[0, 0], 2 * np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]))
    assert res.stats.additions == 9 * 18


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
def test_lane_counts_flush_beyond_the_lane_range(overflow):
    """K > 2**15 with int16 lanes: per-lane counts are flushed before they could wrap."""
    rng = np.random.default_rng(4)
    k = 40000
    x = rng.integers(0, 128, (2, k))
    w = rng.integers(-128, 128, (k, 3))
    w[:, 0] = 127  # column 0 saturates (clip) or wraps (wrap) at nearly every step
    x[1, ::7] = 0
    kwargs = dict(fmt_x=QFormat(8, 0), fmt_w=QFormat(8, 0), fmt_y=QFormat(16, 0), acc_bits=16,
                  overflow=overflow)
    res = dense(x, w, None, **kwargs)
    assert_same(res, ref.dense(x, w, None, **kwargs))
    if overflow == "clip":
        assert res.stats.overflow_count > (1 << 15)  # more than one int16 lane can count
    else:
        assert res.stats.max_abs_acc > (1 << 20)  # exact sums rebuilt from the net wraps


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
@pytest.mark.parametrize("acc_bits,wx", [(33, 8), (40, 8), (48, 16), (40, 24)])
def test_int64_lanes_near_the_rail_match_reference(acc_bits, wx, overflow):
    """BW_acc > 32: int64 lanes, with int32 operands (one vpmuldq) where they fit."""
    rng = np.random.default_rng(acc_bits + wx)
    fx = QFormat(wx, 0)
    x = rng.integers(0, fx.raw_max, (9, 50), endpoint=True)
    x[0] = fx.raw_max
    x[1] = 0
    w = rng.integers(-128, 128, (50, 5))
    w[:, 0] = 127
    w[:, 1] = -128
    rail = (1 << (acc_bits - 1)) - (1 << 12)
    b = np.array([rail, -rail, rail, 0, -rail])
    kwargs = dict(fmt_x=fx, fmt_w=QFormat(8, 0), fmt_y=QFormat(16, 0), acc_bits=acc_bits,
                  overflow=overflow)
    res = dense(x, w, b, **kwargs)
    assert res.stats.outputs_affected > 0
    assert_same(res, ref.dense(x, w, b, **kwargs))
    (acc_f, st_f), (acc_s, st_s) = both_paths(x, w, b, kwargs)
    np.testing.assert_array_equal(acc_f, acc_s)
    assert st_f == st_s


@pytest.mark.parametrize("acc_bits", [17, 24, 31])
def test_int32_headroom_clamp_edges_match_reference(acc_bits, monkeypatch):
    """Clip in int32 lanes with headroom (unshifted, clamped): rails, most-negative, full."""
    hi = (1 << (acc_bits - 1)) - 1
    wx = min(15, acc_bits // 2)  # products (2**(wx-1))**2 stay inside the accumulator range
    fx = QFormat(wx, 0)
    x = np.array([[fx.raw_min] * 6, [fx.raw_max] * 6, [fx.raw_min, 0, fx.raw_min, 1, 0, -1],
                  [1, 0, 0, 0, 0, 0]])
    w = np.array([[fx.raw_min, fx.raw_max, 1, -1, 0]] * 6)
    b = np.array([hi, -hi - 1, hi - 1, -hi, 0])  # at the rails, one step from them, zero
    kwargs = dict(fmt_x=fx, fmt_w=fx, fmt_y=QFormat(32, 0), acc_bits=acc_bits, overflow="clip")
    assert dp.lane_plan(acc_bits, -fx.raw_min, -fx.raw_min)[1] == 32
    seen = []
    real = dp.jit._dense_sat_lane_kernel
    monkeypatch.setattr(dp.jit, "_dense_sat_lane_kernel",
                        lambda *a: seen.append(a[5]) or real(*a))
    res = dense(x, w, b, **kwargs)
    assert seen and seen[0] == (-hi - 1, hi)  # the clamp path ran
    assert_same(res, ref.dense(x, w, b, **kwargs))
    assert res.stats.overflow_count > 0 and res.acc.max() == hi and res.acc.min() == -hi - 1
    monkeypatch.setattr(dp, "lane_plan", lambda *a: None)
    assert_same(dense(x, w, b, **kwargs), res)


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32])
def test_narrow_operand_arrays_run_uncopied_and_agree(dtype, overflow):
    """int8/int16 inputs go to the lane kernels as they are: same bits as int64 inputs."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (300, 33)) * (rng.random((300, 33)) < 0.6)
    w = rng.integers(-128, 128, (33, 17))
    kwargs = dict(fmt_x=QFormat(8, 0), fmt_w=QFormat(8, 0), fmt_y=QFormat(16, 0), acc_bits=16,
                  overflow=overflow)
    wide = dense(x, w, None, **kwargs)
    assert wide.stats.overflow_count > 0
    assert_same(dense(x.astype(dtype), w.astype(dtype), None, **kwargs), wide)
    assert_same(wide, ref.dense(x, w, None, **kwargs))


# ----------------------------------------------------------------- issue 13: exactness of the fast paths

@pytest.mark.parametrize("overflow,acc,count", [("clip", 2**61 - 2, 1), ("wrap", 2**61 - 1, 2)])
def test_exact_check_adds_the_bias_in_int64_not_float64(overflow, acc, count, monkeypatch):
    """Issue 13: bias 2**61 - 3 plus the positive products (3) is 2**61 > acc_max, but
    float64 rounds 2**61 - 1 to 2**61 too, so the exact check judged the output safe
    (clip gave 2**61 - 1, 0 overflows; ap_fixed<62,62,AP_TRN,AP_SAT> gives 2**61 - 2, 1)."""
    k = 1 << 18  # >= 2**18 MACs: the fast path's exact check runs (one row: no sample)
    x = np.zeros((1, k), dtype=np.int8)
    x[0, :2] = [3, -1]
    w = np.ones((k, 1), dtype=np.int8)
    b = np.array([2**61 - 3])
    checked = []
    real = dp._provably_safe
    monkeypatch.setattr(dp, "_provably_safe", lambda *a: checked.append(real(*a)) or checked[-1])
    kwargs = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=QFormat(62, 0), acc_bits=62, overflow=overflow,
                  prefix_stats=True)
    res = dense(x, w, b, **kwargs)
    assert len(checked) == 1 and not checked[0].any()  # checked, and not judged safe
    assert res.acc.tolist() == [[acc]]
    # prefixes 2**61 - 3, 2**61, 2**61 - 1 (then zeros): the exact register must hold 2**61
    assert res.stats == core.OverflowStats(k, count, 1, 2**61 - 1, 2**61)
    assert_same(res, zero_skipping_dense(x, w, b, kwargs))


def test_room_to_the_rails_rounds_down_exactly():
    """The room min(hi - b, b - lo) as a double is the largest double <= it: rounded to
    nearest (above 2**53 it can round UP) a bound equal to the rounded room passed as safe."""
    lo, hi = -(1 << 61), (1 << 61) - 1
    rooms = [0, 1, 2**53 - 1, 2**53, 2**53 + 1, 2**53 + 3, 2**54 - 1, 2**60 + 129, 2**61 - 1]
    got = dp._room(np.array([lo + r for r in rooms], dtype=np.int64), lo, hi)
    for r, f in zip(rooms, got.tolist()):
        assert f <= r < float(np.nextafter(f, np.inf)), (r, f)  # Python compares float and int exactly
    assert float(2**53 + 3) > 2**53 + 3  # what a plain astype(float64) did


def test_max_abs_prefix_is_the_largest_exact_prefix_bias_first():
    """DESIGN.md: max over outputs and every prefix of the exact running sum, bias first."""
    # prefixes 5, 15, -15, -14: the largest |prefix| is not the final one
    res = run_both([[1, 1, 1]], [[10], [-30], [1]], np.array([5]), fmt_x=Q8, fmt_w=Q8,
                   acc_bits=8, overflow="clip", prefix_stats=True)
    assert res.stats.max_abs_acc == 14 and res.stats.max_abs_prefix == 15
    # the bias alone is the first prefix (the zero input adds nothing)
    res = run_both([[0, 1, 1]], [[1], [100], [-90]], np.array([-120]), fmt_x=Q8, fmt_w=Q8,
                   acc_bits=8, overflow="clip", prefix_stats=True)
    assert res.stats.max_abs_prefix == 120 and res.stats.max_abs_acc == 110
    # the exact prefix, not the clipped register (127)
    res = run_both([[1, 1]], [[100], [100]], np.array([0]), fmt_x=Q8, fmt_w=Q8, acc_bits=8,
                   overflow="clip", prefix_stats=True)
    assert res.acc.tolist() == [[127]] and res.stats.max_abs_prefix == res.stats.max_abs_acc == 200
    assert run_both([[1]], [[1]], fmt_x=Q8, fmt_w=Q8, acc_bits=8).stats.max_abs_prefix is None
    empty = dense(np.zeros((0, 3), dtype=np.int64), np.ones((3, 2), dtype=np.int64), None,
                  fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=8, prefix_stats=True)
    assert empty.stats.max_abs_prefix == 0  # no outputs


def test_conv_prefix_follows_channel_row_column_order():
    """Two taps of +100 then one of -100 in (c, i, j) order: prefix 200 (any other order
    with the -100 first or second would peak at 100)."""
    x = np.ones((1, 2, 1, 2), dtype=np.int64)
    w = np.array([[[[100, 100]], [[-100, 0]]]])  # c0: (j0, j1) = +100, +100; c1: -100, 0
    kw = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=8, overflow="clip", prefix_stats=True)
    res = conv2d(x, w, None, **kw)
    assert_same(res, ref.conv2d(x, w, None, **kw))
    assert res.stats.max_abs_prefix == 200 and res.stats.max_abs_acc == 100


class PathLog:
    """Which fast-path pieces ran: spies wrapped (monkeypatch) around the dense engine's internals
    and its Numba kernels, recording a key per call."""

    def __init__(self, monkeypatch):
        self.seen = set()
        self.calls = []  # the (rows, cols) of the _accumulate_impl calls under way
        self.events = []
        m = monkeypatch
        self.spy(m, dp, "_all_sequential_pays", lambda out, x, w, *a, **k: (
            "pays", "sampled" if x.shape[0] > 2 * dp._SAMPLE_ROWS else "<=128 rows"
            if x.size * w.shape[1] >= dp._SMALL_SEQUENTIAL else "tiny", bool(out)))
        self.spy(m, dp, "_provably_safe", lambda out, *a: (
            "exact check", "proves some safe" if out.any() else "proves none safe"))
        self.spy(m, dp, "_provably_safe", lambda out, *a: (
            "exact check", "leaves some at risk" if not out.all() else "leaves none at risk"))
        self.spy(m, dp, "_sequential", lambda out, x, w, *a, **k: (
            "sequential", "all" if (x.shape[0], w.shape[1]) == self.calls[-1] else "subset"))
        self.spy(m, dp, "_exact_matmul", lambda out, *a: ("exact sum", out.dtype.name))
        self.spy(m, dp.jit, "_dense_sat_lane_kernel", lambda out, *a: (
            "clip lanes", a[2].dtype.name, "shifted" if a[5] is None else "clamped"))
        self.spy(m, dp.jit, "_dense_wrap_lane_kernel", lambda out, *a: ("wrap lanes", a[2].dtype.name))
        self.spy(m, dp.jit, "_dense_int64_kernel", lambda out, *a: (
            "int64 kernel", "wrap" if a[5] else "clip"))
        self.spy(m, dp.jit, "_prefix_max_kernel", lambda out, *a: ("prefix", "int64"))
        real_impl, real_prefix = dp._accumulate_impl, dp._max_abs_prefix

        def impl(x, w, bias, cfg, force_sequential=False, plan=None):
            self.calls.append((x.shape[0], w.shape[1]))
            start = len(self.events)
            out = real_impl(x, w, bias, cfg, force_sequential, plan)
            kinds = {e[0] for e in self.events[start:]}
            if cfg.overflow is not Overflow.IDEAL and not kinds & {"pays", "sequential"}:
                self.note(("fast path", "no output at risk"))
            elif "pays" in kinds and "sequential" not in kinds:
                self.note(("fast path", "exact check cleared every output"))
            self.calls.pop()
            return out

        def prefix(*a):
            start = len(self.events)
            out = real_prefix(*a)
            if ("prefix", "int64") not in self.events[start:]:
                self.note(("prefix", "python ints"))
            return out

        m.setattr(dp, "_accumulate_impl", impl)
        m.setattr(dp, "_max_abs_prefix", prefix)

    def note(self, key):
        self.seen.add(key)
        self.events.append(key)

    def spy(self, monkeypatch, owner, name, key):
        real = getattr(owner, name)

        def wrapper(*a, **kw):
            out = real(*a, **kw)
            self.note(key(out, *a, **kw))
            return out

        monkeypatch.setattr(owner, name, wrapper)


BIG_TARGETS = ("int16 lanes", "int32 lanes", "int64 lanes", "wide products", "huge sums")

BIG_DENSE_PATHS = {
    ("pays", "sampled", True), ("pays", "sampled", False), ("pays", "<=128 rows", False),
    ("exact check", "proves some safe"), ("exact check", "leaves some at risk"),
    ("sequential", "all"), ("sequential", "subset"), ("fast path", "no output at risk"),
    ("exact sum", "float32"), ("exact sum", "float64"), ("exact sum", "int64"), ("exact sum", "object"),
    ("clip lanes", "int16", "shifted"), ("clip lanes", "int32", "clamped"),
    ("clip lanes", "int32", "shifted"), ("clip lanes", "int64", "shifted"),
    ("wrap lanes", "int16"), ("wrap lanes", "int32"), ("wrap lanes", "int64"),
    ("int64 kernel", "wrap"), ("int64 kernel", "clip"), ("prefix", "int64"), ("prefix", "python ints"),
}
"""What the big hypothesis cases must reach (each key a branch of dp._accumulate_impl,
its exact check and row sample, a per-step kernel and lane, an exact-sum dtype)."""


def test_big_dense_calls_match_reference_on_every_fast_path(monkeypatch):
    """Calls of >= 2**18 MACs (fewer and more than 128 rows, BW_acc 1..62, rail biases,
    rows ending exactly on a rail, wide products): fast path == the reference twin (over
    non-zero inputs), and together the examples reach every fast path."""
    log = PathLog(monkeypatch)

    def check(case):
        x, w, b, kwargs = case
        assert x.shape[0] * x.shape[1] * w.shape[1] >= dp._SMALL_SEQUENTIAL
        assert_same(dense(x, w, b, **kwargs), zero_skipping_dense(x, w, b, kwargs))

    # a few examples per (target, overflow) cell, each cell its own fixed seed, so every
    # lane meets both modes
    cells = [dict(target=t, overflow=o) for t in BIG_TARGETS for o in ("wrap", "clip")]
    for i, cell in enumerate(cells + [dict(overflow="ideal")]):
        seed(i)(settings(max_examples=10)(given(big_dense_case_st(**cell))(check)))()
    assert not BIG_DENSE_PATHS - log.seen, f"paths never reached: {sorted(BIG_DENSE_PATHS - log.seen)}"


@settings(max_examples=12)
@given(big_conv_case_st())
def test_big_conv_calls_match_reference(case):
    """conv2d at >= 2**18 MACs (im2col rows mostly > 128) near the rails == the reference twin."""
    x, w, b, kwargs = case
    res = conv2d(x, w, b, **kwargs)
    assert res.stats.additions >= dp._SMALL_SEQUENTIAL
    assert_same(res, zero_skipping_conv(x, w, b, kwargs))


@settings(max_examples=150)
@given(rail_dense_case_st())
def test_small_calls_near_the_rails_match_reference(case):
    """Small calls (K = 1 often, widths 1 and 2, BW_acc 1..62, rail and exactly-full biases,
    ties at .5 lsb) == ref.dense, taking the tiny-call path and, with _SMALL_SEQUENTIAL
    off, the exact checks; the per-step kernel agrees on every output."""
    x, w, b, kwargs = case
    want = ref.dense(x, w, b, **kwargs)
    assert_same(dense(x, w, b, **kwargs), want)
    small, dp._SMALL_SEQUENTIAL = dp._SMALL_SEQUENTIAL, 0
    try:
        assert_same(dense(x, w, b, **kwargs), want)
        (acc_f, st_f), (acc_s, st_s) = both_paths(x, w, b, kwargs)
    finally:
        dp._SMALL_SEQUENTIAL = small
    np.testing.assert_array_equal(acc_f, want.acc)
    np.testing.assert_array_equal(acc_s, want.acc)
    assert st_f == st_s == want.stats


def test_prefix_stats_off_leaves_the_default_path_alone(monkeypatch):
    """prefix_stats=False (the default) runs no prefix pass and reports None."""
    called = []
    monkeypatch.setattr(dp, "_max_abs_prefix", lambda *a: called.append(1) or 0)
    rng = np.random.default_rng(6)
    x, w = rng.integers(-128, 128, (300, 900)), rng.integers(-128, 128, (900, 3))
    for fn in (dense, ref.dense):
        assert fn(x[:2], w, None, fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=16).stats.max_abs_prefix is None
    assert dense(x, w, None, fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=16,
                 overflow="clip").stats.max_abs_prefix is None
    assert not called
