"""The validation core every engine shares: LayerConfig's derived values and checks, the
call's checks (one line, the same from every engine), requantization and stochastic bits,
conv geometry and im2col."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.config import LayerConfig
from fxpsim.datapath import core
from fxpsim.datapath import reference as ref
from fxpsim.datapath.bitserial import bit_serial_conv2d, bit_serial_dense
from fxpsim.datapath.dense import conv2d, dense
from fxpsim.errors import FxpsimError
from fxpsim.graph.geometry import conv_out_size
from fxpsim.qformat import MAX_WIDTH, Overflow, QFormat, Rounding, shift_round
from strategies import deterministic_rounding_st

Q8 = QFormat(8, 0)


# ----------------------------------------------------------------- LayerConfig: derived values, one check each

def test_layer_config_derived_values():
    cfg = LayerConfig("fc1", fmt_w=QFormat(1, 7), fmt_x=QFormat(4, 4), fmt_y=QFormat(4, 8), acc_bits=20)
    assert (cfg.frac_acc, cfg.shift, cfg.acc_min, cfg.acc_max) == (11, 3, -(2**19), 2**19 - 1)
    assert cfg.fmt_bias == cfg.fmt_acc == QFormat(9, 11)
    ideal = LayerConfig("fc1", fmt_w=QFormat(1, 7), fmt_x=QFormat(4, 4), fmt_y=QFormat(4, 8), acc_bits=20,
                        overflow="ideal")
    assert ideal.fmt_bias == QFormat(MAX_WIDTH - 11, 11)  # an unbounded accumulator's bias: 62 bits
    assert ideal.fmt_acc == cfg.fmt_acc


@pytest.mark.parametrize("needle,kwargs", [
    ("product width 32 + 31 = 63 bits", dict(fmt_x=QFormat(32, 0), fmt_w=QFormat(31, 0))),
    ("requantization shift FL_acc - FL_y = 68", dict(fmt_x=QFormat(-20, 30), fmt_w=QFormat(-20, 30),
                                                   fmt_y=QFormat(10, -8))),
    ("acc_bits=True is not an integer", dict(acc_bits=True)),
    ("acc_bits=63 is outside 1..62", dict(acc_bits=63)),
])
def test_layer_config_refuses_what_no_engine_can_run(needle, kwargs):
    """Checked once, in LayerConfig (before: the product and shift only in the datapath's
    re-parsing, and acc_bits=True taken as a 1-bit accumulator)."""
    args = dict(fmt_w=Q8, fmt_x=Q8, fmt_y=Q8, acc_bits=16)
    args.update(kwargs)
    with pytest.raises(FxpsimError, match="layer fc1: ") as info:
        LayerConfig("fc1", **args)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_layer_config_takes_numpy_integers_as_acc_bits():
    cfg = LayerConfig("fc1", Q8, Q8, Q8, acc_bits=np.int64(16))
    assert type(cfg.acc_bits) is int and cfg == LayerConfig("fc1", Q8, Q8, Q8, acc_bits=16)


# ----------------------------------------------------------------- the call's config: cfg or keywords

def test_cfg_and_keyword_forms_give_the_same_results():
    rng = np.random.default_rng(0)
    x, w, b = rng.integers(-128, 128, (5, 40)), rng.integers(-128, 128, (40, 3)), rng.integers(-99, 99, 3)
    kw = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=QFormat(8, -4), acc_bits=15, overflow="clip", rounding="stochastic")
    cfg = LayerConfig("fc1", fmt_w=Q8, fmt_x=Q8, fmt_y=QFormat(8, -4), acc_bits=15, overflow="clip",
                      rounding="stochastic")
    for fn in (dense, ref.dense, bit_serial_dense):
        a, c = fn(x, w, b, **kw, seed=3, activation="relu"), fn(x, w, b, cfg, seed=3, activation="relu")
        np.testing.assert_array_equal(a.y, c.y)
        np.testing.assert_array_equal(a.acc, c.acc)
        assert a.stats == c.stats
    xc, wc = rng.integers(-128, 128, (2, 3, 6, 6)), rng.integers(-128, 128, (4, 3, 3, 3))
    for fn in (conv2d, ref.conv2d, bit_serial_conv2d):
        a = fn(xc, wc, None, stride=2, padding=1, **kw, seed=3)
        c = fn(xc, wc, None, cfg, stride=2, padding=1, seed=3)
        np.testing.assert_array_equal(a.y, c.y)
        assert a.stats == c.stats


@pytest.mark.parametrize("needle,args", [
    ("both cfg and fmt_x, overflow were given", dict(cfg=LayerConfig("l", Q8, Q8, Q8), fmt_x=Q8,
                                                      overflow="clip")),
    ("neither cfg nor fmt_y, acc_bits was given", dict(fmt_x=Q8, fmt_w=Q8)),
    ("cfg='Q8.0' is not a LayerConfig", dict(cfg="Q8.0")),
])
def test_cfg_or_keywords_never_both(needle, args):
    for fn in (dense, ref.dense, bit_serial_dense):
        with pytest.raises(FxpsimError) as info:
            fn(np.zeros((1, 2), np.int64), np.zeros((2, 1), np.int64), **args)
        assert needle in str(info.value)


# ----------------------------------------------------------------- bad input: one line, every engine the same

X, W = np.zeros((2, 3), dtype=np.int64), np.zeros((3, 4), dtype=np.int64)
OK = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=16)
BAD_CONFIG = [
    ("product width", dict(fmt_x=QFormat(32, 0), fmt_w=QFormat(31, 0))),
    ("acc_bits=63", dict(acc_bits=63)),
    ("acc_bits=0", dict(acc_bits=0)),
    ("acc_bits=16.0", dict(acc_bits=16.0)),
    ("unknown overflow", dict(overflow="saturate")),
    ("unknown rounding", dict(rounding="up")),
    ("requantization shift", dict(fmt_x=QFormat(-20, 30), fmt_w=QFormat(-20, 30), fmt_y=QFormat(10, -8))),
]
BAD_DENSE = BAD_CONFIG + [
    ("outside Q8.0's range", dict(x=np.full((2, 3), 200))),
    ("not integer", dict(x=np.zeros((2, 3)))),
    ("not 2-D", dict(x=np.zeros(3, dtype=np.int64))),
    ("but w has 4 rows", dict(w=np.zeros((4, 4), dtype=np.int64))),
    ("BW_acc too small to hold the bias", dict(b=np.array([0, 0, 40000, 0]))),
    ("bias has shape", dict(b=np.zeros(3, dtype=np.int64))),
    ("unknown activation", dict(activation="tanh")),
    ("needs an integer seed", dict(rounding="stochastic")),
    ("needs int64", dict(x=np.zeros((2, 9), dtype=np.int64), w=np.zeros((9, 4), dtype=np.int64),
                         fmt_x=QFormat(31, 0), fmt_w=QFormat(31, 0), acc_bits=8, overflow="ideal")),
    ("prefix_stats=1 is not a bool", dict(prefix_stats=1)),
]


@pytest.mark.parametrize("needle,change", BAD_DENSE, ids=[n for n, _ in BAD_DENSE])
def test_bad_dense_input_is_one_clear_line(needle, change):
    """The same message from the dense engine, its twin and the bit-serial engine."""
    args = dict(OK, x=X, w=W, b=None)
    args.update(change)
    messages = []
    engines = (dense, ref.dense) + (() if "prefix_stats" in change else (bit_serial_dense,))
    for fn in engines:
        with pytest.raises(FxpsimError) as info:
            fn(args["x"], args["w"], args["b"],
               **{k: v for k, v in args.items() if k not in ("x", "w", "b")})
        messages.append(str(info.value))
    assert len(set(messages)) == 1
    assert needle in messages[0] and "\n" not in messages[0] and ":" in messages[0]


@pytest.mark.parametrize("needle,change", BAD_CONFIG, ids=[n for n, _ in BAD_CONFIG])
def test_keyword_form_errors_are_the_layer_configs(needle, change):
    """A bad keyword is refused by the LayerConfig the keyword form builds: the message of
    building that config directly (``layer``), not a second check with its own words."""
    args = dict(OK, overflow="wrap", rounding="nearest-even")
    args.update(change)
    with pytest.raises(FxpsimError) as direct:
        LayerConfig("layer", fmt_w=args["fmt_w"], fmt_x=args["fmt_x"], fmt_y=args["fmt_y"],
                    acc_bits=args["acc_bits"], overflow=args["overflow"], rounding=args["rounding"])
    with pytest.raises(FxpsimError) as called:
        dense(X, W, None, **args)
    assert str(called.value) == str(direct.value) and needle in str(direct.value)


BAD_CONV = [
    ("x has 2 channels but w expects 3", dict(x=np.zeros((1, 2, 5, 5), dtype=np.int64))),
    ("larger than the padded input", dict(x=np.zeros((1, 3, 2, 2), dtype=np.int64))),
    ("stride=0", dict(stride=0)),
    ("padding=-1", dict(padding=-1)),
    ("not 4-D", dict(w=np.zeros((2, 3, 3), dtype=np.int64))),
]


@pytest.mark.parametrize("needle,change", BAD_CONV, ids=[n for n, _ in BAD_CONV])
def test_bad_conv_input_is_one_clear_line(needle, change):
    args = dict(OK, x=np.zeros((1, 3, 5, 5), dtype=np.int64), w=np.zeros((2, 3, 3, 3), dtype=np.int64))
    args.update(change)
    messages = []
    for fn in (conv2d, ref.conv2d, bit_serial_conv2d):
        with pytest.raises(FxpsimError) as info:
            fn(args["x"], args["w"], None, **{k: v for k, v in args.items() if k not in ("x", "w")})
        messages.append(str(info.value))
    assert len(set(messages)) == 1 and needle in messages[0] and "\n" not in messages[0]


# ----------------------------------------------------------------- operands

def test_operands_are_narrowed_to_their_format_exactly():
    """Checked operands move in the narrowest int type of their format's raw range."""
    cases = [(QFormat(8, 0), np.int8), (QFormat(8, 0, signed=False), np.int16),
             (QFormat(16, 0), np.int16), (QFormat(17, 0), np.int32), (QFormat(33, 0), np.int64)]
    for fmt, dt in cases:
        a = np.array([fmt.raw_min, fmt.raw_max, 0], dtype=np.int64)
        got = core.narrow(a, fmt)
        assert got.dtype == dt and np.array_equal(got, a)
    small = np.array([1, -2], dtype=np.int8)
    assert core.narrow(small, QFormat(12, 0)) is small  # already narrow: no copy


