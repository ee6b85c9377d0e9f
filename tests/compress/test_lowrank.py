"""Truncated SVD of an FC layer: best rank-k error and the notes' multiplication count."""

import numpy as np
import pytest

from fxpsim.errors import FxpsimError
from fxpsim.compress.lowrank import multiplications, truncated_svd


def test_lecture_multiplication_count():
    """Notes: M = 100, N = 20: M^2 = 10000 -> 2MN + N^2 = 4400 (56 % fewer)."""
    assert multiplications(100, 100) == 10000 and multiplications(100, 100, 20) == 4400
    assert 1 - 4400 / 10000 == pytest.approx(0.56)


def test_reconstruction_error_is_the_dropped_singular_values():
    w = np.random.default_rng(0).normal(size=(30, 12))  # Dense (K, N)
    s = np.linalg.svd(w, compute_uv=False)
    for k in (1, 5, 12):
        lr = truncated_svd(w, k)
        assert lr.rank == k and lr.u.shape == (30, k) and lr.vt.shape == (k, 12)
        err = np.linalg.norm(w - lr.reconstruct())
        assert err == pytest.approx(np.sqrt((s[k:] ** 2).sum()), abs=1e-9)
    np.testing.assert_allclose(truncated_svd(w, 12).reconstruct(), w, atol=1e-12)


@pytest.mark.parametrize("w, rank", [(np.ones((3, 4)), 0), (np.ones((3, 4)), 4), (np.ones((2, 2, 2, 2)), 1)])
def test_bad_input(w, rank):
    with pytest.raises(FxpsimError) as info:
        truncated_svd(w, rank)
    assert "\n" not in str(info.value)
