"""Softmax cross-entropy: value and gradient, stability, label checks."""

import numpy as np
import pytest

from fxpsim.errors import FxpsimError
from fxpsim.train.losses import log_softmax, softmax, softmax_cross_entropy
from gradcheck import numeric_grad


def test_loss_grad_and_value():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    loss, dz = softmax_cross_entropy(z, y)
    naive = -np.mean(np.log(np.exp(z[np.arange(5), y]) / np.exp(z).sum(axis=1)))
    assert loss == pytest.approx(naive, rel=1e-12)
    np.testing.assert_allclose(dz, numeric_grad(lambda: softmax_cross_entropy(z, y)[0], z), rtol=1e-6, atol=1e-9)


def test_log_softmax_is_stable():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4]], dtype=np.float32)
    lp = log_softmax(z)
    assert np.isfinite(lp).all() and lp.dtype == np.float32
    np.testing.assert_allclose(lp[0], [0.0, -1e4, -2e4])
    np.testing.assert_allclose(softmax(z).sum(axis=1), 1, rtol=1e-6)
    loss, dz = softmax_cross_entropy(z, np.array([1, 2]))
    assert loss == pytest.approx((1e4 + np.log(3)) / 2) and np.isfinite(dz).all() and dz.dtype == np.float32


def test_loss_rejects_bad_labels():
    with pytest.raises(FxpsimError, match="labels outside"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(FxpsimError, match="integer class"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
