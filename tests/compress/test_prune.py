"""Magnitude pruning (Han 2015), target sparsity, masks, load-balance-aware pruning (ESE)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.errors import FxpsimError
from fxpsim.sparse.pe import (eie_matrix, load_imbalance, lockstep_cycles, pe_nonzeros,
                              queued_cycles)
from fxpsim.compress.prune import apply_mask, mask_sparsity, sparsity_mask, threshold_mask
from fxpsim.sparse.prune import load_balanced_mask


def test_threshold_is_quality_times_std():
    w = np.array([[0.1, -0.5, 2.0], [-3.0, 0.05, 1.0]])
    mask = threshold_mask(w, 0.5)
    thr = 0.5 * w.std()
    np.testing.assert_array_equal(mask, np.abs(w) >= thr)
    assert threshold_mask(w, 0.0).all()


def test_iterative_pruning_never_revives():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(30, 20))
    mask = None
    prev = np.ones(w.shape, bool)
    for q in (0.5, 1.0, 1.5):  # growing quality parameter, as in Han's iterations
        mask = threshold_mask(w + rng.normal(scale=0.1, size=w.shape) * prev, q, mask)  # "retrained"
        assert not np.any(mask & ~prev)
        prev = mask
    assert mask_sparsity(mask) > 0.5
    pruned = apply_mask(w, mask)
    assert np.all(pruned[~mask] == 0) and np.all(pruned[mask] == w[mask])


@given(st.integers(1, 30), st.integers(1, 30), st.floats(0, 0.999), st.integers(0, 2**32 - 1))
def test_target_sparsity_exact_count(rows, cols, sparsity, seed):
    w = np.random.default_rng(seed).normal(size=(rows, cols))
    mask = sparsity_mask(w, sparsity)
    assert mask.sum() == round((1 - sparsity) * w.size)
    if mask.any() and (~mask).any():  # the kept ones are the largest
        assert np.abs(w[mask]).min() >= np.abs(w[~mask]).max()


def test_lecture_load_balance_example():
    """Lecture notes (ESE): unbalanced PEs 5/2/4/1 cycles -> 5; balanced 3/3/3/3 -> 3."""
    rng = np.random.default_rng(1)
    m = rng.uniform(0.1, 0.2, size=(4, 8))  # EIE matrix, rows = outputs; row p -> PE p
    for p, n in enumerate([5, 2, 4, 1]):
        m[p, :n] = rng.uniform(1, 2, size=n)  # the 12 largest weights fall 5/2/4/1
    unbal = sparsity_mask(m, 1 - 12 / 32)
    assert pe_nonzeros(unbal, 4).tolist() == [5, 2, 4, 1] and queued_cycles([5, 2, 4, 1]) == 5
    bal = load_balanced_mask(m, 1 - 12 / 32, 4)
    assert pe_nonzeros(bal, 4).tolist() == [3, 3, 3, 3] and queued_cycles(pe_nonzeros(bal, 4)) == 3
    assert bal.sum() == unbal.sum()  # same sparsity, 5 -> 3 cycles
    assert load_imbalance([5, 2, 4, 1]) == 5 / 3 and load_imbalance([3, 3, 3, 3]) == 1.0


@given(st.integers(1, 40), st.integers(1, 20), st.integers(1, 8), st.floats(0, 0.99),
       st.integers(0, 2**32 - 1))
def test_load_balanced_equal_share(rows, cols, n_pes, sparsity, seed):
    m = np.random.default_rng(seed).normal(size=(rows, cols))
    mask = load_balanced_mask(m, sparsity, n_pes)
    per_pe = round((1 - sparsity) * m.size / n_pes)
    share = np.bincount(np.arange(rows) % n_pes, minlength=n_pes) * cols
    np.testing.assert_array_equal(pe_nonzeros(mask, n_pes), np.minimum(per_pe, share))
    for p in range(n_pes):  # within a PE, the largest weights survive
        k, d = mask[p::n_pes], m[p::n_pes]
        if k.any() and (~k).any():
            assert np.abs(d[k]).min() >= np.abs(d[~k]).max()


def test_load_balanced_respects_previous_mask_and_dense_orientation():
    w = np.random.default_rng(2).normal(size=(16, 8))  # Dense (K, N): the EIE matrix is W.T
    m = eie_matrix(w)
    first = load_balanced_mask(m, 0.5, 4)
    second = load_balanced_mask(m, 0.75, 4, first)
    assert not np.any(second & ~first) and pe_nonzeros(second, 4).tolist() == [8, 8, 8, 8]


def test_cycle_models():
    entries = np.array([[2, 0, 1], [0, 3, 1]])  # (PE, column)
    assert lockstep_cycles(entries) == 2 + 3 + 1
    assert queued_cycles(entries.sum(axis=1)) == 4


@pytest.mark.parametrize("call, match", [
    (lambda w: sparsity_mask(w, 1.0), "sparsity"),
    (lambda w: sparsity_mask(w, -0.1), "sparsity"),
    (lambda w: sparsity_mask(w, "most"), "sparsity"),
    (lambda w: load_balanced_mask(w, 0.5, 0), "n_pes"),
    (lambda w: threshold_mask(w, -1), "quality"),
    (lambda w: threshold_mask(w, 1, np.ones((2, 2), bool)), "mask"),
    (lambda w: pe_nonzeros(w, True), "n_pes"),
])
def test_bad_input_one_line(call, match):
    with pytest.raises(FxpsimError, match=match) as info:
        call(np.ones((3, 3)))
    assert "\n" not in str(info.value)
