"""PE partitioning of a layer's weight matrix (EIE, ISCA 2016; ESE, FPGA 2017).

Orientation. EIE computes ``b = f(W a)`` with ``W`` of shape (outputs,
inputs): rows are output neurons, columns input activations. fxpsim's Dense
weights are ``(K, N) = (inputs, outputs)`` (INTERFACES.md), so the EIE
matrix of a Dense layer is ``W.T`` (N, K); a Conv2D ``(F, C, kh, kw)`` is the
(F, C*kh*kw) matrix (one row per filter, columns in the conv accumulation
order channel, kernel row, kernel column). :func:`eie_matrix` is the one
place that converts, :func:`layer_weights` converts back.

Rows are interleaved over ``n_pes`` PEs: row ``i`` belongs to PE ``i mod
n_pes`` and is that PE's local row ``i // n_pes``.

Cycle models (one stored entry per PE per cycle, EIE's pipeline):

- queued: each PE has an activation FIFO deep enough that it never waits
  for the others within a layer, so a layer takes as many cycles as the
  busiest PE has entries (``max_p cycles_p``). ESE's load-balance example
  (PEs with 5/2/4/1 cycles -> 5 overall) uses this model.
- lock-step per column: all PEs start column ``j`` together, so each
  broadcast activation costs the slowest PE's entries in that column
  (``sum_j max_p entries[p, j]`` >= queued).
"""

from __future__ import annotations

import numpy as np

from ..errors import FxpsimError, check


def check_pes(n_pes) -> int:
    """``n_pes`` as an int >= 1, or a one-line error."""
    check(isinstance(n_pes, (int, np.integer)) and not isinstance(n_pes, bool) and n_pes >= 1,
          f"n_pes={n_pes!r} is not a whole number >= 1: give the count of processing elements, e.g. 64")
    return int(n_pes)


def eie_matrix(w: np.ndarray) -> np.ndarray:
    """Layer weights -> the EIE matrix (rows = outputs, columns = inputs).

    Dense ``(K, N)`` -> ``W.T`` of shape (N, K); Conv2D ``(F, C, kh, kw)``
    -> (F, C*kh*kw). A view where NumPy can make one.
    """
    w = np.asarray(w)
    if w.ndim == 2:
        return w.T
    if w.ndim == 4:
        return w.reshape(w.shape[0], -1)
    raise FxpsimError(
        f"weights of shape {w.shape} are neither Dense (K, N) nor Conv2D (F, C, kh, kw): "
        "pass a layer's W array")


def layer_weights(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`eie_matrix`: the EIE matrix back to a layer's ``shape``."""
    m = np.asarray(m)
    if len(shape) == 2:
        check(m.shape == (shape[1], shape[0]),
              f"EIE matrix {m.shape} does not fit Dense weights {tuple(shape)}: expected {(shape[1], shape[0])}")
        return np.ascontiguousarray(m.T)
    check(len(shape) == 4 and m.shape == (shape[0], int(np.prod(shape[1:]))),
          f"EIE matrix {m.shape} does not fit layer weights {tuple(shape)}")
    return m.reshape(shape)


def pe_of_row(n_rows: int, n_pes: int) -> np.ndarray:
    """PE of each row: ``i mod n_pes`` (EIE's interleaving)."""
    return np.arange(n_rows) % check_pes(n_pes)


def pe_nonzeros(m: np.ndarray, n_pes: int) -> np.ndarray:
    """Non-zeros of the EIE matrix ``m`` held by each PE, shape (n_pes,)."""
    m = np.asarray(m)
    check(m.ndim == 2, f"expected a 2-D EIE matrix, got shape {m.shape}: convert with eie_matrix(W)")
    per_row = np.count_nonzero(m, axis=1)
    return np.bincount(pe_of_row(m.shape[0], n_pes), weights=per_row, minlength=n_pes).astype(np.int64)


def queued_cycles(pe_cycles) -> int:
    """Layer cycles when every PE has its own FIFO: the busiest PE (ESE Fig.: 5/2/4/1 -> 5)."""
    c = np.asarray(pe_cycles, dtype=np.int64)
    return int(c.max()) if c.size else 0


def lockstep_cycles(entries: np.ndarray) -> int:
    """Layer cycles when PEs advance column by column together: ``sum_j max_p entries[p, j]``."""
    e = np.asarray(entries, dtype=np.int64)
    return int(e.max(axis=0).sum()) if e.size else 0


def load_imbalance(pe_cycles) -> float:
    """max / mean of the PEs' cycles (1.0 = perfectly balanced; 0 work -> 1.0)."""
    c = np.asarray(pe_cycles, dtype=np.float64)
    mean = c.mean() if c.size else 0.0
    return float(c.max() / mean) if mean > 0 else 1.0
