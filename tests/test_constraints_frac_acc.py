"""The constraints with FL_acc != FL_w + FL_d (issue 16): worst_case_acc, the A2Q bound and the
candidates bound the terms at FL_acc (each product shifted left, or rounded right on its own)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxpsim.config import LayerConfig
from fxpsim.constraints import (a2q_l1_bound, a2q_weights, candidates, quantized_bias, quantized_weights,
                                worst_case_acc)
from fxpsim.datapath import dense as dp
from fxpsim.errors import FxpsimError
from fxpsim.qformat import QFormat

from test_constraints import _ranges, _worst_inputs, dense_layer_st

ROUNDINGS = ["floor", "nearest", "nearest-even", "toward-zero"]


def _run(x, w, b, fmt_x, fmt_w, acc_bits, d, rounding):
    """The dense engine at FL_acc = FL_w + FL_d + d with cast products and a clipping accumulator:
    (overflow_count, cast_overflows, max_abs_prefix)."""
    fl = fmt_w.frac_bits + fmt_x.frac_bits + d
    cfg = LayerConfig("fc1", fmt_w, fmt_x, QFormat(20 - fl, fl), acc_bits=acc_bits, overflow="clip",
                      frac_acc=fl, product="cast", product_rounding=rounding)
    s = dp.dense(x, w, b, cfg, prefix_stats=True).stats
    return s.overflow_count, s.cast_overflows, s.max_abs_prefix


def _worst_rows(w, fmt_x):
    """Each column's most positive and most negative inputs, and every input at the most negative
    code (the largest |x| for a signed format)."""
    return np.vstack([_worst_inputs(w, fmt_x), np.full((1, w.shape[0]), fmt_x.raw_min, np.int64)])


@settings(max_examples=40, deadline=None)
@given(dense_layer_st(max_k=32), st.integers(8, 30), st.sampled_from(["wc", "act-w", "a2q"]),
       st.integers(-6, 4), st.sampled_from(ROUNDINGS))
def test_candidates_never_overflow_at_any_frac_acc(layer, acc_bits, constraint, d, rounding):
    """FL_acc below and above the default: every candidate's worst inputs (and, for WC, the worst
    weights) neither overflow nor change a cast product, and max |prefix| <= its worst_case_acc."""
    try:
        cands = candidates(constraint, layer, acc_bits, product_shift=d)
    except FxpsimError:
        return
    for c in cands:
        fl = c.fmt_w.frac_bits + c.fmt_x.frac_bits + d
        if acc_bits - fl > 62 or c.fmt_w.width + c.fmt_x.width + d > 62:
            continue
        if constraint == "a2q":
            w, _ = a2q_weights(layer, c.fmt_w, c.fmt_x, acc_bits, product_shift=d)
        else:
            w = quantized_weights(layer, c.fmt_w)
        b = quantized_bias(layer, c.fmt_w, c.fmt_x, acc_bits, product_shift=d)
        count, casts, prefix = _run(_worst_rows(w, c.fmt_x), w, b, c.fmt_x, c.fmt_w, acc_bits, d, rounding)
        assert count == casts == 0 and prefix <= c.worst_case_acc
        if constraint == "wc":
            w_bad = np.full_like(w, c.fmt_w.raw_min)
            x_bad = np.full((1, w.shape[0]), c.fmt_x.raw_min, np.int64)
            assert _run(x_bad, w_bad, b, c.fmt_x, c.fmt_w, acc_bits, d, rounding)[:2] == (0, 0)


@settings(max_examples=60, deadline=None)
@given(dense_layer_st(max_k=32), st.integers(-6, 4), st.sampled_from(ROUNDINGS), st.booleans())
def test_worst_case_acc_bounds_every_prefix_at_frac_acc(layer, d, rounding, actual):
    fmt_w, fmt_x = QFormat(2, 5), QFormat(3, 4)
    w = quantized_weights(layer, fmt_w)
    b = quantized_bias(layer, fmt_w, fmt_x, 62, product_shift=d)
    prefix = _run(_worst_rows(w, fmt_x), w, b, fmt_x, fmt_w, 62, d, rounding)[2]
    assert prefix <= worst_case_acc(layer, fmt_w, fmt_x, 62, actual, product_shift=d)


def test_the_default_formula_fails_off_the_default_frac_acc():
    """The bound of before (L1 x max|x| + |b| at FL_w + FL_d) is 4x too small with FL_acc two bits
    above: one weight 1.0 (raw 32 in Q2.5) against x = -8 (raw -128 in Q4.4) gives a term of
    4096 << 2 = 16384. Below, nearest rounding of many small products: 64 weights of raw
    65 against x raw -1, seven bits below: each -65 / 128 rounds (nearest) to -1, 64 in all, where
    L1 x max|x| / 2**7 rounded up is 33: the bound takes each product's rounding on its own."""
    layer = _ranges("fc1", np.ones((1, 1)), np.zeros(1), "dense", 8.0, 8.0)
    fmt_w, fmt_x = QFormat(2, 5), QFormat(4, 4)
    w, b = quantized_weights(layer, fmt_w), quantized_bias(layer, fmt_w, fmt_x, 40, product_shift=2)
    prefix = _run(_worst_rows(w, fmt_x), w, b, fmt_x, fmt_w, 40, 2, "floor")[2]
    assert prefix == 16384 == worst_case_acc(layer, fmt_w, fmt_x, 40, True, product_shift=2)
    assert worst_case_acc(layer, fmt_w, fmt_x, 40, True) == 4096 < prefix  # the old formula
    many = _ranges("fc1", np.full((64, 1), 65 / 32), np.zeros(1), "dense", 1.0, 130.0)
    fmt_w, fmt_x = QFormat(4, 5), QFormat(1, 0)  # w raw 65, x raw -1..0
    w = quantized_weights(many, fmt_w)
    prefix = _run(_worst_rows(w, fmt_x), w, np.zeros(1, np.int64), fmt_x, fmt_w, 40, -7, "nearest")[2]
    # each product -65 / 2**7 = -0.508 -> -1 (nearest): 64 in all, the per-product bound exactly
    assert prefix == 64 == worst_case_acc(many, fmt_w, fmt_x, 40, True, product_shift=-7)
    assert -(-(int(np.abs(w).sum()) * 1) >> 7) == 33 < prefix  # ceil(L1 x_max / 2**7) would not bound it


@pytest.mark.parametrize("d", [-3, 0, 2])
def test_a2q_bound_at_frac_acc(d):
    """The A2Q L1 bound shrinks with FL_acc above (x_max << d) and, below, leaves room for each of
    K products to round up by one LSB: L1 x_max + K (2**s - 1) <= room 2**s."""
    fmt_x = QFormat(4, 4)  # x_max 128
    room = (1 << 15) - 1 - 100
    got = int(a2q_l1_bound(np.array([100]), fmt_x, 16, d, fan_in=10)[0])
    want = room // (128 << d) if d >= 0 else (room * 8 - 10 * 7) // 128
    assert got == want
