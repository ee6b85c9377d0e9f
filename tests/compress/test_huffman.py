"""Huffman coding of cluster and relative indices: optimal lengths, prefix-free, round trip."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.errors import FxpsimError
from fxpsim.sparse.csc import encode
from fxpsim.compress.huffman import huffman_code, huffman_lengths


def test_textbook_example():
    """CLRS 16.3: a:45 b:13 c:12 d:16 e:9 f:5 -> 224 bits per 100 symbols."""
    freqs = dict(zip(range(6), [45, 13, 12, 16, 9, 5]))
    lengths = huffman_lengths(freqs)
    assert sum(freqs[s] * lengths[s] for s in freqs) == 224
    assert lengths[0] == 1 and lengths[5] == 4


@given(st.lists(st.integers(-20, 40), min_size=1, max_size=300))
def test_round_trip_prefix_free_and_bounds(data):
    data = np.array(data)
    code = huffman_code(data)
    bits = code.encode(data)
    assert bits.size == code.total_bits(data)
    np.testing.assert_array_equal(code.decode(bits, data.size), data)
    words = sorted(code.table().values())
    assert not any(b.startswith(a) for a, b in zip(words, words[1:]))  # prefix-free
    _, counts = np.unique(data, return_counts=True)
    if counts.size > 1:
        p = counts / counts.sum()
        entropy = -(p * np.log2(p)).sum()
        avg = bits.size / data.size
        assert entropy - 1e-9 <= avg < entropy + 1
        assert sum(2.0 ** -n for n in code.lengths) == pytest.approx(1.0)  # a full tree (Kraft)


def test_single_symbol_and_relative_indices():
    assert huffman_code(np.zeros(5, int)).total_bits(np.zeros(5, int)) == 5
    rng = np.random.default_rng(0)
    m = rng.normal(size=(300, 100)) * (rng.random((300, 100)) < 0.1)
    enc = encode(m, 4, 4)  # relative indices are skewed toward small gaps: Huffman beats 4 bits
    code = huffman_code(enc.rel_index)
    assert code.total_bits(enc.rel_index) < 4 * enc.n_entries
    assert math.isclose(code.total_bits(enc.rel_index), code.encode(enc.rel_index).size)


def test_bad_input():
    with pytest.raises(FxpsimError, match="integer symbols"):
        huffman_code(np.array([0.5, 1.5]))
    code = huffman_code(np.array([1, 2, 2]))
    with pytest.raises(FxpsimError, match="not built"):
        code.encode(np.array([3]))
    with pytest.raises(FxpsimError, match="ended"):
        code.decode(np.array([1], np.uint8), 3)
