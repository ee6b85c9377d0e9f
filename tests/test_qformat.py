"""QFormat, quantize/dequantize, rounding and overflow (DESIGN.md semantics)."""

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim import simulate
from fxpsim.errors import FxpsimError
from fxpsim.qformat import (QFormat, Rounding, convert, de_bruin_il, dequantize, from_bits,
                            int_bits_for, quantize, shift_round, to_bits, wrap_raw)
from strategies import deterministic_rounding_st, overflow_st, qformat_st, raw_st, rounding_st


def test_format_fields_and_printing():
    f = QFormat(4, 12)
    assert (f.width, f.raw_min, f.raw_max, f.lsb) == (16, -32768, 32767, 2.0**-12)
    assert (f.min_value, f.max_value) == (-8.0, 8.0 - 2.0**-12)
    assert str(f) == "Q4.12" and QFormat.parse("Q4.12") == f
    assert QFormat.parse("UQ8.0") == QFormat(8, 0, signed=False)
    assert QFormat.parse("Q-2.10").max_value < 0.125
    assert de_bruin_il(QFormat(4, 12)) == 3  # de Bruin: BW = IL + FL + 1


@pytest.mark.parametrize("bad", ["Q4", "4.12", "Qa.b", "Q0.0", "Q40.40", "Q-3.2", ""])
def test_bad_formats_are_one_line_errors(bad):
    with pytest.raises(FxpsimError) as info:
        QFormat.parse(bad)
    assert "\n" not in str(info.value)


def test_non_integer_bits_rejected():
    with pytest.raises(FxpsimError, match="not an integer"):
        QFormat(4.5, 3)


def test_rounding_modes_on_ties():
    f = QFormat(8, 0)
    x = [2.5, 3.5, -2.5, -3.5, 2.4, -2.6]
    assert list(quantize(x, f, "nearest-even")) == [2, 4, -2, -4, 2, -3]
    assert list(quantize(x, f, "nearest")) == [3, 4, -3, -4, 2, -3]
    assert list(quantize(x, f, "floor")) == [2, 3, -3, -4, 2, -3]
    assert list(quantize(x, f, "toward-zero")) == [2, 3, -2, -3, 2, -2]


def test_overflow_wrap_and_clip():
    f = QFormat(4, 0)  # raw -8..7
    assert list(quantize([8, -9, 100], f, overflow="clip")) == [7, -8, 7]
    assert list(quantize([8, -9, 100], f, overflow="wrap")) == [-8, 7, 4]


def test_nan_and_unknown_modes_are_errors():
    with pytest.raises(FxpsimError, match="non-finite"):
        quantize([1.0, np.nan], QFormat(4, 4))
    with pytest.raises(FxpsimError, match="unknown rounding"):
        quantize([1.0], QFormat(4, 4), rounding="up")
    with pytest.raises(FxpsimError, match="unknown overflow"):
        quantize([1.0], QFormat(4, 4), overflow="ideal")
    with pytest.raises(FxpsimError, match="needs a seed"):
        quantize([1.0], QFormat(4, 4), rounding="stochastic")


@given(qformat_st(), st.data())
def test_raw_round_trip(fmt, data):
    raw = data.draw(raw_st(fmt))
    for rounding in Rounding:
        assert quantize(dequantize(raw, fmt), fmt, rounding, seed=0) == raw
    assert from_bits(to_bits(raw, fmt), fmt) == raw


@given(qformat_st(max_width=40), deterministic_rounding_st,
       st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=20))
def test_quantize_clip_is_monotone(fmt, rounding, xs):
    xs = np.sort(np.array(xs))
    assert np.all(np.diff(quantize(xs, fmt, rounding, "clip")) >= 0)


@given(qformat_st(max_width=40), st.integers(-(2**45), 2**45))
def test_wrap_is_modular_and_clip_saturates(fmt, n):
    x = math.ldexp(n, -fmt.frac_bits)  # exactly n lsbs
    wrapped = int(quantize(x, fmt, overflow="wrap"))
    assert fmt.raw_min <= wrapped <= fmt.raw_max and (wrapped - n) % (1 << fmt.width) == 0
    assert int(quantize(x, fmt, overflow="clip")) == min(max(n, fmt.raw_min), fmt.raw_max)
    if fmt.raw_min <= n <= 2**61:
        assert int(wrap_raw(n, fmt)) == wrapped


