"""Huffman coding of weight indices and relative indices (Deep Compression, Sec. 4).

Codes are built from the symbols' frequencies with a heap (Huffman 1952)
and made canonical (lengths from Huffman, code words assigned in order of
(length, symbol)), so a code is fully described by its length table. The
bit stream is a NumPy uint8 array of 0/1 (one bit per element).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ..errors import check


@dataclass(frozen=True, slots=True, eq=False)
class HuffmanCode:
    """A canonical prefix code: ``symbols[i]`` has ``codes[i]`` of ``lengths[i]`` bits."""

    symbols: np.ndarray
    lengths: np.ndarray
    codes: np.ndarray

    def table(self) -> dict:
        """symbol -> bit string, e.g. ``{3: '0', 7: '10', ...}``."""
        return {int(s): format(int(c), f"0{int(n)}b") for s, n, c in zip(self.symbols, self.lengths, self.codes)}

    def total_bits(self, data) -> int:
        """Bits of ``data`` encoded with this code."""
        data = np.asarray(data).ravel()
        idx = self._index(data)
        return int(self.lengths[idx].sum())

    def _index(self, data: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.symbols, data)
        idx = np.minimum(idx, self.symbols.size - 1)
        check(bool(np.all(self.symbols[idx] == data)) if data.size else True,
              "data holds a symbol the code was not built for: build the code from this data")
        return idx

    def encode(self, data) -> np.ndarray:
        """``data`` (ints) -> bit stream (uint8 0/1)."""
        data = np.asarray(data).ravel()
        idx = self._index(data)
        lengths = self.lengths[idx]
        total = int(lengths.sum())
        out = np.zeros(total, dtype=np.uint8)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        codes = self.codes[idx]
        for bit in range(int(self.lengths.max(initial=0))):  # bit-th bit from the left of each code
            has = lengths > bit
            shift = (lengths[has] - 1 - bit).astype(np.int64)
            out[starts[has] + bit] = (codes[has] >> shift) & 1
        return out

    def decode(self, bits, n: int) -> np.ndarray:
        """Bit stream -> the first ``n`` symbols (canonical decoding, one bit at a time)."""
        bits = np.asarray(bits, dtype=np.uint8)
        by_len: dict[tuple[int, int], int] = {
            (int(n_), int(c)): int(s) for s, n_, c in zip(self.symbols, self.lengths, self.codes)}
        out = np.empty(n, dtype=self.symbols.dtype)
        code = length = i = 0
        for b in bits.tolist():
            if i == n:
                break
            code = (code << 1) | b
            length += 1
            sym = by_len.get((length, code))
            if sym is not None:
                out[i] = sym
                i += 1
                code = length = 0
        check(i == n, f"bit stream ended after {i} of {n} symbols: it was not encoded with this code")
        return out


def huffman_lengths(freqs: dict) -> dict:
    """Huffman code lengths for ``{symbol: count}`` (a single symbol gets 1 bit)."""
    check(len(freqs) >= 1 and all(c > 0 for c in freqs.values()),
          "Huffman coding needs at least one symbol with a positive count")
    if len(freqs) == 1:
        return {next(iter(freqs)): 1}
    # heap of (count, tie-break, symbols in the subtree); every merge adds 1 bit to its symbols
    heap = [(c, i, [s]) for i, (s, c) in enumerate(sorted(freqs.items()))]
    heapq.heapify(heap)
    lengths = dict.fromkeys(freqs, 0)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def huffman_code(data) -> HuffmanCode:
    """The canonical Huffman code of the integer symbols in ``data``."""
    data = np.asarray(data).ravel()
    check(data.size >= 1 and data.dtype.kind in "iub",
          "Huffman coding takes a non-empty array of integer symbols (cluster or relative indices)")
    symbols, counts = np.unique(data, return_counts=True)
    lengths = huffman_lengths(dict(zip(symbols.tolist(), counts.tolist())))
    order = sorted(lengths, key=lambda s: (lengths[s], s))
    codes, code, prev = {}, 0, lengths[order[0]]
    for s in order:  # canonical: next code, shifted left when the length grows
        code <<= lengths[s] - prev
        prev = lengths[s]
        codes[s] = code
        code += 1
    sym = symbols
    return HuffmanCode(sym, np.array([lengths[s] for s in sym.tolist()], np.int64),
                       np.array([codes[s] for s in sym.tolist()], np.int64))
