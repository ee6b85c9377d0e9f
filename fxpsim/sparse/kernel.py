"""EIE's CSC encoding on the sparse engine (Han et al., ISCA 2016): decode, then run.

The engine is :mod:`fxpsim.datapath.sparse` (kernels, timing, results); it
runs a :class:`~fxpsim.datapath.sparse.ColumnSchedule`, which
:func:`column_schedule` decodes from a :class:`~fxpsim.sparse.csc.CSCEncoding`
(the relative indices into rows, per column, padding counted per PE).
:func:`sparse_dense` / :func:`sparse_conv2d` take the encoding itself (the
signatures of docs/INTERFACES.md) and are bit-exact with the dense engine.
The decoding lives here, beside the format, so that the engine does not
import :mod:`fxpsim.sparse` (whose package imports this module).
"""

from __future__ import annotations

import numpy as np

from ..config import LayerConfig
from ..datapath.sparse import ENGINES, ColumnSchedule, PEStats, SparseResult, eie_conv2d, eie_dense
from ..errors import check
from .csc import CSCEncoding, entry_columns, entry_rows

__all__ = ["ENGINES", "ColumnSchedule", "PEStats", "SparseResult", "column_schedule", "sparse_conv2d",
           "sparse_dense"]


def column_schedule(enc: CSCEncoding) -> ColumnSchedule:
    """Decode the relative indices of ``enc`` into a per-column schedule."""
    rows, cols = entry_rows(enc), entry_columns(enc)
    real = enc.values != 0
    order = np.argsort(cols[real], kind="stable")
    n_cols = enc.shape[1]
    pe = np.repeat(np.arange(enc.n_pes), enc.pe_entries)
    entries = np.zeros((n_cols, enc.n_pes), np.int64)
    np.add.at(entries, (cols, pe), 1)
    padding = np.zeros((n_cols, enc.n_pes), np.int64)
    np.add.at(padding, (cols[~real], pe[~real]), 1)
    ptr = np.zeros(n_cols + 1, np.int64)
    ptr[1:] = np.cumsum(np.bincount(cols[real], minlength=n_cols))
    return ColumnSchedule(ptr, rows[real][order], np.asarray(enc.values[real][order], np.int64),
                          entries, padding, tuple(enc.shape))


def _schedule(enc, schedule: ColumnSchedule | None) -> ColumnSchedule:
    check(isinstance(enc, CSCEncoding), "enc is not a CSCEncoding: build it with fxpsim.sparse.csc.encode")
    check(enc.values.dtype.kind in "iu", "the CSC values are not raw integers: encode the quantized weights")
    return column_schedule(enc) if schedule is None else schedule


def sparse_dense(x, enc: CSCEncoding, b=None, cfg: LayerConfig | None = None, *,
                 schedule: ColumnSchedule | None = None, **datapath) -> SparseResult:
    """A Dense layer run from its CSC/PE encoding; bit-exact with ``fxpsim.kernels.dense``.

    ``enc = encode(eie_matrix(W), n_pes, index_bits)`` of the raw pruned
    weights ``W`` (K, N) of ``fmt_w`` (the EIE matrix is ``W.T``);
    ``schedule`` (from :func:`column_schedule`) may be passed to reuse the
    decoding. ``x``, ``b``, ``cfg`` (or the keyword form) and ``datapath``
    (activation, seed, engine, lanes): :func:`fxpsim.datapath.sparse.eie_dense`.
    """
    return eie_dense(x, _schedule(enc, schedule), b, cfg, **datapath)


def sparse_conv2d(x, enc: CSCEncoding, b=None, cfg: LayerConfig | None = None, *, kernel_size: int,
                  stride: int = 1, padding: int = 0, schedule: ColumnSchedule | None = None,
                  **datapath) -> SparseResult:
    """A Conv2D run from the CSC/PE encoding of its (F, C*kh*kw) EIE matrix; bit-exact with
    ``fxpsim.kernels.conv2d``, stochastic rounding included (:func:`fxpsim.datapath.sparse.eie_conv2d`)."""
    return eie_conv2d(x, _schedule(enc, schedule), b, cfg, kernel_size=kernel_size, stride=stride,
                      padding=padding, **datapath)