@given(st.integers(-(2**40), 2**40), st.integers(0, 20), rounding_st)
def test_shift_round_matches_float_rounding(v, shift, rounding):
    f = QFormat(60, 0)
    expect = quantize(math.ldexp(v, -shift), f, rounding, seed=5)
    got = shift_round(v, shift, rounding, seed=5)
    if rounding is Rounding.STOCHASTIC:  # same law, different draws: within one step
        assert abs(int(got) - int(expect)) <= 1 and math.floor(v / 2**shift) <= got <= -(-v // 2**shift)
    else:
        assert int(got) == int(expect)


def test_stochastic_rounding_is_seeded_and_unbiased():
    x = np.full(20000, 0.25)
    a = quantize(x, QFormat(4, 0), "stochastic", seed=1)
    assert np.array_equal(a, quantize(x, QFormat(4, 0), "stochastic", seed=1))
    assert abs(a.mean() - 0.25) < 0.02


@pytest.mark.parametrize("max_abs,signed,expect", [(0.9, True, 1), (1.0, True, 2), (0.2, True, -1),
                                                    (100.0, True, 8), (255.0, False, 8), (0.0, True, 1)])
def test_int_bits_for_profiled_range(max_abs, signed, expect):
    i = int_bits_for(max_abs, signed)
    assert i == expect
    fmt = QFormat(i, 20 - i, signed)
    assert quantize(max_abs, fmt) == quantize(max_abs, QFormat(i + 4, 20 - i, signed))


def test_bit_view():
    assert to_bits(-12, QFormat(4, 4)) == "1111.0100"
    assert to_bits(-4, QFormat(3, 0)) == "100"
    assert to_bits(5, QFormat(3, 0, signed=False)) == "101"
    assert to_bits(1, QFormat(-2, 4)) == "01"  # no binary point inside the word


# ----------------------------------------------- exactness at the edges (issue 13)
# A Python-int / Fraction model of DESIGN.md's semantics, independent of the code under test.

def _round_model(t: Fraction, rounding: Rounding) -> int:
    """``t`` rounded to an integer with a deterministic mode (DESIGN.md names)."""
    fl = math.floor(t)
    rem = t - fl  # 0 <= rem < 1
    half = Fraction(1, 2)
    if rounding is Rounding.FLOOR:
        return fl
    if rounding is Rounding.TOWARD_ZERO:
        return fl + (rem != 0 and t < 0)
    if rounding is Rounding.NEAREST:  # AP_RND_INF: ties away from zero
        return fl + (rem > half or (rem == half and t >= 0))
    return fl + (rem > half or (rem == half and fl % 2 == 1))  # nearest-even


def _overflow_model(r: int, fmt: QFormat, overflow) -> int:
    if overflow == "clip":
        return min(max(r, fmt.raw_min), fmt.raw_max)
    return (r - fmt.raw_min) % (1 << fmt.width) + fmt.raw_min


def _scale(fmt: QFormat) -> Fraction:
    return Fraction(2) ** fmt.frac_bits


EXTREME_FORMATS = [QFormat(100, -90), QFormat(-3, 10), QFormat(-60, 100), QFormat(-100, 160),
                   QFormat(62, 0), QFormat(1, 0), QFormat(1, 61), QFormat(62, 0, signed=False),
                   QFormat(4, -1), QFormat(8, 50), QFormat(16, 0), QFormat(-40, 41, signed=False)]


@st.composite
def extreme_qformat_st(draw):
    """Any valid format with frac_bits from -100 to 160 (int_bits = width - frac_bits)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(EXTREME_FORMATS))
    width = draw(st.integers(1, 62))
    frac = draw(st.integers(-100, 160))
    return QFormat(width - frac, frac, draw(st.booleans()))


def _float_or_none(t: Fraction):
    """``t`` as a double if it is one exactly, else None."""
    try:
        x = float(t)
    except OverflowError:
        return None
    return x if math.isfinite(x) and Fraction(x) == t else None


@st.composite
def doubles_for_st(draw, fmt: QFormat):
    """Finite doubles for ``fmt``: any (subnormals, tiny, huge), exact ties at .5 lsb and
    their neighbours, multiples of the lsb near the range edges."""
    kind = draw(st.sampled_from(["any", "any", "tie", "edge", "tiny"]))
    if kind == "any":
        return draw(st.floats(allow_nan=False, allow_infinity=False))
    if kind == "tiny":
        return draw(st.sampled_from([5e-324, -5e-324, 1e-300, -1e-300, 2.0**-1022, -(2.0**-1022),
                                     1.7e308, -1.7e308, -0.0, 0.0]))
    if kind == "tie":
        n = draw(st.one_of(st.integers(-4, 4), st.integers(-(2**52), 2**52),
                           st.sampled_from([fmt.raw_min, fmt.raw_max, fmt.raw_min - 1])))
        t = (Fraction(n) + Fraction(1, 2)) / _scale(fmt)
    else:
        n = draw(st.one_of(st.sampled_from([fmt.raw_min, fmt.raw_max, 0]),
                           st.integers(fmt.raw_min - 3, fmt.raw_max + 3)))
        t = Fraction(n) / _scale(fmt)
    x = _float_or_none(t)
    if x is not None and draw(st.booleans()):
        x = float(np.nextafter(x, draw(st.sampled_from([-math.inf, math.inf]))))
    return draw(st.floats(allow_nan=False, allow_infinity=False)) if x is None or not math.isfinite(x) else x


@given(extreme_qformat_st(), st.data())
def test_quantize_equals_fraction_model(fmt, data):
    xs = data.draw(st.lists(doubles_for_st(fmt), min_size=1, max_size=8))
    for rounding in (r for r in Rounding if r is not Rounding.STOCHASTIC):
        for overflow in ("clip", "wrap"):
            expect = [_overflow_model(_round_model(Fraction(x) * _scale(fmt), rounding), fmt, overflow)
                      for x in xs]
            got = quantize(np.array(xs), fmt, rounding, overflow)
            np.testing.assert_array_equal(got, np.array(expect, dtype=np.int64),
                                          err_msg=f"{fmt} {rounding.value} {overflow} {xs!r}")


def test_quantize_floors_tiny_negatives_to_minus_one():
    assert quantize([-1e-300], QFormat(100, -90), "floor").tolist() == [-1]
    assert quantize([-5e-324], QFormat(4, -1), "floor").tolist() == [-1]
    assert int(quantize(-5e-324, QFormat(4, -1), "floor")) == -1  # scalar input too
    assert quantize([5e-324, -0.0, 0.0], QFormat(4, -1), "floor").tolist() == [0, 0, 0]
    for mode in ("nearest-even", "nearest", "toward-zero"):
        assert quantize([-1e-300, 1e-300], QFormat(100, -90), mode).tolist() == [0, 0]


@pytest.mark.parametrize("rounding", list(Rounding))
def test_quantize_huge_values_saturate_or_wrap_exactly(rounding):
    fmt = QFormat(-60, 100)  # x * 2**100 leaves the double range for |x| >= 2**924
    x = [1e300, -1e300, 1.7e308, 3.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no inf/NaN on the way (a NaN cast to int64 is undefined)
        # 1e300 * 2**100 is a multiple of 2**(996 - 52 + 100) > 2**40: it wraps to 0
        assert quantize(x, fmt, rounding, "wrap", seed=1).tolist() == [0, 0, 0, 0]
        assert quantize(x, fmt, rounding, "clip", seed=1).tolist() == [fmt.raw_max, fmt.raw_min,
                                                                       fmt.raw_max, fmt.raw_max]


def test_quantize_stochastic_on_tiny_values_is_consistent():
    """Tiny values round like the common path's draw: up iff u < the dropped fraction, so a
    tiny negative never rounds to -1, a tiny positive to 1 only when u == 0."""
    fmt = QFormat(100, -90)
    x = np.array([-1e-300, 1e-300, -5e-324, 5e-324] * 500)
    assert quantize(x, fmt, "stochastic", seed=3).tolist() == [0] * x.size
    np.testing.assert_array_equal(quantize(x, fmt, "stochastic", seed=3),
                                  quantize(x, QFormat(4, 12), "stochastic", seed=3))


@given(extreme_qformat_st(), st.data(), st.integers(0, 2**32))
def test_quantize_stochastic_is_floor_or_ceiling(fmt, data, seed):
    xs = data.draw(st.lists(doubles_for_st(fmt), min_size=1, max_size=8))
    got = quantize(np.array(xs), fmt, "stochastic", "clip", seed=seed).tolist()
    for x, g in zip(xs, got):
        t = Fraction(x) * _scale(fmt)
        lo, hi = (_overflow_model(b, fmt, "clip") for b in (math.floor(t), math.ceil(t)))
        assert lo <= g <= hi, (fmt, x, g)


def test_shift_round_refuses_what_int64_cannot_hold():
    with pytest.raises(FxpsimError, match="4611686018427387904"):  # 2**62 << 2
        shift_round([1 << 62], -2)
    with pytest.raises(FxpsimError, match="raw value -5 leaves int64"):
        shift_round([-5], -61)
    for shift in (63, 64, -63, 200):
        with pytest.raises(FxpsimError, match="beyond"):
            shift_round([5], shift)
    for shift in (2.0, True, "3"):
        with pytest.raises(FxpsimError, match="not an integer"):
            shift_round([5], shift)
    assert shift_round([-4, 3], -61).tolist() == [-(2**63), 3 << 61]  # the largest that fit
    assert shift_round([5], np.int64(62)).tolist() == [0]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=6),
       st.integers(-62, 62), deterministic_rounding_st)
def test_shift_round_matches_python_ints(raw, shift, rounding):
    if shift < 0 and not all(-(2**63) <= v << -shift < 2**63 for v in raw):
        with pytest.raises(FxpsimError, match="leaves int64"):
            shift_round(raw, shift, rounding)
        return
    expect = [_round_model(Fraction(v) / Fraction(2) ** shift, rounding) for v in raw]
    assert shift_round(raw, shift, rounding).tolist() == expect


@st.composite
def raw_of_st(draw, src: QFormat, shift: int):
    """Raw values of ``src``: edges, anything, and exact ties of a right ``shift``."""
    if shift > 0 and draw(st.booleans()):
        tie_lsb = 1 << (shift - 1)
        m = draw(st.integers(src.raw_min // tie_lsb, src.raw_max // tie_lsb))
        v = m * tie_lsb if m % 2 else (m + 1) * tie_lsb
        if src.raw_min <= v <= src.raw_max:
            return v
    return draw(raw_st(src))


@given(extreme_qformat_st(), extreme_qformat_st(), st.data())
def test_convert_equals_python_model(src, dst, data):
    shift = src.frac_bits - dst.frac_bits
    raw = data.draw(st.lists(raw_of_st(src, shift), min_size=1, max_size=8))
    for rounding in (r for r in Rounding if r is not Rounding.STOCHASTIC):
        expect = [_overflow_model(_round_model(Fraction(v) * _scale(dst) / _scale(src), rounding),
                                  dst, "clip") for v in raw]
        got = convert(np.array(raw, dtype=np.int64), src, dst, rounding)
        assert got.tolist() == expect, (src, dst, rounding.value, raw)
        np.testing.assert_array_equal(simulate.convert_raw(np.array(raw), src, dst, rounding), got)


def test_convert_saturates_left_shifts_never_wraps():
    raw = np.array([32767, -32768, 1, 0])
    got = simulate.convert_raw(raw, QFormat(16, 0), QFormat(8, 50))
    np.testing.assert_array_equal(got, [2**57 - 1, -(2**57), 2**50, 0])
    # a left shift beyond 62 bits: every nonzero value saturates
    got = convert(np.array([1, -1, 0, 2**61 - 1]), QFormat(62, 0), QFormat(-100, 160))
    np.testing.assert_array_equal(got, [2**59 - 1, -(2**59), 0, 2**59 - 1])
    assert convert([-3], QFormat(8, 0), QFormat(8, 4, signed=False)).tolist() == [0]


@given(extreme_qformat_st(), extreme_qformat_st(), st.data(), st.integers(0, 2**32))
def test_convert_stochastic_is_floor_or_ceiling_and_seeded(src, dst, data, seed):
    raw = np.array(data.draw(st.lists(raw_st(src), min_size=1, max_size=8)), dtype=np.int64)
    got = convert(raw, src, dst, "stochastic", seed)
    np.testing.assert_array_equal(got, convert(raw, src, dst, "stochastic", seed))
    for v, g in zip(raw.tolist(), got.tolist()):
        t = Fraction(v) * _scale(dst) / _scale(src)
        lo, hi = (_overflow_model(b, dst, "clip") for b in (math.floor(t), math.ceil(t)))
        assert lo <= g <= hi, (src, dst, v, g)


def test_convert_right_shift_beyond_62_bits_is_exact():
    src, dst = QFormat(-8, 70), QFormat(8, 0)  # shift 70: |raw / 2**70| < 2**-8
    raw = np.array([2**61 - 1, -(2**61), 1, -1, 0])
    assert convert(raw, src, dst, "floor").tolist() == [0, -1, 0, -1, 0]
    assert convert(raw, src, dst, "toward-zero").tolist() == [0, 0, 0, 0, 0]
    assert convert(raw, src, dst, "nearest").tolist() == [0, 0, 0, 0, 0]
    y = convert(np.full(20000, 2**61 - 1), src, dst, "stochastic", seed=4)  # p = 2**-9 - 2**-70
    assert set(y.tolist()) <= {0, 1} and abs(y.mean() - 2.0**-9) < 0.001
    with pytest.raises(FxpsimError, match="needs a seed"):
        convert(raw, src, dst, "stochastic")


# --- one counter-based stochastic draw on every path (DESIGN.md) ------------------------------

@given(st.integers(1, 40), st.integers(0, 2**63), st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40))
def test_quantize_stochastic_draws_the_counter_based_bits(frac, seed, xs):
    """Up iff the element's 53-bit SplitMix64 draw (index = its flat position) is below the fraction."""
    from fxpsim.qformat import stochastic_bits

    x = np.array(xs)
    fmt = QFormat(62 - frac, frac)
    scaled = np.ldexp(x, frac)
    u = np.ldexp(stochastic_bits(seed, np.arange(x.size), 53), -53)
    want = np.floor(scaled) + (u < scaled - np.floor(scaled))
    np.testing.assert_array_equal(quantize(x, fmt, "stochastic", seed=seed), want.astype(np.int64))


@given(st.integers(1, 53), st.integers(0, 2**32), st.data())
def test_stochastic_quantize_of_an_exact_value_equals_the_shift_of_its_raw(s, seed, data):
    """quantize(raw * 2**-s) and convert(raw) make the same stochastic choice per element: the
    b-bit draw is the top b bits of one word, so u53 / 2**53 < rem / 2**s iff u_s < rem."""
    raw = np.array(data.draw(st.lists(st.integers(-(2**52), 2**52), min_size=1, max_size=30)), dtype=np.int64)
    src, dst = QFormat(62 - s, s), QFormat(62, 0)
    via_float = quantize(np.ldexp(raw.astype(np.float64), -s), dst, "stochastic", seed=seed)
    np.testing.assert_array_equal(via_float, convert(raw, src, dst, "stochastic", seed))
    np.testing.assert_array_equal(via_float, shift_round(raw, s, "stochastic", seed))


@given(st.integers(1, 30), st.integers(0, 2**32), st.data())
def test_shift_round_stochastic_equals_the_datapath_requantize(s, seed, data):
    """The datapath's stochastic requantization of an accumulator is qformat.shift_round's."""
    from fxpsim.config import LayerConfig
    from fxpsim.datapath.core import requantize

    acc = np.array(data.draw(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30)), dtype=np.int64)
    cfg = LayerConfig("l", QFormat(32 - s, s), QFormat(30, 0), QFormat(62, 0), acc_bits=62,
                      rounding="stochastic")
    np.testing.assert_array_equal(requantize(acc, cfg, "none", seed), shift_round(acc, s, "stochastic", seed))


