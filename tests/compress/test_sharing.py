"""k-means weight sharing, centroid fine-tuning and the compression rate (Deep Compression)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.errors import FxpsimError
from fxpsim.compress.sharing import (SharedWeights, centroid_gradients, compression_rate, fine_tune_step,
                                     index_bits, init_centroids, kmeans_share)


def test_compression_rate_paper_example():
    """Deep Compression Sec. 3: 16 weights of 32 bits, 4 clusters -> 16*32 / (4*32 + 2*16) = 3.2."""
    assert compression_rate(16, 32, 4) == pytest.approx(3.2)
    assert index_bits(4) == 2 and index_bits(16) == 4 and index_bits(17) == 5 and index_bits(2) == 1


def test_initialisations():
    v = np.array([-2.0, -0.1, 0.05, 0.1, 0.2, 3.0])
    np.testing.assert_allclose(init_centroids(v, 3, "linear"), [-2.0, 0.5, 3.0])
    np.testing.assert_allclose(init_centroids(v, 3, "density"), np.quantile(v, [1 / 6, 1 / 2, 5 / 6]))
    f1, f2 = init_centroids(v, 4, "forgy", seed=3), init_centroids(v, 4, "forgy", seed=3)
    np.testing.assert_array_equal(f1, f2)
    assert len(set(f1)) == 4 and set(f1) <= set(v)


@given(st.integers(0, 2**32 - 1), st.sampled_from(["linear", "density", "forgy"]), st.integers(2, 16))
def test_kmeans_is_a_fixed_point_of_lloyd(seed, init, k):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(20, 15)) * (rng.random((20, 15)) < 0.6)
    sw = kmeans_share(w, min(k, int((w != 0).sum())), init, seed=seed)
    assert np.all(sw.labels[w == 0] == -1) and np.all(sw.labels[w != 0] >= 0)
    v, lab = w[w != 0], sw.labels[w != 0]
    assert np.all(np.diff(sw.centroids) >= 0)
    # every weight sits at its nearest centroid, every used centroid is its cluster's mean
    dist = np.abs(v[:, None] - sw.centroids[None, :])
    np.testing.assert_allclose(dist[np.arange(v.size), lab], dist.min(axis=1))
    for c in np.unique(lab):
        assert sw.centroids[c] == pytest.approx(v[lab == c].mean())
    shared = sw.weights()
    assert np.all(shared[w == 0] == 0) and len(np.unique(shared[w != 0])) <= sw.k


def test_linear_init_keeps_large_weights_better():
    """Han: linear init keeps the few large weights, density-based init pulls them in."""
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.normal(0, 0.05, 2000), [1.0, -1.0, 0.9]])
    big = np.abs(w) > 0.8
    err = {i: np.abs(kmeans_share(w, 4, i).weights() - w)[big].max() for i in ("linear", "density")}
    assert err["linear"] < err["density"]


def test_centroid_gradients_sum_each_cluster():
    labels = np.array([[3, 0, 2, 1], [1, 1, 0, 3], [0, 3, 1, 0], [3, 1, 2, 2]])  # Deep Compression Fig. 3
    grad = np.arange(16, dtype=float).reshape(4, 4) / 10
    g = centroid_gradients(grad, labels, 4)
    np.testing.assert_allclose(g, [sum(grad[labels == c]) for c in range(4)])
    sw = SharedWeights(np.array([-1.0, 0.0, 1.5, 2.0]), labels, 1)
    np.testing.assert_allclose(fine_tune_step(sw, grad, 0.5).centroids, sw.centroids - 0.5 * g)
    masked = labels.copy()
    masked[0, 0] = -1  # a pruned weight: its gradient does not move any centroid
    assert centroid_gradients(grad, masked, 4)[3] == pytest.approx(g[3] - grad[0, 0])


@pytest.mark.parametrize("k", [1, 0, 7, 2.5])
def test_bad_cluster_count(k):
    w = np.array([0.0, 1.0, 2.0, 0.0, 3.0, 4.0, -1.0])  # 5 non-zeros
    with pytest.raises(FxpsimError, match="clusters") as info:
        kmeans_share(w, k)
    assert "\n" not in str(info.value)


def test_bad_init_and_missing_seed():
    with pytest.raises(FxpsimError, match="init"):
        kmeans_share(np.arange(1.0, 6.0), 2, "kmeans++")
    with pytest.raises(FxpsimError, match="seed"):
        kmeans_share(np.arange(1.0, 6.0), 2, "forgy")
