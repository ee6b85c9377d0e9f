"""Model compression (Han et al., NIPS 2015; "Deep Compression", ICLR 2016; the lecture's low rank).

One module per concept, from the layer to the network:
:mod:`.prune` (magnitude masks: threshold = quality x std, or a target
sparsity), :mod:`.sharing` (k-means weight sharing, Eq. 1-3),
:mod:`.huffman` (canonical Huffman codes), :mod:`.lowrank` (truncated SVD).
Network level (import them directly; they pull in the trainer):
:mod:`.retrain` (iterative pruning with retraining, sensitivity) and
:mod:`.finetune` (weight sharing of a network and its centroid fine-tune).
Sizing the result in EIE's CSC storage and PE cycles is
:mod:`fxpsim.sparse.pipeline`; ESE's load-balance-aware pruning is
:func:`fxpsim.sparse.prune.load_balanced_mask`. Nothing here imports
:mod:`fxpsim.sparse`.
"""

from .huffman import HuffmanCode, huffman_code
from .lowrank import LowRank, multiplications, truncated_svd
from .prune import apply_mask, check_sparsity, mask_sparsity, sparsity_mask, threshold_mask
from .sharing import SharedWeights, centroid_gradients, compression_rate, kmeans_share

__all__ = [
    "HuffmanCode", "LowRank", "SharedWeights", "apply_mask", "centroid_gradients", "check_sparsity",
    "compression_rate", "huffman_code", "kmeans_share", "mask_sparsity", "multiplications", "sparsity_mask",
    "threshold_mask", "truncated_svd",
]
