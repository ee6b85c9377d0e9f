"""Huffman coding of cluster and relative indices: moved to :mod:`fxpsim.compress.huffman` (old path)."""

from ..compress.huffman import HuffmanCode, huffman_code, huffman_lengths

__all__ = ["HuffmanCode", "huffman_code", "huffman_lengths"]
