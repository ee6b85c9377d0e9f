"""ESE's load-balance-aware pruning over EIE's PEs; the magnitude masks moved to :mod:`fxpsim.compress.prune`.

The PE-agnostic masks of Han et al. (NIPS 2015) (``threshold_mask``,
``sparsity_mask``, ``apply_mask``, ``mask_sparsity``, ``check_sparsity``)
are re-exported here for the old import path. :func:`load_balanced_mask`
stays beside EIE's PE model (:mod:`.pe`): its quota is per PE, the rows
``i`` with ``i mod n_pes == p``.
"""

from __future__ import annotations

import numpy as np

from ..compress.prune import (apply_mask, check_sparsity, keep_largest, mask_sparsity, sparsity_mask,
                              threshold_mask, weights_and_mask)
from ..errors import check
from .pe import check_pes, pe_of_row

__all__ = ["apply_mask", "check_sparsity", "load_balanced_mask", "mask_sparsity", "sparsity_mask",
           "threshold_mask"]


def load_balanced_mask(m, sparsity: float, n_pes: int, mask=None) -> np.ndarray:
    """ESE's load-balance-aware pruning of the EIE matrix ``m`` (rows = outputs).

    Every PE's share (rows ``i`` with ``i mod n_pes == p``) keeps the same
    number of non-zeros, ``round((1 - sparsity) * size / n_pes)``, its
    largest-magnitude weights (fewer only if the share has fewer kept
    weights). Convert layer weights with :func:`fxpsim.sparse.pe.eie_matrix`.
    """
    m, mask = weights_and_mask(m, mask)
    check(m.ndim == 2, f"expected a 2-D EIE matrix, got shape {m.shape}: convert with eie_matrix(W)")
    s = check_sparsity(sparsity)
    n_pes = check_pes(n_pes)
    per_pe = int(round((1.0 - s) * m.size / n_pes))
    pe = pe_of_row(m.shape[0], n_pes)
    out = np.zeros(m.shape, dtype=bool)
    for p in range(n_pes):
        rows = pe == p
        sub, sub_mask = m[rows], mask[rows]
        out[rows] = keep_largest(np.where(sub_mask, np.abs(sub), -1.0), min(per_pe, int(sub_mask.sum())))
    return out
