"""de Bruin's constraints: chosen formats never overflow on any input in range (worst case built)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxpsim import kernels
from fxpsim.constraints import (LayerRanges, a2q_weights, candidates, min_acc_bits, paper_sum,
                                quantized_bias, quantized_weights, worst_case_acc)
from fxpsim.errors import FxpsimError
from fxpsim.qformat import QFormat
from fxpsim.simulate import Stage


def _ranges(name, W, b, kind, max_abs_x, max_abs_acc) -> LayerRanges:
    """A layer from its weights (a Stage built from weights only) with its profiled ranges."""
    return LayerRanges(Stage(name, kind, np.asarray(W, np.float64), np.asarray(b, np.float64)), max_abs_x,
                       max_abs_acc)


@st.composite
def dense_layer_st(draw, max_k=64, max_n=6):
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.05, 0.3, 1.0, 3.0]))
    W = rng.normal(0, scale, (k, n))
    b = rng.normal(0, draw(st.sampled_from([0.0, 0.1, 1.0])), n)
    max_x = draw(st.sampled_from([0.7, 1.0, 4.0, 30.0]))
    return _ranges("fc1", W, b, "dense", max_x, float(np.abs(W).sum(0).max() * max_x + np.abs(b).max()))


def _worst_inputs(w_raw: np.ndarray, fmt_x: QFormat) -> np.ndarray:
    """Per output column, the inputs driving the sum most positive and most negative."""
    rows = []
    for col in w_raw.T:
        rows.append(np.where(col > 0, fmt_x.raw_max, fmt_x.raw_min))  # most positive
        rows.append(np.where(col > 0, fmt_x.raw_min, fmt_x.raw_max))  # most negative
    return np.array(rows, dtype=np.int64)


def _overflows(x, w, b, fmt_x, fmt_w, acc_bits):
    res = kernels.dense(x, w, b, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=QFormat(62 - 40, 40), acc_bits=acc_bits,
                        overflow="wrap", rounding="floor")
    return res.stats.overflow_count


@settings(max_examples=40)
@given(dense_layer_st(), st.integers(6, 30), st.sampled_from(["wc", "act-w", "a2q"]))
def test_bounded_constraints_never_overflow(layer, acc_bits, constraint):
    try:
        cands = candidates(constraint, layer, acc_bits)
    except FxpsimError:
        return
    for c in cands:
        fl_acc = c.fmt_w.frac_bits + c.fmt_x.frac_bits
        if acc_bits - fl_acc > 62 or c.fmt_w.width + c.fmt_x.width > 62:
            continue
        if constraint == "a2q":
            w, _ = a2q_weights(layer, c.fmt_w, c.fmt_x, acc_bits)
        else:
            w = quantized_weights(layer, c.fmt_w)
        b = quantized_bias(layer, c.fmt_w, c.fmt_x, acc_bits)
        assert _overflows(_worst_inputs(w, c.fmt_x), w, np.broadcast_to(b, (w.shape[1],)).copy(),
                          c.fmt_x, c.fmt_w, acc_bits) == 0
        if constraint == "wc":  # any weights in the format: all most-negative, against all most-negative data
            w_bad = np.full_like(w, c.fmt_w.raw_min)
            x_bad = np.full((1, w.shape[0]), c.fmt_x.raw_min, dtype=np.int64)
            assert _overflows(x_bad, w_bad, b.copy(), c.fmt_x, c.fmt_w, acc_bits) == 0


@settings(max_examples=30)
@given(dense_layer_st(), st.integers(8, 30))
def test_candidates_are_pareto_maximal(layer, acc_bits):
    for c in candidates("act-w", layer, acc_bits):
        if c.bw_d < 16:  # one more data bit would overflow
            wider = QFormat.from_width(c.bw_d + 1, c.fmt_x.int_bits)
            assert worst_case_acc(layer, c.fmt_w, wider, acc_bits, True) > (1 << (acc_bits - 1)) - 1


def test_wc_matches_paper_equation_off_the_edges():
    rng = np.random.default_rng(0)
    layer = _ranges("fc1", rng.normal(0, 0.1, (100, 4)), np.zeros(4), "dense", 0.9, 1.0)
    for acc_bits in (16, 20, 24):
        sums = {c.bw_w + c.bw_d for c in candidates("wc", layer, acc_bits)}
        assert max(sums) == paper_sum("wc", layer, acc_bits)  # K = 100, not a power of two


def test_wc_power_of_two_k_is_one_bit_safer_than_the_paper():
    layer = _ranges("fc1", np.full((64, 1), 0.01), np.zeros(1), "dense", 0.9, 1.0)
    sums = {c.bw_w + c.bw_d for c in candidates("wc", layer, 16)}
    assert max(sums) == paper_sum("wc", layer, 16) - 1


def test_act_y_uses_profiled_output_range():
    layer = _ranges("fc1", np.full((10, 2), 0.1), np.zeros(2), "dense", 1.0, 5.0)  # I_y = 4
    for c in candidates("act-y", layer, 16):
        assert c.fmt_w.frac_bits + c.fmt_x.frac_bits == 16 - 4
    wide = candidates("act-y", layer, 40)  # more than 16-bit operands can use: the widest ones
    assert wide and {(c.bw_w, c.bw_d) for c in wide} == {(16, 16)}


def test_too_narrow_accumulator_is_a_clear_error():
    layer = _ranges("conv2", np.full((6, 3, 5, 5), 0.2), np.zeros(6), "conv2d", 1.0, 10.0)
    need = min_acc_bits("wc", layer)
    assert candidates("wc", layer, need) and not candidates("wc", layer, need - 1)
    with pytest.raises(FxpsimError, match="unknown constraint"):
        candidates("best", layer, 16)


def test_solution_space_classifies_every_pair():
    from fxpsim.constraints import solution_space

    rng = np.random.default_rng(1)
    layer = _ranges("fc1", rng.normal(0, 0.2, (50, 3)), rng.normal(0, 0.1, 3), "dense", 2.0, 6.0)
    df = solution_space(layer, 16, max_bits=10)
    assert len(df) == 100
    assert (df["act_w_safe"] | ~df["wc_safe"]).all()  # worst-case safe implies actual-weights safe
    opt = df[df["act_w_optimum"]]
    assert len(opt) and opt["act_w_safe"].all()
    assert {(c.bw_w, c.bw_d) for c in candidates("act-y", layer, 16, 10)} == set(
        map(tuple, df[df["act_y"]][["bw_w", "bw_d"]].values.tolist()))


@settings(max_examples=30, deadline=None)
@given(dense_layer_st(max_k=16, max_n=4), st.integers(2, 8), st.integers(0, 6), st.integers(10, 30))
def test_unsigned_inputs_bound_the_accumulator_too(layer, x_bits, x_frac, acc_bits):
    """An unsigned fmt_x (raw_min 0) used to give a worst case of 0 and an A2Q bound divided by 0:
    the bound must hold for the largest unsigned input, checked exhaustively on the worst inputs."""
    fmt_x = QFormat(x_bits - x_frac, x_frac, signed=False)
    fmt_w = QFormat(2, 6)
    w = quantized_weights(layer, fmt_w)
    exact = int(np.abs(w).sum(0).max()) * fmt_x.raw_max
    assert worst_case_acc(layer, fmt_w, fmt_x, 62, actual_weights=True) >= exact
    assert worst_case_acc(layer, fmt_w, fmt_x, 62, actual_weights=False) >= exact
    shrunk, _ = a2q_weights(layer, fmt_w, fmt_x, acc_bits)
    x = np.where(shrunk.T > 0, fmt_x.raw_max, 0).astype(np.int64)  # each column's most positive input
    x = np.vstack([x, np.where(shrunk.T < 0, fmt_x.raw_max, 0)]).astype(np.int64)
    assert _overflows(x, shrunk, quantized_bias(layer, fmt_w, fmt_x, acc_bits), fmt_x, fmt_w, acc_bits) == 0
