"""Low-rank approximation by truncated SVD: moved to :mod:`fxpsim.compress.lowrank` (old path)."""

from ..compress.lowrank import LowRank, multiplications, truncated_svd

__all__ = ["LowRank", "multiplications", "truncated_svd"]
