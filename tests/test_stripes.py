"""Stripes (MICRO 2016): datapath.bitserial == Python-int references; the timing.stripes cycle model."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fxpsim.datapath.dense as kernels
import fxpsim.datapath.reference as kref
from fxpsim.datapath.bitserial import _bit_parallel, bit_serial_conv2d, bit_serial_dense, clip_safe
from fxpsim.datapath.core import im2col
from fxpsim.errors import FxpsimError
from fxpsim.qformat import QFormat
from fxpsim.timing.stripes import AcceleratorConfig, LayerShape, parse_profile, time_layer, time_network
from strategies import (bit_serial_conv_st, bit_serial_dense_st, deterministic_rounding_st,
                        layer_shape_st, overflow_st, precision_profile_st)

MODES = ["wrap", "clip", "ideal"]
Y = QFormat(62, 0)  # a wide output format where only acc matters
LENET_CONV = (LayerShape.conv("conv1", 1, 20, 5, 28),    # 28x28 -> 24x24
              LayerShape.conv("conv2", 20, 50, 5, 12))   # 12x12 -> 8x8 (after 2x2 pool)


# ---------------------------------------------------------------- Python-int references

def _step(t: int, acc_bits: int, mode: str) -> int:
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if mode == "ideal" or lo <= t <= hi:
        return t
    if mode == "wrap":
        return (t - lo) % (1 << acc_bits) + lo
    return min(max(t, lo), hi)


def ref_bit_parallel(x, w, b, acc_bits, mode):
    """One product per addition, k = 0..K-1 (the datapath order)."""
    m_rows, k_len = x.shape
    n_out = w.shape[1]
    out = np.zeros((m_rows, n_out), dtype=object)
    for m in range(m_rows):
        for n in range(n_out):
            acc = 0 if b is None else int(b[n])
            for k in range(k_len):
                acc = _step(acc + int(x[m, k]) * int(w[k, n]), acc_bits, mode)
            out[m, n] = acc
    return out


def ref_bit_serial(x, w, b, fmt_x, acc_bits, mode, lanes, msb_first=False):
    """Stripes: per brick of ``lanes`` k, per bit i, add psum * (+-2**i); counts overflows."""
    p = fmt_x.width
    m_rows, k_len = x.shape
    n_out = w.shape[1]
    out = np.zeros((m_rows, n_out), dtype=object)
    overflows = 0
    bits = range(p - 1, -1, -1) if msb_first else range(p)
    for m in range(m_rows):
        for n in range(n_out):
            acc = 0 if b is None else int(b[n])
            for g0 in range(0, k_len, lanes):
                for i in bits:
                    weight = -(1 << (p - 1)) if (fmt_x.signed and i == p - 1) else (1 << i)
                    psum = sum(int(w[k, n]) * ((int(x[m, k]) >> i) & 1)
                               for k in range(g0, min(g0 + lanes, k_len)))
                    new = _step(acc + psum * weight, acc_bits, mode)
                    overflows += new != acc + psum * weight
                    acc = new
            out[m, n] = acc
    return out, overflows


def ref_conv_rows(x, w, stride, padding):
    """Direct loops: for each output (b, oy, ox), the input column in order channel, row, column."""
    bsz, c, h, w_ = x.shape
    f, _, kh, kw = w.shape
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w_ + 2 * padding - kw) // stride + 1
    rows = []
    for bi in range(bsz):
        for oy in range(oh):
            for ox in range(ow):
                row = []
                for ci in range(c):
                    for r in range(kh):
                        for s in range(kw):
                            yy, xx = oy * stride + r - padding, ox * stride + s - padding
                            inside = 0 <= yy < h and 0 <= xx < w_
                            row.append(int(x[bi, ci, yy, xx]) if inside else 0)
                rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(bsz * oh * ow, c * kh * kw), oh, ow


def as_int(a):
    return np.asarray(a, dtype=object)


# ---------------------------------------------------------------- kernel == references

@given(bit_serial_dense_st(), st.sampled_from(MODES), st.booleans())
def test_dense_equals_python_bit_serial_reference(case, mode, msb_first):
    x, w, b, fmt_x, fmt_w, acc_bits, lanes = case
    res = bit_serial_dense(x, w, b, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=Y, acc_bits=acc_bits, overflow=mode,
                           lanes=lanes, msb_first=msb_first)
    ref, overflows = ref_bit_serial(x, w, b, fmt_x, acc_bits, mode, lanes, msb_first)
    np.testing.assert_array_equal(as_int(res.acc), ref)
    assert res.stats.overflow_count == overflows
    assert res.cycles_per_output == math.ceil(x.shape[1] / lanes) * fmt_x.width
    assert res.stats.additions == x.shape[0] * w.shape[1] * res.cycles_per_output


@given(bit_serial_dense_st(), st.sampled_from(["wrap", "ideal"]), st.booleans())
def test_wrap_and_ideal_always_equal_bit_parallel(case, mode, msb_first):
    x, w, b, fmt_x, fmt_w, acc_bits, lanes = case
    res = bit_serial_dense(x, w, b, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=Y, acc_bits=acc_bits, overflow=mode,
                           lanes=lanes, msb_first=msb_first)
    np.testing.assert_array_equal(as_int(res.acc), ref_bit_parallel(x, w, b, acc_bits, mode))


@given(bit_serial_dense_st(signed=False), st.booleans())
def test_clip_unsigned_one_lane_always_equals_bit_parallel(case, msb_first):
    """Same-sign pieces of one product saturate as the product does (module docstring)."""
    x, w, b, fmt_x, fmt_w, acc_bits, _ = case
    res = bit_serial_dense(x, w, b, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=Y, acc_bits=acc_bits, overflow="clip",
                           lanes=1, msb_first=msb_first)
    np.testing.assert_array_equal(as_int(res.acc), ref_bit_parallel(x, w, b, acc_bits, "clip"))


@given(bit_serial_dense_st(), st.booleans())
def test_clip_agrees_wherever_clip_safe(case, msb_first):
    x, w, b, fmt_x, fmt_w, acc_bits, lanes = case
    res = bit_serial_dense(x, w, b, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=Y, acc_bits=acc_bits, overflow="clip",
                           lanes=lanes, msb_first=msb_first)
    safe = clip_safe(x, w, b, fmt_x=fmt_x, acc_bits=acc_bits)
    parallel = ref_bit_parallel(x, w, b, acc_bits, "clip")
    exact = ref_bit_parallel(x, w, b, acc_bits, "ideal")
    np.testing.assert_array_equal(as_int(res.acc)[safe], parallel[safe])
    np.testing.assert_array_equal(parallel[safe], exact[safe])


def test_clip_safe_is_used_not_vacuous():
    """The bound holds on typical data with a wide accumulator and fails with a narrow one."""
    rng = np.random.default_rng(1)
    x, w = rng.integers(0, 256, (20, 50)), rng.integers(-128, 128, (50, 8))
    assert clip_safe(x, w, fmt_x="UQ8.0", acc_bits=24).all()
    assert not clip_safe(x, w, fmt_x="UQ8.0", acc_bits=16).any()


def test_clip_differs_for_signed_bit_and_for_bricks():
    """Counter-examples to 'always equal' (Sec. 'when bit-serial equals bit-parallel')."""
    # Signed x = -1 (1111 in 4 bits), w = 1, 3-bit accumulator [-4, 3]: LSB first adds
    # +1, +2 -> 3, +4 -> clipped 3, -8 -> clipped -4; bit-parallel adds -1 once.
    kw = dict(fmt_x="Q4.0", fmt_w="Q3.0", fmt_y="Q8.0", acc_bits=3, overflow="clip", lanes=1)
    res = bit_serial_dense(np.array([[-1]]), np.array([[1]]), **kw)
    assert res.acc[0, 0] == -4 and ref_bit_parallel(np.array([[-1]]), np.array([[1]]), None, 3, "clip")[0, 0] == -1
    assert not clip_safe(np.array([[-1]]), np.array([[1]]), fmt_x="Q4.0", acc_bits=3).any()
    # Unsigned, bias 3, w = (3, -3), x = (1, 1): bit-parallel saturates at 3 then lands on 0;
    # a 2-lane brick adds 3 - 3 = 0 in the adder tree and keeps the exact 3.
    x, w, b = np.array([[1, 1]]), np.array([[3], [-3]]), np.array([3])
    res = bit_serial_dense(x, w, b, fmt_x="UQ1.0", fmt_w="Q3.0", fmt_y="Q8.0", acc_bits=3,
                           overflow="clip", lanes=2)
    assert res.acc[0, 0] == 3 and ref_bit_parallel(x, w, b, 3, "clip")[0, 0] == 0


@settings(max_examples=50)
@given(bit_serial_conv_st(), st.sampled_from(MODES))
def test_conv_equals_python_references(case, mode):
    x, w, b, stride, padding, fmt_x, fmt_w, acc_bits, lanes = case
    res = bit_serial_conv2d(x, w, b, stride=stride, padding=padding, fmt_x=fmt_x, fmt_w=fmt_w,
                            fmt_y=Y, acc_bits=acc_bits, overflow=mode, lanes=lanes)
    rows, oh, ow = ref_conv_rows(x, w, stride, padding)
    w2 = w.reshape(w.shape[0], -1).T
    ref, _ = ref_bit_serial(rows, w2, b, fmt_x, acc_bits, mode, lanes)
    ref = ref.reshape(x.shape[0], oh, ow, w.shape[0]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(as_int(res.acc), ref)
    if mode != "clip":
        par = ref_bit_parallel(rows, w2, b, acc_bits, mode).reshape(x.shape[0], oh, ow, -1)
        np.testing.assert_array_equal(as_int(res.acc), par.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(im2col(x, w.shape[2], w.shape[3], stride, padding, oh, ow), rows)


@settings(max_examples=50)
@given(bit_serial_conv_st(), st.sampled_from(MODES))
def test_conv_stripes_bricks_equal_reference(case, mode):
    """order='stripes': bricks of ``lanes`` channels at one kernel position (row, column outer)."""
    x, w, b, stride, padding, fmt_x, fmt_w, acc_bits, lanes = case
    res = bit_serial_conv2d(x, w, b, stride=stride, padding=padding, fmt_x=fmt_x, fmt_w=fmt_w,
                            fmt_y=Y, acc_bits=acc_bits, overflow=mode, lanes=lanes, order="stripes")
    rows, oh, ow = ref_conv_rows(x, w, stride, padding)
    f, c, kh, kw = w.shape
    w2 = w.reshape(f, -1).T
    acc = np.zeros((rows.shape[0], f), dtype=object)
    for m in range(rows.shape[0]):  # one output row at a time, terms regrouped by kernel position
        for n in range(f):
            a = 0 if b is None else int(b[n])
            for pos in range(kh * kw):
                for c0 in range(0, c, lanes):
                    ks = [ci * kh * kw + pos for ci in range(c0, min(c0 + lanes, c))]
                    sub, _ = ref_bit_serial(rows[m:m + 1, ks], w2[ks, n:n + 1], np.array([a]), fmt_x,
                                            acc_bits, mode, lanes)
                    a = sub[0, 0]
            acc[m, n] = a
    np.testing.assert_array_equal(as_int(res.acc), acc.reshape(x.shape[0], oh, ow, f).transpose(0, 3, 1, 2))
    assert res.cycles_per_output == kh * kw * math.ceil(c / lanes) * fmt_x.width
    if mode != "clip":
        same = bit_serial_conv2d(x, w, b, stride=stride, padding=padding, fmt_x=fmt_x, fmt_w=fmt_w,
                                 fmt_y=Y, acc_bits=acc_bits, overflow=mode, lanes=lanes)
        np.testing.assert_array_equal(res.acc, same.acc)


def test_stripes_bricks_match_timing_model_on_lenet_conv2():
    """The kernel's cycles per output x outputs / (windows x filters in parallel) = STR cycles."""
    rng = np.random.default_rng(3)
    x, w = rng.integers(0, 8, (1, 20, 12, 12)), rng.integers(-4, 4, (50, 20, 5, 5))
    res = bit_serial_conv2d(x, w, fmt_x="UQ3.0", fmt_w="Q3.0", fmt_y="Q16.0", acc_bits=24,
                            lanes=16, order="stripes")
    t = time_layer(LENET_CONV[1], 3)
    assert res.cycles_per_output == 5 * 5 * 2 * 3
    assert t.stripes_cycles == res.cycles_per_output * math.ceil(64 / 16) * math.ceil(50 / 256)