@pytest.mark.parametrize("value,kind", [(np.array([1 + 2j]), "complex"), (["1.5"], "strings"), ("1.5", "strings"),
                                        ([True], "bool"), (np.array([b"1"]), "bytes"),
                                        (np.array([None], dtype=object), "objects"),
                                        (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetimes")])
def test_quantize_refuses_what_is_not_a_real_number(value, kind):
    """Complex input is not cast (its imaginary part dropped), numeric strings are not parsed (issue 14)."""
    with pytest.raises(FxpsimError, match=f"quantize takes real numbers .*\\({kind}\\)"):
        quantize(value, QFormat(4, 4))


@pytest.mark.parametrize("raw", [[1.7], [-0.5], [float("nan")], [float("inf")], [2.0**64], [True], ["3"]])
def test_dequantize_refuses_what_is_not_a_raw_integer(raw):
    """dequantize([1.7]) used to truncate to raw 1 silently (issue 14)."""
    with pytest.raises(FxpsimError, match="dequantize takes raw integers"):
        dequantize(raw, QFormat(4, 4))


def test_dequantize_takes_whole_floats_and_ints_exactly():
    assert dequantize(np.array([2.0, -3.0]), QFormat(4, 4)).tolist() == [0.125, -0.1875]
    assert dequantize(np.array([-(1 << 62)], dtype=np.int64), QFormat(1, 61)).tolist() == [-2.0]
    assert dequantize(np.array([255], dtype=np.uint8), QFormat(8, 0, signed=False)).tolist() == [255.0]
