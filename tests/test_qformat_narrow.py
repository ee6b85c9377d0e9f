"""Narrow (symmetric) formats, ``QFormat(..., narrow=True)`` / ``Q1.7n`` (issue 15, item 2).

Each saturation to a narrow format is checked against an independent Python-int twin whose range
is written out here (``-(2**(W-1) - 1) .. 2**(W-1) - 1``; unsigned ``0 .. 2**W - 2``, QONNX's
``max_int``), not read from ``raw_min``; the datapath kernels, engines and the plan against
their reference twins on configs whose formats are narrowed; wrap into a narrow format refused.
"""

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import test_plan as tp
from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.datapath import dense as dp
from fxpsim.datapath import plan_reference as twin
from fxpsim.datapath import reference
from fxpsim.errors import FxpsimError
from fxpsim.qformat import Overflow, QFormat, Rounding, convert, quantize, saturate_raw
from fxpsim.simulate import Simulator
from strategies import deterministic_rounding_st, qformat_st, raw_array_st


def narrow_range(fmt: QFormat) -> tuple[int, int]:
    """The symmetric range written out (independent of ``raw_min``/``raw_max``)."""
    w = fmt.width
    return (-(2 ** (w - 1) - 1), 2 ** (w - 1) - 1) if fmt.signed else (0, 2 ** w - 2)


def narrow(fmt: QFormat) -> QFormat:
    return QFormat(fmt.int_bits, fmt.frac_bits, fmt.signed, narrow=fmt.width >= 2)


narrow_fmt_st = qformat_st(2, 62).map(narrow)


def narrowed(cfg: LayerConfig) -> LayerConfig:
    """``cfg`` with fmt_w, fmt_x and fmt_y narrow (width >= 2), the output saturating."""
    try:
        return replace(cfg, fmt_w=narrow(cfg.fmt_w), fmt_x=narrow(cfg.fmt_x), fmt_y=narrow(cfg.fmt_y),
                       output_overflow=Overflow.CLIP)
    except FxpsimError:
        assume(False)


# --------------------------------------------------------------------------- the format itself

@pytest.mark.parametrize("text, lo, hi", [("Q1.7n", -127, 127), ("Q2.0n", -1, 1), ("UQ2.0n", 0, 2),
                                          ("Q-2.10n", -127, 127), ("uq1.7N", 0, 254), ("Q32.30n", 1 - 2 ** 61, 2 ** 61 - 1)])
def test_narrow_parse_str_and_range(text, lo, hi):
    fmt = QFormat.parse(text)
    assert fmt.narrow and (fmt.raw_min, fmt.raw_max) == (lo, hi) == narrow_range(fmt)
    assert QFormat.parse(str(fmt)) == fmt and str(fmt).endswith("n")
    assert fmt != QFormat(fmt.int_bits, fmt.frac_bits, fmt.signed) and fmt.min_value == lo * fmt.lsb


def test_existing_format_strings_are_unchanged():
    for text in ("Q1.7", "UQ8.0", "Q-2.10", "Q12.-4", "Q62.0"):
        fmt = QFormat.parse(text)
        assert str(fmt) == text and not fmt.narrow
    assert QFormat(1, 7).raw_min == -128


@pytest.mark.parametrize("fmt, needle", [(dict(int_bits=1, frac_bits=0, narrow=True), "width 1 < 2"),
                                         (dict(int_bits=0, frac_bits=1, signed=False, narrow=True), "UQ0.1n")])
def test_width_one_narrow_is_refused(fmt, needle):
    with pytest.raises(FxpsimError, match=needle):
        QFormat(**fmt)


def test_wrap_into_a_narrow_format_is_refused():
    with pytest.raises(FxpsimError, match="wrap into the narrow format Q1.7n"):
        quantize([1.0], "Q1.7n", overflow="wrap")
    with pytest.raises(FxpsimError, match=r"layer l: output_overflow='wrap' into the narrow fmt_y Q4.4n"):
        LayerConfig("l", "Q1.7n", "UQ1.7n", "Q4.4n", 16, output_overflow="wrap")


def test_narrow_config_json_round_trip():
    cfg = NetworkConfig((LayerConfig("fc1", "Q1.7n", "UQ1.7", "Q4.4n", 16, "clip"),
                         LayerConfig("fc2", "Q-1.9", "Q4.4n", "Q8.8", 20)))
    back = NetworkConfig.from_json(cfg.to_json())
    assert back == cfg and back[0].fmt_w.narrow and '"Q1.7n"' in cfg.to_json()


# --------------------------------------------------------------------------- against the twins

def _round(q: Fraction, rounding: Rounding) -> int:
    floor = q.numerator // q.denominator
    rem = q - floor
    if rounding is Rounding.FLOOR:
        return floor
    if rounding is Rounding.TOWARD_ZERO:
        return floor + (rem != 0 and q < 0)
    if rounding is Rounding.NEAREST:
        return floor + (rem > Fraction(1, 2) or (rem == Fraction(1, 2) and q >= 0))
    return floor + (rem > Fraction(1, 2) or (rem == Fraction(1, 2) and floor % 2 == 1))


@given(fmt=narrow_fmt_st, rounding=deterministic_rounding_st,
       values=st.lists(st.floats(-1e20, 1e20, allow_nan=False), min_size=1, max_size=10))