@settings(max_examples=50)
@given(bit_serial_dense_st(), overflow_st)
def test_private_bit_parallel_twin_equals_reference(case, mode):
    x, w, b, fmt_x, fmt_w, acc_bits, _ = case
    acc, stats = _bit_parallel(x, w, b, fmt_x=fmt_x, fmt_w=fmt_w, acc_bits=acc_bits, overflow=mode)
    np.testing.assert_array_equal(as_int(acc), ref_bit_parallel(x, w, b, acc_bits, mode.value))
    assert stats.additions == x.size // x.shape[1] * x.shape[1] * w.shape[1]


# ---------------------------------------------------------------- against fxpsim.kernels

@settings(max_examples=60)
@given(bit_serial_dense_st(), st.sampled_from(MODES), deterministic_rounding_st,
       st.sampled_from(["none", "relu"]))
def test_dense_against_datapath_kernels(case, mode, rounding, activation):
    """wrap/ideal always; clip for unsigned x with one lane; clip elsewhere where clip_safe."""
    x, w, b, fmt_x, fmt_w, acc_bits, lanes = case
    frac_y = fmt_x.frac_bits + fmt_w.frac_bits - 2  # 2 bits rounded off
    fmt_y = QFormat(8 - frac_y, frac_y)
    kw = dict(fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits, overflow=mode,
              rounding=rounding, activation=activation)
    one_lane = bit_serial_dense(x, w, b, lanes=1, **kw)
    bricks = bit_serial_dense(x, w, b, lanes=lanes, **kw)
    safe = clip_safe(x, w, b, fmt_x=fmt_x, acc_bits=acc_bits)
    for impl in (kernels.dense, kref.dense):
        theirs = impl(x, w, b, **kw)
        assert bricks.stats.max_abs_acc == theirs.stats.max_abs_acc
        for ours in (one_lane, bricks):
            np.testing.assert_array_equal(ours.acc[safe], theirs.acc[safe])
            np.testing.assert_array_equal(ours.y[safe], theirs.y[safe])
        if mode != "clip" or not fmt_x.signed:
            np.testing.assert_array_equal(one_lane.acc, theirs.acc)
            np.testing.assert_array_equal(one_lane.y, theirs.y)
        if mode != "clip":
            np.testing.assert_array_equal(bricks.acc, theirs.acc)
        if mode == "ideal":
            assert bricks.stats.overflow_count == theirs.stats.overflow_count == 0


