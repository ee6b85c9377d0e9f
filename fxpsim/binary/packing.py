"""Bit packing of ±1, {0,1} and ternary vectors, 64 per uint64 word.

Convention (every kernel relies on it): element ``k`` of a length-K vector
is bit ``k % 64`` (least significant first) of word ``k // 64``; a ±1 value
is stored as **+1 -> bit 1, -1 -> bit 0** (Courbariaux, Hubara et al. 2016,
"BNN": XNOR of the bits is the product of the signs). The ``64*ceil(K/64) - K``
pad bits of the last word are 0 in every packed operand, so they XOR to 0
and never count: ``dot = K - 2*popcount(a XOR w)`` uses the logical K.

Ternary {-1, 0, +1} (TWN, Li et al. 2016; TTQ, Zhu et al. 2017) is two
bit-planes: ``mask`` (1 where nonzero) and ``sign`` (1 where +1, 0 where -1
or 0). Layouts: activations ``(rows, words)``; weights ``(words, N)`` so the
kernels' inner loop runs over contiguous outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FxpsimError, check
from ..qformat import QFormat, check_raw

WORD_BITS = 64


def n_words(k: int) -> int:
    """Words holding ``k`` bits: ceil(k / 64)."""
    return -(-int(k) // WORD_BITS)


@dataclass(frozen=True, slots=True, eq=False)
class PackedBits:
    """Rows of K bits packed 64 per word: ``words`` is ``(rows, ceil(K/64))`` uint64."""

    words: np.ndarray
    k: int


@dataclass(frozen=True, slots=True, eq=False)
class PackedWeights:
    """A K x N weight matrix packed along K: ``words`` is ``(ceil(K/64), N)`` uint64.

    ``mask`` is None for ±1 weights, or the nonzero plane (same shape) for ternary.
    """

    words: np.ndarray
    k: int
    mask: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of outputs N."""
        return self.words.shape[1]


def check_pm1(x, name: str) -> np.ndarray:
    """``x`` as int8 if every value is -1 or +1, else one clear FxpsimError."""
    arr = np.asarray(x)
    check(arr.dtype.kind in "iuf", f"{name} has dtype {arr.dtype}: a binary layer takes ±1 numbers")
    bad = (arr != 1) & (arr != -1)
    if np.any(bad):
        raise FxpsimError(
            f"{name} holds {int(bad.sum())} value(s) that are not ±1 (first: {arr[bad].flat[0]!r}): "
            "a binary layer takes only -1/+1; binarize first (fxpsim.binary.binarize)"
        )
    return arr.astype(np.int8)


def check_ternary(x, name: str) -> np.ndarray:
    """``x`` as int8 if every value is -1, 0 or +1, else one clear FxpsimError."""
    arr = np.asarray(x)
    check(arr.dtype.kind in "iuf", f"{name} has dtype {arr.dtype}: a ternary layer takes -1/0/+1 numbers")
    bad = (arr != 1) & (arr != -1) & (arr != 0)
    if np.any(bad):
        raise FxpsimError(
            f"{name} holds {int(bad.sum())} value(s) not in {{-1, 0, +1}} (first: {arr[bad].flat[0]!r}): "
            "ternarize first (fxpsim.binary.twn_ternarize / ttq_ternarize)"
        )
    return arr.astype(np.int8)


def _pack_bool(bits: np.ndarray) -> np.ndarray:
    """Pack a boolean array along its last axis, 64 per word, LSB first, pad bits 0."""
    k = bits.shape[-1]
    nw = n_words(k)
    padded = np.zeros(bits.shape[:-1] + (nw * WORD_BITS,), dtype=np.uint8)
    padded[..., :k] = bits
    by = np.packbits(padded, axis=-1, bitorder="little")  # byte j bit i = element 8j+i
    words = np.ascontiguousarray(by).view(np.dtype("<u8"))
    return np.ascontiguousarray(words.astype(np.uint64, copy=False))


def _unpack_bool(words: np.ndarray, k: int) -> np.ndarray:
    by = np.ascontiguousarray(words.astype(np.dtype("<u8"))).view(np.uint8)
    return np.unpackbits(by, axis=-1, bitorder="little", count=k).astype(bool)


