"""Window geometry: the conv/pool output size and pooling folds against window reductions."""

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.graph.geometry import conv_out_size, pool_reduce


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),
       st.integers(3, 9), st.integers(3, 9), st.integers(0, 2**32 - 1))
def test_pool_reduce_equals_window_reductions(b, c, k, stride, h, w, seed):
    """Max and sum over k x k windows at any stride, incl. overlapping and ragged edges."""
    x = np.random.default_rng(seed).integers(-2**40, 2**40, (b, c, h, w))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    np.testing.assert_array_equal(pool_reduce(x, k, stride, np.maximum), win.max(axis=(-2, -1)))
    np.testing.assert_array_equal(pool_reduce(x, k, stride, np.add), win.sum(axis=(-2, -1)))


def test_conv_out_size_counts_the_windows_that_fit():
    """``(size + 2p - k) // s + 1`` = the number of window starts ``s i`` with ``s i + k <= size + 2p``."""
    for size, k, stride, padding in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(3)):
        fits = sum(1 for start in range(0, size + 2 * padding, stride) if start + k <= size + 2 * padding)
        assert max(conv_out_size(size, k, stride, padding), 0) == fits, (size, k, stride, padding)
        if padding == 0 and fits:
            x = np.zeros((1, 1, size, size))
            assert pool_reduce(x, k, stride, np.add).shape == (1, 1, fits, fits)
