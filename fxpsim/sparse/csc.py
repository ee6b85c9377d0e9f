"""EIE's compressed sparse column format with relative indices, per PE (Han et al., ISCA 2016).

The EIE matrix (rows = outputs, columns = inputs; a Dense layer's ``W.T``,
see :mod:`fxpsim.sparse.pe`) has its rows interleaved over ``n_pes`` PEs.
Each PE stores its slice of every column (its local rows ``i // n_pes``)
as entries ``(v, z)``: the value ``v`` and the relative index ``z`` = the
number of zeros since the previous stored entry of that column slice (or
since the column start). ``z`` has ``index_bits`` bits, so a gap longer
than ``2**index_bits - 1`` zeros gets padding entries ``(0, 2**index_bits
- 1)``, each standing for that many zeros plus itself (EIE: "if more than 15
zeros appear before a non-zero entry we add a zero in vector v"). Column
``j`` of PE ``p`` is entries ``col_ptr[p, j] .. col_ptr[p, j + 1] - 1`` of
that PE's arrays. Han uses 4/5-bit indices for FC layers and 8-bit for conv.

Storage (bits), :func:`storage`:

=============  =============================================================
values         (non-zeros + padding) x value_bits (the weight format's
               width, or the cluster-index bits with weight sharing)
rel. indices   (non-zeros + padding) x index_bits
pointers       n_pes x (columns + 1) x pointer_bits; pointer_bits = the
               bits to hold the largest PE's entry count,
               ``ceil(log2(max_p entries_p + 1))`` (>= 1), unless given
codebook       k x b bits with weight sharing (0 otherwise)
=============  =============================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import check
from .pe import check_pes


def check_index_bits(index_bits) -> int:
    """``index_bits`` as an int in [1, 16], or a one-line error."""
    check(isinstance(index_bits, (int, np.integer)) and not isinstance(index_bits, bool)
          and 1 <= index_bits <= 16,
          f"index_bits={index_bits!r} is outside [1, 16]: EIE uses 4 or 5 for FC layers and 8 for conv")
    return int(index_bits)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True, eq=False)
class CSCEncoding:
    """One matrix in EIE's per-PE CSC: all PEs' entries concatenated, PE 0 first."""

    shape: tuple[int, int]
    """(rows, columns) of the EIE matrix = (outputs, inputs)."""
    n_pes: int
    index_bits: int
    values: np.ndarray
    """Stored values (raw ints, cluster ids or floats); padding entries hold 0."""
    rel_index: np.ndarray
    """Zeros before each entry in its PE's column slice, each < 2**index_bits (int64)."""
    pe_ptr: np.ndarray
    """(n_pes + 1,): PE p's entries are ``values[pe_ptr[p]:pe_ptr[p + 1]]``."""
    col_ptr: np.ndarray
    """(n_pes, columns + 1): column pointers of each PE into its own entries."""

    def __post_init__(self) -> None:
        for name in ("values", "rel_index", "pe_ptr", "col_ptr"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def n_entries(self) -> int:
        """Stored entries, padding included."""
        return int(self.values.size)

    @property
    def n_padding(self) -> int:
        """Padding entries (stored zeros that only extend a gap)."""
        return int(np.count_nonzero(self.values == 0))

    @property
    def nnz(self) -> int:
        """Non-zero weights."""
        return self.n_entries - self.n_padding

    @property
    def pe_entries(self) -> np.ndarray:
        """Stored entries per PE (n_pes,), padding included: the PE's cycles for a dense input."""
        return np.diff(self.pe_ptr)

    @property
    def column_entries(self) -> np.ndarray:
        """Stored entries per PE and column (n_pes, columns), padding included."""
        return np.diff(self.col_ptr, axis=1)

    @property
    def abs_col_ptr(self) -> np.ndarray:
        """Column pointers into the concatenated arrays: ``col_ptr + pe_ptr[:-1, None]``."""
        return self.col_ptr + self.pe_ptr[:-1, None]


def encode(m, n_pes: int, index_bits: int) -> CSCEncoding:
    """EIE matrix ``m`` (rows = outputs, 2-D) -> per-PE CSC with relative indices.

    Convert a layer's weights first with :func:`fxpsim.sparse.pe.eie_matrix`
    (a Dense ``W`` (K, N) becomes ``W.T``).
    """
    m = np.asarray(m)
    check(m.ndim == 2, f"expected a 2-D EIE matrix, got shape {m.shape}: convert with eie_matrix(W)")
    n_pes = check_pes(n_pes)
    index_bits = check_index_bits(index_bits)
    span = 1 << index_bits  # a padding entry stands for span - 1 zeros plus itself
    rows, cols = m.shape
    values, rel, col_ptr, pe_ptr = [], [], np.zeros((n_pes, cols + 1), np.int64), [0]
    for p in range(n_pes):
        sub = m[p::n_pes]  # this PE's local rows
        col, lrow = np.nonzero(sub.T)  # column-major order: by column, then local row
        first = np.ones(col.size, dtype=bool)
        first[1:] = col[1:] != col[:-1]
        prev = np.where(first, -1, np.concatenate(([-1], lrow[:-1])))
        gap = lrow - prev - 1
        n_pad = gap // span
        count = n_pad + 1  # entries per non-zero: its padding, then itself
        total = int(count.sum())
        last = np.cumsum(count) - 1  # where each non-zero's own entry lands
        v = np.zeros(total, dtype=m.dtype)
        z = np.full(total, span - 1, dtype=np.int64)
        v[last] = sub.T[col, lrow]
        z[last] = gap - n_pad * span
        values.append(v)
        rel.append(z)
        col_ptr[p, 1:] = np.cumsum(np.bincount(col, weights=count, minlength=cols)).astype(np.int64)
        pe_ptr.append(pe_ptr[-1] + total)
    return CSCEncoding((rows, cols), n_pes, index_bits,
                       np.concatenate(values) if values else np.zeros(0, m.dtype),
                       np.concatenate(rel), np.asarray(pe_ptr, dtype=np.int64), col_ptr)


def entry_rows(enc: CSCEncoding) -> np.ndarray:
    """Row of the EIE matrix of every stored entry, decoded from the relative indices."""
    rows = np.empty(enc.n_entries, dtype=np.int64)
    for p in range(enc.n_pes):
        lo, hi = enc.pe_ptr[p], enc.pe_ptr[p + 1]
        step = enc.rel_index[lo:hi] + 1
        pos = np.cumsum(step)
        starts = enc.col_ptr[p, :-1]
        counts = np.diff(enc.col_ptr[p])
        # subtract the running position at each column's start: positions restart per column
        base = np.concatenate(([0], pos))[starts]
        pos = pos - np.repeat(base, counts) - 1
        rows[lo:hi] = pos * enc.n_pes + p
    return rows


def entry_columns(enc: CSCEncoding) -> np.ndarray:
    """Column of the EIE matrix of every stored entry."""
    return np.concatenate([np.repeat(np.arange(enc.shape[1]), np.diff(enc.col_ptr[p]))
                           for p in range(enc.n_pes)])


def decode(enc: CSCEncoding) -> np.ndarray:
    """Per-PE CSC -> the dense EIE matrix (exact inverse of :func:`encode`)."""
    out = np.zeros(enc.shape, dtype=enc.values.dtype)
    rows = entry_rows(enc)
    check(bool(np.all(rows < enc.shape[0])) and bool(np.all(enc.rel_index < (1 << enc.index_bits))),
          "corrupt CSC encoding: a relative index runs past the PE's rows or exceeds index_bits")
    out[rows, entry_columns(enc)] = enc.values  # padding writes 0 where the matrix is 0
    return out


@dataclass(frozen=True, slots=True)
class CSCStorage:
    """Storage of one CSC-encoded matrix in bits (module docstring: what counts)."""

    nonzeros: int
    padding_entries: int
    value_bits: int
    index_bits: int
    n_pointers: int
    pointer_bits: int
    codebook_bits: int = 0

    @property
    def entries(self) -> int:
        return self.nonzeros + self.padding_entries

    @property
    def value_total(self) -> int:
        return self.entries * self.value_bits

    @property
    def index_total(self) -> int:
        return self.entries * self.index_bits

    @property
    def padding_total(self) -> int:
        """Bits spent on padding entries (already inside value_total and index_total)."""
        return self.padding_entries * (self.value_bits + self.index_bits)

    @property
    def pointer_total(self) -> int:
        return self.n_pointers * self.pointer_bits

    @property
    def total_bits(self) -> int:
        return self.value_total + self.index_total + self.pointer_total + self.codebook_bits

    @property
    def bits_per_nonzero(self) -> float:
        return self.total_bits / self.nonzeros if self.nonzeros else math.inf


def pointer_bits_for(enc: CSCEncoding) -> int:
    """Pointer width: bits to hold the largest PE's entry count (the last pointer), >= 1."""
    most = int(enc.pe_entries.max()) if enc.n_pes else 0
    return max(1, most.bit_length())


def storage(enc: CSCEncoding, value_bits: int, *, codebook_bits: int = 0,
            pointer_bits: int | None = None) -> CSCStorage:
    """Bits to store ``enc``: values at ``value_bits`` each (a format's width, or
    cluster-index bits with weight sharing plus ``codebook_bits = k * b``),
    ``index_bits`` per relative index, ``n_pes * (cols + 1)`` pointers."""
    check(int(value_bits) >= 1, f"value_bits={value_bits!r} < 1: give the stored width of one value")
    pb = pointer_bits_for(enc) if pointer_bits is None else int(pointer_bits)
    check(pb >= pointer_bits_for(enc),
          f"pointer_bits={pointer_bits} cannot address {int(enc.pe_entries.max())} entries: "
          f"use at least {pointer_bits_for(enc)}")
    return CSCStorage(enc.nnz, enc.n_padding, int(value_bits), enc.index_bits,
                      enc.n_pes * (enc.shape[1] + 1), pb, int(codebook_bits))