@settings(max_examples=50)
@given(bit_serial_conv_st(), st.sampled_from(["wrap", "ideal"]))
def test_conv_against_datapath_kernels(case, mode):
    x, w, b, stride, padding, fmt_x, fmt_w, acc_bits, lanes = case
    kw = dict(stride=stride, padding=padding, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=QFormat(8, 0),
              acc_bits=acc_bits, overflow=mode)
    ours = bit_serial_conv2d(x, w, b, lanes=lanes, **kw)
    for impl in (kernels.conv2d, kref.conv2d):
        theirs = impl(x, w, b, **kw)
        np.testing.assert_array_equal(ours.acc, theirs.acc)
        np.testing.assert_array_equal(ours.y, theirs.y)


# ---------------------------------------------------------------- bad kernel input

@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.array([[0.5]])), "not integer"),
    (dict(x=np.array([[16]])), "outside"),
    (dict(w=np.zeros((2, 1), np.int64)), "K=1 columns"),
    (dict(lanes=0), "lanes"),
    (dict(acc_bits=63), "acc_bits"),
    (dict(overflow="saturate"), "overflow"),
    (dict(b=np.array([1, 2])), "bias"),
])
def test_kernel_bad_input_one_line(kwargs, match):
    args = dict(x=np.array([[3]]), w=np.array([[1]]), b=None, fmt_x="UQ4.0", fmt_w="Q4.0", fmt_y="Q8.0",
                acc_bits=12, overflow="clip", lanes=16)
    args.update(kwargs)
    x, w, b = args.pop("x"), args.pop("w"), args.pop("b")
    with pytest.raises(FxpsimError, match=match) as info:
        bit_serial_dense(x, w, b, **args)
    assert "\n" not in str(info.value)


