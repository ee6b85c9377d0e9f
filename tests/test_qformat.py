"""QFormat, quantize/dequantize, rounding and overflow (DESIGN.md semantics)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.errors import FxpsimError
from fxpsim.qformat import (QFormat, Rounding, de_bruin_il, dequantize, from_bits, int_bits_for,
                            quantize, shift_round, to_bits, wrap_raw)
from strategies import deterministic_rounding_st, qformat_st, raw_st, rounding_st


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
