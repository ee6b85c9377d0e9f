"""Float ±1 references: the computation the packed kernels must equal exactly.

Plain float64 NumPy on ±1 (or {-1,0,+1}, or raw integer) matrices: every
partial sum is an integer far below 2**53, so float64 is exact and any
difference from the XNOR-popcount path is a bug. The conv reference loops
over kernel offsets (no im2col) so it shares no code with the kernels.
"""

from __future__ import annotations

import numpy as np

from .bnn import BnnMlp, batchnorm_float, sign


def dense_float(x, w) -> np.ndarray:
    """``x @ w`` in float64 (exact for these integer operands)."""
    return np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float64)


def xnor_words_python(a_words, w_words, k: int) -> np.ndarray:
    """Packed-word twin of the XNOR kernel in Python ints: ``K - 2*sum(int.bit_count(a ^ w))``.

    ``a_words`` (B, W), ``w_words`` (W, N) as packed by :mod:`fxpsim.binary.packing`.
    """
    b, nw = a_words.shape
    n = w_words.shape[1]
    out = np.empty((b, n), dtype=np.int64)
    for i in range(b):
        for j in range(n):
            count = 0
            for kw in range(nw):
                count += (int(a_words[i, kw]) ^ int(w_words[kw, j])).bit_count()
            out[i, j] = k - 2 * count
    return out


def conv2d_float(x, w, stride: int = 1, padding: int = 0, pad_value: float = 0.0) -> np.ndarray:
    """NCHW conv (cross-correlation) in float64, padding filled with ``pad_value``."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    f, c, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=pad_value)
    oh = (xp.shape[2] - kh) // stride + 1
    ow = (xp.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], f, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            out += np.einsum("bchw,fc->bfhw", patch, w[:, :, i, j])
    return out


def bnn_mlp_float(net: BnnMlp, x_raw) -> tuple[np.ndarray, tuple]:
    """Algorithm 4's network in float: returns (output-layer dots a_L, hidden ±1 activations).

    The input is the real value ``x_raw * 2**-frac_bits``; each layer is
    ``Sign(batchnorm_float(a @ W))`` with float64 ±1 matrices.
    """
    a = np.ldexp(np.asarray(x_raw, dtype=np.float64), -net.fmt_x.frac_bits)
    hidden = []
    for layer, (w, bn) in enumerate(zip(net.weights, net.bns)):
        acc = dense_float(a, w)
        if layer == len(net.weights) - 1:
            return acc, tuple(hidden)
        a = sign(batchnorm_float(acc, bn))
        hidden.append(a)
    raise AssertionError("unreachable: BnnMlp has at least one layer")