def test_int64_headroom_is_checked():
    with pytest.raises(FxpsimError, match="int64"):
        bit_serial_dense(np.zeros((1, 16), np.int64), np.zeros((16, 1), np.int64), fmt_x="Q30.0",
                         fmt_w="Q30.0", fmt_y="Q8.0", acc_bits=40, overflow="clip", lanes=16)


# ---------------------------------------------------------------- timing model

def test_lenet_shapes_reproduce_table1_ideal_speedups():
    """Stripes Table I, LeNet: 100 % profile 3-3 -> 5.33, 99 % profile 2-3 -> 7.33."""
    assert [(s.out_h, s.out_w) for s in LENET_CONV] == [(24, 24), (8, 8)]
    for profile, expect, table in (("3-3", Fraction(16, 3), 5.33), ("2-3", Fraction(22, 3), 7.33)):
        t = time_network(LENET_CONV, profile)
        assert t.ideal_speedup == float(expect) and round(t.ideal_speedup, 2) == table
        assert t.speedup == t.ideal_speedup  # 576 and 64 windows: whole groups of 16
    t = time_network(LENET_CONV, "2-3")
    # conv1's single input channel fills 1 of 16 lanes: DaDN spends 14400 cycles on it, 3200
    # on conv2 (ceil(20/16) = 2 bricks); weighting 16/p by MACs instead would give 5.62.
    assert [r.baseline_cycles for r in t.layers] == [576 * 25, 64 * 25 * 2]
    assert [r.stripes_cycles for r in t.layers] == [36 * 25 * 2, 4 * 25 * 2 * 3]
    assert [r.ideal_speedup for r in t.layers] == [8.0, 16 / 3]
    # Filters grouped per tile only (16 at a time, as DNNsim's baseline does) would give 6.93:
    # Table I's 7.33 needs all 16 tiles x 16 filters sharing each window.
    one_tile = time_network(LENET_CONV, "2-3", AcceleratorConfig(tiles=1))
    assert one_tile.ideal_speedup == 16 * (28800 + 12800) / (2 * 28800 + 3 * 12800)


