"""Low-rank approximation of a fully connected layer by truncated SVD.

``W = U S V^T``; keeping the ``k`` largest singular values gives the best
rank-k approximation in least squares (Eckart-Young). The lecture notes
count a square M x M layer replaced by M x N, N x N and N x M factors of
rank N: multiplications per input vector ``M^2 -> 2 M N + N^2`` (M = 100,
N = 20: 10000 -> 4400, 56 % fewer). For a general (m, n) matrix and rank
k the same count is ``m k + k^2 + k n`` (:func:`multiplications`); folding
the diagonal S into a factor gives ``k (m + n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check


@dataclass(frozen=True, slots=True, eq=False)
class LowRank:
    """Factors of a rank-k approximation: ``u @ diag(s) @ vt``."""

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.s.size)

    def reconstruct(self) -> np.ndarray:
        """The rank-k matrix ``U_k S_k V_k^T``."""
        return (self.u * self.s) @ self.vt


def truncated_svd(w, rank: int) -> LowRank:
    """Best rank-``rank`` approximation of the 2-D ``w`` (Dense (K, N) or any matrix)."""
    w = np.asarray(w, dtype=np.float64)
    check(w.ndim == 2, f"weights of shape {w.shape} are not a matrix: truncated SVD is for FC layers")
    check(bool(np.all(np.isfinite(w))), "weights contain NaN/inf: fix the model first")
    top = min(w.shape)
    check(isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) and 1 <= rank <= top,
          f"rank={rank!r} is outside [1, {top}] for a {w.shape[0]}x{w.shape[1]} matrix")
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return LowRank(u[:, :rank].copy(), s[:rank].copy(), vt[:rank].copy())


def multiplications(m: int, n: int, rank: int | None = None) -> int:
    """Multiplications per input vector: ``m n`` dense, ``m k + k^2 + k n`` factored (notes' count)."""
    if rank is None:
        return m * n
    return m * rank + rank * rank + rank * n
