"""Deep Compression's three-stage pipeline, counted in EIE's storage bits per layer (Han et al., ICLR 2016).

The compression itself (pruning, k-means sharing, Huffman) is :mod:`fxpsim.compress`;
this module sizes its result in EIE's per-PE CSC (:mod:`.csc`) and counts PE cycles,
so it stays with EIE's storage.

Stages of one layer's weight matrix (the EIE matrix, :mod:`.pe`, rows
interleaved over ``n_pes`` PEs, CSC with ``index_bits`` relative indices,
:mod:`.csc`):

=========  ===================================================================
dense      ``n x b`` (every weight at ``b = dense_bits``, 32 = float32)
pruned     CSC: (non-zeros + padding) x (value_bits + index_bits) + pointers;
           values at ``value_bits`` (32: float32, as Han's pruning stage)
shared     as pruned, but each value is a cluster index of
           ``ceil(log2(k + z))`` bits, z = 1 when the layer has padding
           entries (the padding zero needs its own code, as in EIE's
           codebook) else 0; plus the codebook, ``k x b`` bits
huffman    shared, with the cluster indices and the relative indices each
           Huffman coded per layer (code tables not counted, as in the paper);
           pointers and codebook as before
=========  ===================================================================

Compression rate of a stage = dense bits / stage bits. Timing: PE ``p``
spends one cycle per stored entry (padding included) of every column whose
input activation is non-zero (EIE skips zero activations); see
:mod:`.kernel` for the bit-exact datapath that this timing model counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..compress.huffman import huffman_code
from ..compress.sharing import SharedWeights, index_bits as cluster_bits
from ..errors import check
from .csc import encode, storage
from .pe import eie_matrix


@dataclass(frozen=True, slots=True)
class LayerCompression:
    """One layer's sizes after each stage (bits) and its PE timing."""

    name: str
    kind: str
    weights: int
    nonzeros: int
    n_pes: int
    index_bits: int
    padding_entries: int
    dense_bits: int
    pruned_bits: int
    clusters: int | None = None
    value_bits_shared: int | None = None
    shared_bits: int | None = None
    huffman_bits: int | None = None
    cycles_min: float | None = None
    cycles_mean: float | None = None
    cycles_max: float | None = None
    cycles_dense_input: int | None = None

    @property
    def final_bits(self) -> int:
        for b in (self.huffman_bits, self.shared_bits, self.pruned_bits):
            if b is not None:
                return b
        return self.dense_bits

    def record(self) -> dict:
        """A report row: snake_case columns with units."""
        final = self.final_bits
        return {
            "layer": self.name, "kind": self.kind, "weights": self.weights,
            "nonzeros_pct": 100.0 * self.nonzeros / self.weights,
            "index_bits": self.index_bits, "padding_entries": self.padding_entries,
            "clusters": self.clusters if self.clusters is not None else "-",
            "bits_per_kept_weight": final / max(self.nonzeros, 1),
            "dense_kb": self.dense_bits / 8192, "pruned_kb": self.pruned_bits / 8192,
            "shared_kb": self.shared_bits / 8192 if self.shared_bits is not None else None,
            "huffman_kb": self.huffman_bits / 8192 if self.huffman_bits is not None else None,
            "storage_kb": final / 8192, "compression_rate": self.dense_bits / final,
            "cycles_pe_min": self.cycles_min, "cycles_pe_mean": self.cycles_mean,
            "cycles_pe_max": self.cycles_max,
            "load_imbalance": (self.cycles_max / self.cycles_mean
                               if self.cycles_mean else None),
        }


def pe_cycles(enc, active: np.ndarray) -> np.ndarray:
    """Cycles of each PE per input sample: ``active`` (B, K) or (B, P, K) non-zero inputs.

    (B, P, K): P input vectors per sample (conv: one per output position);
    their cycles add up. Returns (B, n_pes).
    """
    col = enc.column_entries.astype(np.float64)  # (n_pes, K)
    a = np.asarray(active, dtype=np.float64)
    check(a.shape[-1] == col.shape[1], f"activations have {a.shape[-1]} inputs, the layer {col.shape[1]}")
    if a.ndim == 3:
        a = a.sum(axis=1)  # per sample: how often each column is broadcast
    return a @ col.T


def compress_layer(name: str, kind: str, w: np.ndarray, *, n_pes: int, index_bits: int,
                   dense_bits: int = 32, value_bits: int = 32, shared: SharedWeights | None = None,
                   huffman: bool = False, active: np.ndarray | None = None) -> LayerCompression:
    """Sizes of layer weights ``w`` (Dense (K, N) or Conv2D (F, C, kh, kw), zeros = pruned).

    ``shared`` gives the cluster labels (same zero pattern as ``w``);
    ``active`` the non-zero pattern of the layer's inputs for the PE timing.
    """
    m = eie_matrix(np.asarray(w))
    enc = encode(m, n_pes, index_bits)
    st = storage(enc, value_bits)
    rec = dict(name=name, kind=kind, weights=int(m.size), nonzeros=enc.nnz, n_pes=n_pes,
               index_bits=enc.index_bits, padding_entries=enc.n_padding,
               dense_bits=int(m.size) * dense_bits, pruned_bits=st.total_bits,
               cycles_dense_input=int(enc.pe_entries.max()))
    if shared is not None:
        labels = eie_matrix(shared.labels)
        check(np.array_equal(labels >= 0, m != 0),
              f"layer {name}: the cluster labels do not match the pruned weights' zero pattern")
        senc = encode(labels + 1, n_pes, index_bits)  # symbol 0 = padding zero, c + 1 = cluster c
        vb = cluster_bits(shared.k + (1 if senc.n_padding else 0))
        sst = storage(senc, vb, codebook_bits=shared.k * dense_bits, pointer_bits=None)
        rec.update(clusters=shared.k, value_bits_shared=vb, shared_bits=sst.total_bits)
        if huffman:
            hv = huffman_code(senc.values).total_bits(senc.values)
            hi = huffman_code(senc.rel_index).total_bits(senc.rel_index) if senc.n_entries else 0
            rec["huffman_bits"] = int(hv + hi + sst.pointer_total + sst.codebook_bits)
    if active is not None:
        cyc = pe_cycles(enc, active).mean(axis=0)  # mean over samples, per PE
        rec.update(cycles_min=float(cyc.min()), cycles_mean=float(cyc.mean()), cycles_max=float(cyc.max()))
    return LayerCompression(**rec)


def network_stages(layers: list[LayerCompression]) -> list[dict]:
    """Total bits and compression rate of the network after each stage present in ``layers``."""
    dense = sum(lc.dense_bits for lc in layers)
    rows = [("dense", dense), ("pruned", sum(lc.pruned_bits for lc in layers))]
    if all(lc.shared_bits is not None for lc in layers):
        rows.append(("shared", sum(lc.shared_bits for lc in layers)))
    if all(lc.huffman_bits is not None for lc in layers):
        rows.append(("huffman", sum(lc.huffman_bits for lc in layers)))
    nnz = sum(lc.nonzeros for lc in layers)
    weights = sum(lc.weights for lc in layers)
    return [{"stage": s, "storage_kb": b / 8192,
             "bits_per_kept_weight": b / max(weights if s == "dense" else nnz, 1),  # dense: every weight kept
             "weights_kept_pct": 100.0 * (nnz if s != "dense" else weights) / weights,
             "compression_rate": dense / b} for s, b in rows]