@pytest.mark.parametrize("bias", [[2**40, -(2**40)], [2**61 - 1, -(2**61)]])
def test_ideal_bias_takes_the_full_width_of_fmt_bias(bias):
    """``ideal`` is unbounded: its bias is quantized to MAX_WIDTH bits (the Simulator does
    so), which the datapath refused unless it fitted BW_acc. Every engine agrees."""
    x = np.array([[3, -2], [0, 1]])
    w = np.array([[5, -7], [100, 1]])
    cfg = LayerConfig("fc1", Q8, Q8, QFormat(62, 0), acc_bits=8, overflow="ideal")
    b = np.array(bias)
    res = dense(x, w, b, cfg)
    np.testing.assert_array_equal(res.acc, x @ w + b)
    for twin in (ref.dense(x, w, b, cfg), bit_serial_dense(x, w, b, cfg)):
        np.testing.assert_array_equal(twin.acc, res.acc)
        np.testing.assert_array_equal(twin.y, res.y)
        assert twin.stats.max_abs_acc == res.stats.max_abs_acc == int(np.abs(x @ w + b).max())
    with pytest.raises(FxpsimError, match="BW_acc too small"):  # a wrap accumulator holds 8 bits
        dense(x, w, b, LayerConfig("fc1", Q8, Q8, QFormat(62, 0), acc_bits=8))