def pack_signs(x, name: str = "x") -> PackedBits:
    """Pack ±1 rows ``(..., K)`` -> :class:`PackedBits` ``(rows, words)`` (+1 -> 1, -1 -> 0)."""
    arr = check_pm1(x, name)
    check(arr.ndim >= 1 and arr.shape[-1] >= 1,
          f"{name} has shape {arr.shape}: pack rows of at least one ±1 value (shape (..., K))")
    k = arr.shape[-1]
    return PackedBits(_pack_bool(arr.reshape(-1, k) > 0), k)


def unpack_signs(packed: PackedBits) -> np.ndarray:
    """Inverse of :func:`pack_signs`: ``(rows, K)`` int8 ±1."""
    return np.where(_unpack_bool(packed.words, packed.k), 1, -1).astype(np.int8)


def pack_bits01(b, name: str = "bits") -> PackedBits:
    """Pack {0,1} rows ``(..., K)`` (bit planes, masks) -> :class:`PackedBits`."""
    arr = np.asarray(b)
    bad = (arr != 0) & (arr != 1)
    check(not np.any(bad), f"{name} holds values other than 0/1: pack bit planes or masks only")
    k = arr.shape[-1]
    return PackedBits(_pack_bool(arr.reshape(-1, k) == 1), k)


def pack_weights(w, name: str = "w") -> PackedWeights:
    """Pack ±1 weights ``(K, N)`` along K -> :class:`PackedWeights` ``(words, N)``."""
    arr = check_pm1(w, name)
    check(arr.ndim == 2 and arr.shape[0] >= 1 and arr.shape[1] >= 1,
          f"{name} has shape {arr.shape}: binary dense weights are (K, N) with K, N >= 1")
    return PackedWeights(np.ascontiguousarray(_pack_bool(arr.T > 0).T), arr.shape[0])


def pack_ternary(t, name: str = "x") -> tuple[PackedBits, PackedBits]:
    """Ternary rows ``(..., K)`` -> (sign plane, nonzero mask plane) as :class:`PackedBits`."""
    arr = check_ternary(t, name)
    k = arr.shape[-1]
    flat = arr.reshape(-1, k)
    return PackedBits(_pack_bool(flat > 0), k), PackedBits(_pack_bool(flat != 0), k)


def pack_ternary_weights(w, name: str = "w") -> PackedWeights:
    """Ternary weights ``(K, N)`` -> :class:`PackedWeights` with sign words and ``mask``."""
    arr = check_ternary(w, name)
    check(arr.ndim == 2 and arr.shape[0] >= 1 and arr.shape[1] >= 1,
          f"{name} has shape {arr.shape}: ternary dense weights are (K, N) with K, N >= 1")
    sign = np.ascontiguousarray(_pack_bool(arr.T > 0).T)
    mask = np.ascontiguousarray(_pack_bool(arr.T != 0).T)
    return PackedWeights(sign, arr.shape[0], mask)


def unpack_weights(pw: PackedWeights) -> np.ndarray:
    """Inverse of :func:`pack_weights` / :func:`pack_ternary_weights`: ``(K, N)`` int8."""
    sign = _unpack_bool(np.ascontiguousarray(pw.words.T), pw.k).T
    vals = np.where(sign, 1, -1).astype(np.int8)
    if pw.mask is not None:
        vals[~_unpack_bool(np.ascontiguousarray(pw.mask.T), pw.k).T] = 0
    return vals


def bit_planes(x_raw, fmt: QFormat, name: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """Raw integers of ``fmt`` -> ({0,1} planes ``(width, ...)``, int64 plane weights).

    BNN Algorithm 4's a0^n: plane n (LSB first) has weight 2^n, except the
    sign bit of a signed format, which weighs -2^(width-1) (two's complement),
    so ``x_raw == sum_n weight_n * plane_n`` exactly.
    """
    arr = check_raw(x_raw, fmt, name)
    check(fmt.width <= 16, f"{name} format {fmt} has {fmt.width} bits: bit-plane input supports <= 16")
    u = arr & np.int64((1 << fmt.width) - 1)  # two's complement bit pattern
    planes = np.stack([(u >> np.int64(n)) & 1 for n in range(fmt.width)]).astype(np.uint8)
    weights = np.array([1 << n for n in range(fmt.width)], dtype=np.int64)
    if fmt.signed:
        weights[-1] = -weights[-1]
    return planes, weights