def test_quantize_saturates_to_the_symmetric_range(fmt, rounding, values):
    lo, hi = narrow_range(fmt)
    edges = [fmt.min_value - fmt.lsb, fmt.min_value, fmt.max_value + fmt.lsb]  # the code a wide format has
    values = values + edges
    want = [max(lo, min(hi, _round(Fraction(v) * Fraction(2) ** fmt.frac_bits, rounding))) for v in values]
    assert quantize(values, fmt, rounding).tolist() == want


@given(src=qformat_st(1, 30), dst=qformat_st(2, 30).map(narrow), rounding=deterministic_rounding_st, data=st.data())
def test_convert_and_saturate_to_narrow_match_the_twins(src, dst, rounding, data):
    v = data.draw(raw_array_st(src, (data.draw(st.integers(1, 12)),)))
    lo, hi = narrow_range(dst)
    s = src.frac_bits - dst.frac_bits
    want = [max(lo, min(hi, _round(Fraction(int(a)) / Fraction(2) ** s, rounding))) for a in v]
    assert convert(v, src, dst, rounding).tolist() == want == twin.convert(v, src, dst, rounding, 0)
    assert saturate_raw(v, dst).tolist() == [max(lo, min(hi, int(a))) for a in v]


@given(data=st.data(), cfg=tp.layer_config_st().map(narrowed), relu=st.booleans(), seed=tp.seed_st)
def test_dense_kernel_engine_and_twin_agree_on_narrow_formats(data, cfg, relu, seed):
    """The plan's dense step and the dense engine = the Python-int twin; outputs in the narrow range."""
    m, k, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 5))
    x = data.draw(raw_array_st(cfg.fmt_x, (m, k)))
    w = data.draw(raw_array_st(cfg.fmt_w, (k, n)))
    b = data.draw(raw_array_st(cfg.fmt_bias_acc, (n,)))
    act = "relu" if relu else "none"
    tp._same_outcome(lambda: tp._run_dense(cfg, x, w, b, relu, seed),
                     lambda: reference.dense(x, w, b, cfg, activation=act, seed=seed).y)
    try:
        want = reference.dense(x, w, b, cfg, activation=act, seed=seed).y
    except FxpsimError:
        return
    np.testing.assert_array_equal(dp.dense(x, w, b, cfg, activation=act, seed=seed).y, want)
    lo, hi = narrow_range(cfg.fmt_y) if cfg.fmt_y.narrow else (cfg.fmt_y.raw_min, cfg.fmt_y.raw_max)
    assert want.min() >= lo and want.max() <= hi


def test_the_most_negative_code_is_refused_as_a_narrow_operand():
    cfg = LayerConfig("l", "Q1.7n", "Q1.7n", "Q2.14n", 20, "clip")
    with pytest.raises(FxpsimError, match=r"outside Q1.7n's range \[-127, 127\]"):
        dp.dense(np.array([[-128]]), np.array([[1]]), None, cfg)


@given(data=st.data(), cfg=tp.layer_config_st(max_x=8, max_w=6).map(narrowed), relu=st.booleans(),
       seed=tp.seed_st)
def test_conv_kernel_and_twin_agree_on_narrow_formats(data, cfg, relu, seed):
    kh = data.draw(st.integers(1, 3))
    h, wd = data.draw(st.integers(kh, 5)), data.draw(st.integers(kh, 5))
    x = data.draw(raw_array_st(cfg.fmt_x, (1, 2, h, wd)))
    w = data.draw(raw_array_st(cfg.fmt_w, (2, 2, kh, kh)))
    b = data.draw(raw_array_st(cfg.fmt_bias_acc, (2,)))
    act = "relu" if relu else "none"
    tp._same_outcome(lambda: tp._run_conv(cfg, x, w, b, relu, seed, 1, 1),
                     lambda: reference.conv2d(x, w, b, cfg, stride=1, padding=1, activation=act, seed=seed).y)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
@given(data=st.data(), seed=st.integers(0, 2**63 - 1))
def test_plan_equals_simulate_on_narrow_configs(name, data, seed):
    """Simulator.simulate (weights, inputs and conversions saturated to narrow formats) = the plan."""
    sim = Simulator(tp.MODEL[name], seed=seed)
    config = data.draw(tp.network_config_st(sim.names))
    config = NetworkConfig(tuple(narrowed(c) for c in config))
    x = tp.DIGITS.x_test[data.draw(st.integers(0, 400)):][:data.draw(st.integers(1, 6))]
    tp._check_plan(sim, config, x, 64)


def test_simulated_weights_never_take_the_most_negative_code():
    sim = Simulator(tp.MODEL["digits-mlp"], seed=0)
    config = NetworkConfig(tuple(LayerConfig(n, "Q-1.3n", "UQ1.7", "Q4.4n", 24, "clip") for n in sim.names))
    res = sim.simulate(tp.DIGITS.x_test[:50], config)
    raw = np.ldexp(res.logits, 4)
    assert raw.min() >= -127 and raw.max() <= 127
    wide = NetworkConfig(tuple(replace(c, fmt_w=QFormat(-1, 3)) for c in config))
    assert not np.array_equal(sim.simulate(tp.DIGITS.x_test[:50], wide).logits, res.logits)