# ----------------------------------------------------------------- conv geometry and im2col

@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3),
       st.integers(0, 2))
def test_conv_geometry_is_the_graphs_output_size(h, wd, kh, kw, stride, pad):
    if kh > h + 2 * pad or kw > wd + 2 * pad:
        with pytest.raises(FxpsimError, match="larger than the padded input"):
            core.conv_geometry((1, 1, h, wd), (1, 1, kh, kw), stride, pad)
        return
    assert core.conv_geometry((1, 1, h, wd), (1, 1, kh, kw), stride, pad) == (
        conv_out_size(h, kh, stride, pad), conv_out_size(wd, kw, stride, pad))


@pytest.mark.parametrize("pad_value", [0, -1, 1])
def test_im2col_pads_with_the_given_value(pad_value):
    rng = np.random.default_rng(pad_value + 5)
    x = rng.integers(-3, 4, (2, 3, 5, 4)).astype(np.int8)
    oh, ow = core.conv_geometry(x.shape, (1, 3, 3, 2), 2, 1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=pad_value)
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 2), axis=(2, 3))[:, :, ::2, ::2]
    want = win.transpose(0, 2, 3, 1, 4, 5).reshape(2 * oh * ow, 3 * 3 * 2)
    got = core.im2col(x, 3, 2, 2, 1, oh, ow, pad_value=pad_value)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------- requantization

@given(st.lists(st.integers(-(2**61), 2**61 - 1), min_size=1, max_size=20),
       st.integers(-3, 62), deterministic_rounding_st)
def test_requantize_is_qformat_shift_round_then_clip(raw, shift, rounding):
    fy = QFormat(40, 0)
    cfg = LayerConfig("t", fmt_w=QFormat(1, 0), fmt_x=QFormat(1 - shift, shift), fmt_y=fy, acc_bits=62,
                      overflow=Overflow.WRAP, rounding=Rounding(rounding))
    assert cfg.shift == shift
    v = np.array(raw, dtype=np.int64)
    expect = np.clip(shift_round(v, shift, rounding) if shift >= 0 else
                     np.clip(v, -(2**45), 2**45) << -shift, fy.raw_min, fy.raw_max)
    np.testing.assert_array_equal(core.requantize(v, cfg), expect)
    assert [ref.requantize_one(int(a), i, cfg) for i, a in enumerate(raw)] == expect.tolist()


def test_stochastic_rounding_is_seeded_unbiased_and_matches_reference():
    idx = np.arange(0, 5000, 7)
    for bits in (1, 13, 62):
        vec = core.stochastic_bits(2**63 + 5, idx, bits)
        assert vec.tolist() == [ref.splitmix_bits(2**63 + 5, int(i), bits) for i in idx]
    x = np.ones((4000, 1), dtype=np.int64)
    kw = dict(fmt_x=Q8, fmt_w=QFormat(6, 2), fmt_y=Q8, acc_bits=8, rounding="stochastic")
    a = dense(x, [[1]], None, seed=11, **kw).y  # acc = 1 (FL 2): 1/4 -> up with p = 0.25
    assert np.array_equal(a, dense(x, [[1]], None, seed=11, **kw).y)
    assert not np.array_equal(a, dense(x, [[1]], None, seed=12, **kw).y)
    assert 0.22 < a.mean() < 0.28
