"""EIE's CSC with relative indices per PE: exact round trip, padding, storage in bits."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.errors import FxpsimError
from fxpsim.sparse.csc import decode, encode, entry_rows, pointer_bits_for, storage
from fxpsim.sparse.pe import eie_matrix, layer_weights, pe_nonzeros
from strategies import sparse_matrix_st


@given(sparse_matrix_st(), st.integers(1, 9),
       st.integers(1, 6))
def test_round_trip_ints(m, n_pes, bits):
    enc = encode(m, n_pes, bits)
    np.testing.assert_array_equal(decode(enc), m)
    assert enc.nnz == np.count_nonzero(m)
    assert enc.pe_entries.sum() == enc.n_entries and enc.col_ptr[:, -1].tolist() == enc.pe_entries.tolist()


@given(sparse_matrix_st(max_rows=60, floats=True), st.integers(1, 5), st.sampled_from([1, 2, 4, 8, 16]))
def test_round_trip_floats_and_padding_rule(m, n_pes, bits):
    enc = encode(m, n_pes, bits)
    np.testing.assert_array_equal(decode(enc), m)
    span = 1 << bits
    assert enc.rel_index.max(initial=0) <= span - 1
    pad = enc.values == 0
    assert np.all(enc.rel_index[pad] == span - 1)  # a padding entry covers a full gap
    # padding = sum over gaps of floor(gap / 2**bits), gaps counted in each PE's column slice
    expected = 0
    for p in range(n_pes):
        for col in m[p::n_pes].T:
            rows = np.flatnonzero(col)
            gaps = np.diff(np.concatenate(([-1], rows))) - 1
            expected += int((gaps // span).sum())
    assert enc.n_padding == expected
    np.testing.assert_array_equal(pe_nonzeros(m, n_pes), enc.pe_entries - np.bincount(
        np.repeat(np.arange(n_pes), enc.pe_entries)[pad], minlength=n_pes))


def test_eie_example_gap_of_twenty():
    """Bits 4 (EIE): 20 zeros before a value -> one padding (0, z=15), then (v, z=4)."""
    col = np.zeros((22, 1), np.int64)
    col[20, 0], col[21, 0] = 3, -2
    enc = encode(col, 1, 4)
    assert enc.values.tolist() == [0, 3, -2] and enc.rel_index.tolist() == [15, 4, 0]
    assert entry_rows(enc).tolist() == [15, 20, 21]


def test_rows_interleaved_over_pes():
    m = np.zeros((6, 2), np.int64)
    m[[0, 3, 4, 5], 1] = [1, 2, 3, 4]  # rows 0, 3 -> PE 0 (local 0, 1); 4 -> PE 1 (local 2); 5 -> PE 2
    enc = encode(m, 3, 4)
    assert enc.pe_entries.tolist() == [2, 1, 1]
    assert enc.col_ptr.tolist() == [[0, 0, 2], [0, 0, 1], [0, 0, 1]]
    assert enc.rel_index.tolist() == [0, 0, 1, 1]  # PE0: local 0, 1; PE1: local 1; PE2: local 1
    with pytest.raises(ValueError):  # a frozen value: its arrays are read-only
        enc.values[0] = 9
    with pytest.raises(AttributeError):
        enc.n_pes = 4


def test_storage_bits_by_hand():
    col = np.zeros((22, 1), np.int64)
    col[20, 0], col[21, 0] = 3, -2
    enc = encode(col, 1, 4)
    s = storage(enc, value_bits=8)
    # 3 entries x (8 + 4) bits + 2 pointers x 2 bits (largest count 3 needs 2 bits)
    assert (s.entries, s.padding_entries, s.pointer_bits, s.n_pointers) == (3, 1, 2, 2)
    assert s.total_bits == 3 * 12 + 2 * 2 and s.padding_total == 12
    shared = storage(enc, value_bits=2, codebook_bits=4 * 8, pointer_bits=16)  # 4 clusters of 8 bits
    assert shared.total_bits == 3 * 6 + 2 * 16 + 32
    assert s.bits_per_nonzero == pytest.approx(40 / 2)


def test_pointer_width_rule():
    m = np.ones((8, 1), np.int64)
    assert pointer_bits_for(encode(m, 1, 4)) == 4  # 8 entries -> pointers 0..8 need 4 bits
    assert pointer_bits_for(encode(m, 8, 4)) == 1
    with pytest.raises(FxpsimError, match="address"):
        storage(encode(m, 1, 4), 8, pointer_bits=3)


def test_orientation_dense_and_conv():
    w = np.arange(12).reshape(4, 3)  # Dense (K=4 inputs, N=3 outputs)
    assert eie_matrix(w).shape == (3, 4) and eie_matrix(w)[2, 1] == w[1, 2]
    np.testing.assert_array_equal(layer_weights(eie_matrix(w), w.shape), w)
    c = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)  # (F, C, kh, kw)
    assert eie_matrix(c).shape == (2, 12)
    np.testing.assert_array_equal(layer_weights(decode(encode(eie_matrix(c), 2, 8)), c.shape), c)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_pes=0, index_bits=4), "n_pes"),
    (dict(n_pes=2, index_bits=0), "index_bits"),
    (dict(n_pes=2, index_bits=17), "index_bits"),
    (dict(n_pes=1.5, index_bits=4), "n_pes"),
])
def test_bad_input_one_line(kwargs, match):
    with pytest.raises(FxpsimError, match=match) as info:
        encode(np.eye(3), **kwargs)
    assert "\n" not in str(info.value)
