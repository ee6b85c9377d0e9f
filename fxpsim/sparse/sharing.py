"""Weight sharing by k-means: moved to :mod:`fxpsim.compress.sharing` (old path)."""

from ..compress.sharing import (INITS, SharedWeights, centroid_gradients, check_clusters,
                                compression_rate, fine_tune_step, index_bits, init_centroids,
                                kmeans_share)

__all__ = ["INITS", "SharedWeights", "centroid_gradients", "check_clusters", "compression_rate",
           "fine_tune_step", "index_bits", "init_centroids", "kmeans_share"]
