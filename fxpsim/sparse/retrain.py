"""Network-level pruning and weight sharing with retraining: moved to :mod:`fxpsim.compress.retrain`
(iterative pruning, sensitivity) and :mod:`fxpsim.compress.finetune` (weight sharing and its fine-tune);
this old path re-exports both."""

from ..compress.finetune import SharingHook, fine_tune_shared, share_weights
from ..compress.retrain import (WEIGHTED, MaskHook, PruneConfig, iterative_prune, masks_from_zeros,
                                scale_dropout, select_layers, sensitivity, solve_quality, sparsity_of,
                                weighted_layers, weights_of)

__all__ = ["WEIGHTED", "MaskHook", "PruneConfig", "SharingHook", "fine_tune_shared", "iterative_prune",
           "masks_from_zeros", "scale_dropout", "select_layers", "sensitivity", "share_weights",
           "solve_quality", "sparsity_of", "weighted_layers", "weights_of"]
