"""The EIE sparse engine == the dense engine on the pruned weights (bit-exact), and its timing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxpsim.config import LayerConfig
from fxpsim.datapath import reference
from fxpsim.datapath.dense import conv2d, dense
from fxpsim.datapath.reference import saturate, wrap
from fxpsim.datapath.sparse import eie_dense
from fxpsim.errors import FxpsimError
from fxpsim.qformat import QFormat
from fxpsim.sparse.csc import encode
from fxpsim.sparse.kernel import column_schedule, sparse_conv2d, sparse_dense
from fxpsim.sparse.pe import eie_matrix
from fxpsim.sparse.prune import load_balanced_mask
from strategies import sparse_dense_case_st

Q8 = QFormat(1, 7)


def _sparse(x, w, b, cfg, n_pes=4, index_bits=4, engine="auto"):
    return sparse_dense(x, encode(eie_matrix(w), n_pes, index_bits), b, engine=engine, **cfg)


@pytest.mark.parametrize("acc_bits, overflow", [(16, "clip"), (16, "wrap"), (30, "clip"), (30, "wrap"),
                                               (60, "wrap"), (60, "clip")])
@pytest.mark.parametrize("engine", ["vector", "lanes"])
def test_engines_float32_float64_int64(acc_bits, overflow, engine):
    """BW 16 runs float32 lanes, 30 float64 lanes; 28-bit operands at BW 60 reach 2**53:
    only the int64 vector engine is exact there."""
    bits = 28 if acc_bits == 60 else 16
    rng = np.random.default_rng(acc_bits)
    fmt = QFormat(1, bits - 1)
    w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (50, 7)) * (rng.random((50, 7)) < 0.4)
    x = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (70, 50)) * (rng.random((70, 50)) < 0.5)
    b = rng.integers(-(1 << 12), 1 << 12, 7)
    cfg = dict(fmt_x=fmt, fmt_w=fmt, fmt_y=QFormat(4, 12), acc_bits=acc_bits, overflow=overflow,
               rounding="nearest", activation="relu")
    if engine == "lanes" and acc_bits == 60:
        with pytest.raises(FxpsimError, match="not exact"):
            _sparse(x, w, b, cfg, 3, 2, engine="lanes")
        return
    res = _sparse(x, w, b, cfg, 3, 2, engine=engine)
    _assert_same(res, dense(x, w, b, **cfg))
    assert (res.stats.overflow_count > 0) == (acc_bits < 60)


def _assert_same(sp, de):
    np.testing.assert_array_equal(sp.y, de.y)
    np.testing.assert_array_equal(sp.acc, de.acc)
    assert (sp.stats.overflow_count, sp.stats.outputs_affected, sp.stats.max_abs_acc) == \
        (de.stats.overflow_count, de.stats.outputs_affected, de.stats.max_abs_acc)


@given(sparse_dense_case_st())
def test_equals_dense_datapath(case):
    x, w, b, cfg, n_pes, index_bits = case
    de = dense(x, w, b, **cfg)
    vec = _sparse(x, w, b, cfg, n_pes, index_bits, engine="vector")
    _assert_same(vec, de)
    auto = _sparse(x, w, b, cfg, n_pes, index_bits, engine="auto")  # int lanes, else float lanes
    _assert_same(auto, de)
    # additions: exactly the non-zero weight x non-zero activation products; same timing
    assert vec.stats.additions == int(((x != 0).astype(np.int64) @ (w != 0).astype(np.int64)).sum())
    assert vec.stats.additions == auto.stats.additions
    np.testing.assert_array_equal(vec.pe.entries, auto.pe.entries)
    assert (vec.pe.queued_cycles, vec.pe.lockstep_cycles) == (auto.pe.queued_cycles, auto.pe.lockstep_cycles)


@settings(max_examples=40)
@given(sparse_dense_case_st())
def test_equals_python_int_reference(case):
    x, w, b, cfg, n_pes, index_bits = case
    _assert_same(_sparse(x, w, b, cfg, n_pes, index_bits, engine="vector"), reference.dense(x, w, b, **cfg))
    _assert_same(_sparse(x, w, b, cfg, n_pes, index_bits, engine="auto"), reference.dense(x, w, b, **cfg))


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
@pytest.mark.parametrize("acc_bits", [8, 9, 16])
def test_saturating_order_dependent_case(overflow, acc_bits):
    """Clip depends on the order; the sparse path keeps the dense k order (and wrap agrees too)."""
    rng = np.random.default_rng(acc_bits)
    w = rng.integers(-128, 128, (64, 10)) * (rng.random((64, 10)) < 0.3)
    x = rng.integers(0, 128, (6, 64)) * (rng.random((6, 64)) < 0.5)
    cfg = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=acc_bits, overflow=overflow, activation="relu")
    de = dense(x, w, None, **cfg)
    assert de.stats.overflow_count > 0  # the case really saturates/wraps
    for engine in ("vector", "lanes") + (("int",) if acc_bits == 16 else ()):  # int: products in range
        _assert_same(_sparse(x, w, None, cfg, 3, 2, engine=engine), de)
    if overflow == "clip":  # the same additions in reversed k order give other results
        rev = dense(x[:, ::-1], w[::-1], None, **cfg)
        assert not np.array_equal(rev.acc, de.acc)


@pytest.mark.parametrize("bits", range(1, 11))
def test_adding_zero_never_overflows(bits):
    """The lemma the skipping rests on: for every in-range acc, wrap(acc + 0) = clip(acc + 0) = acc."""
    acc = np.arange(-(1 << (bits - 1)), 1 << (bits - 1))
    assert all(wrap(int(a) + 0, bits) == a and saturate(int(a) + 0, bits) == a for a in acc)


@given(st.lists(st.integers(-300, 300), min_size=1, max_size=30), st.integers(2, 10),
       st.lists(st.integers(0, 30), max_size=10))
def test_zero_terms_do_not_change_a_saturating_chain(terms, bits, zeros_at):
    """Inserting zero products anywhere into a clip chain changes neither result nor overflow count."""
    def chain(ts):
        a, n = 0, 0
        for t in ts:
            s = saturate(a + t, bits)
            n += s != a + t
            a = s
        return a, n
    padded = list(terms)
    for i in sorted(zeros_at, reverse=True):
        padded.insert(min(i, len(padded)), 0)
    assert chain(padded) == chain(terms)


def test_lecture_load_balance_example_cycles():
    """ESE (lecture notes): PEs with 5/2/4/1 cycles -> 5 overall; balanced 3/3/3/3 -> 3."""
    n_pes, k = 4, 8
    m = np.zeros((n_pes, k))  # EIE matrix: row p belongs to PE p
    for p, n in enumerate([5, 2, 4, 1]):
        m[p, :n] = np.arange(n, 0, -1) + 1
    m[1, 2:5] = m[3, 1:4] = 0.5  # small weights that balanced pruning keeps instead
    x = np.ones((1, k), np.int64)
    cfg = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=24)
    unbal = np.where(np.abs(m) >= 1, m, 0)
    res = sparse_dense(x, encode(np.round(unbal * 10).astype(np.int64), n_pes, 4), None, **cfg)
    assert res.pe.entries.tolist() == [5, 2, 4, 1] and res.pe.total_cycles == 5
    bal = load_balanced_mask(m, 1 - 12 / m.size, n_pes)
    enc = encode(np.round(np.where(bal, m, 0) * 10).astype(np.int64), n_pes, 4)
    res = sparse_dense(x, enc, None, **cfg)
    assert res.pe.entries.tolist() == [3, 3, 3, 3] and res.pe.total_cycles == 3
    assert res.pe.load_imbalance == 1.0 and res.pe.lockstep_cycles >= res.pe.queued_cycles


def test_timing_counts_padding_and_skips_zero_activations():
    m = np.zeros((5, 3), np.int64)  # EIE matrix: 5 outputs, 3 inputs, one PE
    m[4, 0], m[4, 2] = 5, 7  # 4 zeros above each: with 1-bit indices (gap <= 1) 2 paddings each
    enc = encode(m, 1, 1)
    assert enc.n_padding == 4 and enc.values.tolist() == [0, 0, 5, 0, 0, 7]
    x = np.array([[1, 1, 0], [0, 0, 2]])  # vector 0 uses columns 0, 1; vector 1 column 2
    for engine in ("lanes", "vector"):
        res = sparse_dense(x, enc, None, fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=16, engine=engine)
        assert res.pe.entries.tolist() == [3 + 3] and res.pe.padding.tolist() == [2 + 2]
    assert res.pe.entries.tolist() == [3 + 3] and res.pe.padding.tolist() == [2 + 2]
    assert res.pe.queued_cycles == 6 and res.stats.additions == 2
    np.testing.assert_array_equal(res.acc, [[0, 0, 0, 0, 5], [0, 0, 0, 0, 14]])
    sched = column_schedule(enc)
    assert sched.entries[:, 0].tolist() == [3, 0, 3] and sched.padding[:, 0].tolist() == [2, 0, 2]


def test_relu_and_requantize_shift_left():
    w = np.array([[3], [-2]])
    x = np.array([[1, 2], [2, 1]])
    cfg = dict(fmt_x=QFormat(8, 0), fmt_w=QFormat(8, 0), fmt_y=QFormat(8, 2), acc_bits=16)
    for act in ("none", "relu"):
        _assert_same(_sparse(x, w, None, dict(cfg, activation=act)), dense(x, w, None, activation=act, **cfg))


@pytest.mark.parametrize("kwargs, match", [
    (dict(acc_bits=0), "acc_bits"),
    (dict(overflow="saturate"), "overflow"),
    (dict(activation="tanh"), "activation"),
    (dict(rounding="stochastic"), "seed"),
    (dict(engine="gpu"), "engine"),
])
def test_bad_input_one_line(kwargs, match):
    cfg = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=16)
    cfg.update(kwargs)
    enc = encode(np.eye(3, dtype=np.int64), 2, 4)
    with pytest.raises(FxpsimError, match=match) as info:
        sparse_dense(np.ones((1, 3), np.int64), enc, None, **cfg)
    assert "\n" not in str(info.value)


def test_shape_and_range_errors():
    enc = encode(np.eye(3, dtype=np.int64), 2, 4)
    cfg = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=16)
    with pytest.raises(FxpsimError, match="inputs"):
        sparse_dense(np.ones((1, 4), np.int64), enc, None, **cfg)
    with pytest.raises(FxpsimError, match="outside"):
        sparse_dense(np.full((1, 3), 500), enc, None, **cfg)
    with pytest.raises(FxpsimError, match="range"):
        sparse_dense(np.ones((1, 3), np.int64), enc, np.array([1 << 20, 0, 0]), **cfg)


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
def test_int_engine_equals_float_lanes_and_reference(overflow):
    """The integer-lane engine: same values, statistics and timing as the float lanes."""
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, (70, 9)) * (rng.random((70, 9)) < 0.4)
    x = rng.integers(0, 128, (130, 70)) * (rng.random((130, 70)) < 0.3)
    b = rng.integers(-2000, 2000, 9)
    cfg = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=16, overflow=overflow, activation="relu")
    ints = _sparse(x, w, b, cfg, 4, 3, engine="int")
    assert ints.stats.overflow_count > 0
    floats = _sparse(x, w, b, cfg, 4, 3, engine="lanes")
    _assert_same(ints, floats)
    _assert_same(ints, reference.dense(x, w, b, **cfg))
    np.testing.assert_array_equal(ints.pe.entries, floats.pe.entries)
    assert (ints.pe.queued_cycles, ints.pe.lockstep_cycles) == (floats.pe.queued_cycles,
                                                                floats.pe.lockstep_cycles)


# ----------------------------------------------------------------- one core: config, checks, stochastic bits

def test_cfg_form_equals_keyword_form_and_schedule_entry():
    rng = np.random.default_rng(8)
    w = rng.integers(-128, 128, (30, 6)) * (rng.random((30, 6)) < 0.4)
    x = rng.integers(0, 128, (20, 30)) * (rng.random((20, 30)) < 0.5)
    kw = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=QFormat(1, 3), acc_bits=12, overflow="clip", rounding="floor")
    cfg = LayerConfig("fc1", fmt_w=Q8, fmt_x=Q8, fmt_y=QFormat(1, 3), acc_bits=12, overflow="clip",
                      rounding="floor")
    enc = encode(eie_matrix(w), 3, 2)
    by_kw = sparse_dense(x, enc, None, **kw)
    by_cfg = sparse_dense(x, enc, None, cfg)
    by_schedule = eie_dense(x, column_schedule(enc), None, cfg)
    for res in (by_cfg, by_schedule):
        _assert_same(res, by_kw)
        np.testing.assert_array_equal(res.pe.entries, by_kw.pe.entries)
    _assert_same(by_cfg, dense(x, w, None, cfg))
    assert by_cfg.stats.overflow_count > 0


@pytest.mark.parametrize("engine", ["vector", "lanes", "int"])
@pytest.mark.parametrize("shift_bits", [3, 0, -2])
def test_stochastic_rounding_draws_the_dense_engines_bits(engine, shift_bits):
    """Every engine draws the core's counter-based bits per output index (DESIGN.md)."""
    rng = np.random.default_rng(9)
    w = rng.integers(-128, 128, (40, 7)) * (rng.random((40, 7)) < 0.5)
    x = rng.integers(0, 128, (300, 40)) * (rng.random((300, 40)) < 0.5)
    cfg = LayerConfig("fc1", fmt_w=Q8, fmt_x=Q8, fmt_y=QFormat(8, 14 - shift_bits), acc_bits=16,
                      overflow="wrap", rounding="stochastic")
    de = dense(x, w, None, cfg, seed=5, activation="relu")
    sp = _sparse(x, w, None, dict(cfg=cfg, seed=5, activation="relu"), 4, 3, engine=engine)
    _assert_same(sp, de)
    _assert_same(sp, reference.dense(x, w, None, cfg, seed=5, activation="relu"))
    if shift_bits > 0:
        assert not np.array_equal(dense(x, w, None, cfg, seed=6, activation="relu").y, de.y)


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1)])
def test_sparse_conv_stochastic_rounding_equals_the_dense_conv(stride, padding):
    """The conv path requantizes in the (B, F, OH, OW) layout, so its draws are the dense
    conv's (it used to refuse stochastic rounding: its draw followed the im2col layout)."""
    rng = np.random.default_rng(stride)
    w = rng.integers(-32, 32, (5, 3, 3, 3)) * (rng.random((5, 3, 3, 3)) < 0.4)
    x = rng.integers(-32, 32, (3, 3, 8, 8)) * (rng.random((3, 3, 8, 8)) < 0.6)
    cfg = LayerConfig("conv1", fmt_w=QFormat(1, 5), fmt_x=QFormat(1, 5), fmt_y=QFormat(3, 4), acc_bits=12,
                      overflow="clip", rounding="stochastic")
    de = conv2d(x, w, None, cfg, stride=stride, padding=padding, seed=2)
    sp = sparse_conv2d(x, encode(eie_matrix(w), 2, 2), None, cfg, kernel_size=3, stride=stride,
                       padding=padding, seed=2)
    np.testing.assert_array_equal(sp.y, de.y)
    np.testing.assert_array_equal(sp.acc, de.acc)
    assert sp.stats.overflow_count == de.stats.overflow_count > 0


def test_ideal_bias_takes_the_full_width_of_fmt_bias():
    """As the dense engine: an ideal accumulator's bias is a MAX_WIDTH-bit value."""
    w = np.array([[3, 0], [0, -2], [1, 1]])
    x = np.array([[1, 2, 3], [0, 0, 5]])
    b = np.array([2**50, -(2**50)])
    cfg = LayerConfig("fc1", fmt_w=Q8, fmt_x=Q8, fmt_y=QFormat(62, 0), acc_bits=8, overflow="ideal")
    for engine in ("vector", "lanes", "auto"):  # |values| < 2**53: float64 lanes are exact
        _assert_same(_sparse(x, w, b, dict(cfg=cfg), 2, 2, engine=engine), dense(x, w, b, cfg))