def test_fc_layers_run_at_baseline_speed():
    net = LENET_CONV + (LayerShape.fc("ip1", 800, 500), LayerShape.fc("ip2", 500, 10))
    t = time_network(net, "2-3")
    fc = t.layers[2:]
    assert [(r.precision, r.speedup, r.ideal_speedup) for r in fc] == [(None, 1.0, 1.0)] * 2
    assert [r.baseline_cycles for r in fc] == [50 * 2, 32 * 1]
    assert t.speedup == (14400 + 3200 + 132) / (1800 + 600 + 132) < 22 / 3
    with pytest.raises(FxpsimError, match="bit-parallel"):
        time_layer(LayerShape.fc("ip", 10, 10), 4)


@given(layer_shape_st(), st.integers(1, 16),
       st.builds(AcceleratorConfig, st.integers(1, 20), st.integers(1, 20), st.integers(1, 20)))
def test_layer_timing_properties(shape, p, config):
    t = time_layer(shape, p if shape.kind == "conv" else None, config)
    assert t.baseline_cycles * config.tiles * config.filters * config.lanes >= shape.macs
    if shape.kind == "fc":
        assert t.stripes_cycles == t.baseline_cycles
        return
    windows = shape.out_h * shape.out_w
    assert t.ideal_speedup == 16 / p
    # Stripes does 16 windows of 1-bit work per cycle: p/16 of DaDN's time up to window padding.
    assert t.stripes_cycles * 16 == t.baseline_cycles * p * math.ceil(windows / 16) * 16 // windows
    assert (t.speedup == 16 / p) == (windows % 16 == 0)
    assert time_layer(shape, 16, config).stripes_cycles >= t.baseline_cycles


