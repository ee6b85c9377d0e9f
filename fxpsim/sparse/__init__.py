"""Sparse storage and compression (Han et al.: pruning, Deep Compression, EIE, ESE).

One module per concept: :mod:`.pe` (EIE matrix orientation, rows interleaved
over PEs, cycle models), :mod:`.prune` (magnitude and load-balance-aware
pruning), :mod:`.csc` (CSC with relative indices per PE, storage in bits),
:mod:`.kernel` (the sparse integer datapath), :mod:`.sharing` (k-means weight
sharing), :mod:`.huffman`, :mod:`.lowrank` (truncated SVD). Network level (import them
directly; they pull in the trainer): :mod:`.retrain` (iterative pruning with
retraining, sensitivity, weight-sharing fine-tune) and :mod:`.pipeline`
(Deep Compression's stages counted in bits per layer, PE cycles) and :mod:`.netsim`
(a whole pruned network on the sparse datapath, bit-identical to the dense simulation).
"""

from .csc import CSCEncoding, CSCStorage, decode, encode, storage
from .huffman import HuffmanCode, huffman_code
from .kernel import PEStats, SparseResult, column_schedule, sparse_conv2d, sparse_dense
from .lowrank import LowRank, multiplications, truncated_svd
from .pe import eie_matrix, layer_weights, load_imbalance, pe_nonzeros
from .prune import apply_mask, load_balanced_mask, mask_sparsity, sparsity_mask, threshold_mask
from .sharing import SharedWeights, centroid_gradients, compression_rate, kmeans_share

__all__ = [
    "CSCEncoding", "CSCStorage", "HuffmanCode", "LowRank", "PEStats", "SharedWeights", "SparseResult",
    "apply_mask", "centroid_gradients", "column_schedule", "compression_rate", "decode", "eie_matrix",
    "encode", "huffman_code", "kmeans_share", "layer_weights", "load_balanced_mask", "load_imbalance",
    "mask_sparsity", "multiplications", "pe_nonzeros", "sparse_conv2d", "sparse_dense", "sparsity_mask",
    "storage", "threshold_mask", "truncated_svd",
]