@given(st.lists(layer_shape_st(), min_size=1, max_size=6), st.data())
def test_network_speedup_is_ratio_of_sums(shapes, data):
    n_conv = sum(s.kind == "conv" for s in shapes)
    profile = data.draw(st.lists(st.integers(1, 16), min_size=n_conv, max_size=n_conv))
    t = time_network(shapes, profile)
    assert t.baseline_cycles == sum(r.baseline_cycles for r in t.layers)
    assert t.speedup == t.baseline_cycles / t.stripes_cycles
    speedups = [r.speedup for r in t.layers]
    assert min(speedups) - 1e-12 <= t.speedup <= max(speedups) + 1e-12
    assert t.ideal_speedup >= t.speedup - 1e-12


# ---------------------------------------------------------------- profiles and config errors

@given(precision_profile_st)
def test_parse_profile_round_trip(values):
    assert parse_profile("-".join(map(str, values))) == tuple(values)
    assert parse_profile(values, n_layers=len(values)) == tuple(values)


@pytest.mark.parametrize("text, n_layers, match", [
    ("9-8-5-5-7", 4, "5 precision"), ("3-3", 3, "3 conv layer"), ("", None, "bad precision"),
    ("9-x-5", None, "bad precision"), ("0-3", None, "outside 1..16"), ("3-17", None, "outside 1..16"),
    ("3--3", None, "bad precision"), ("-3", None, "bad precision"), ([], None, "empty"),
    ([3, 2.5], None, "outside"),
])
def test_bad_profiles_one_line(text, n_layers, match):
    with pytest.raises(FxpsimError, match=match) as info:
        parse_profile(text, n_layers=n_layers)
    assert "\n" not in str(info.value)


def test_profile_length_checked_against_conv_layers():
    assert parse_profile("9-8-5-5-7", n_layers=5) == (9, 8, 5, 5, 7)
    with pytest.raises(FxpsimError, match="2 conv layer"):
        time_network(LENET_CONV + (LayerShape.fc("ip1", 800, 500),), "2-3-4")


@pytest.mark.parametrize("kwargs", [dict(tiles=0), dict(filters=-1), dict(lanes=0), dict(lanes=2.0),
                                    dict(baseline_bits=0)])
def test_bad_config_one_line(kwargs):
    with pytest.raises(FxpsimError, match="positive integer") as info:
        AcceleratorConfig(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("build", [
    lambda: LayerShape("c", "pool", 1, 1), lambda: LayerShape.conv("c", 0, 1, 3, 8),
    lambda: LayerShape.conv("c", 3, 4, 9, 8), lambda: LayerShape.conv("c", 3, 4, 3, 8, groups=2),
])
def test_bad_shapes_one_line(build):
    with pytest.raises(FxpsimError) as info:
        build()
    assert "\n" not in str(info.value)
