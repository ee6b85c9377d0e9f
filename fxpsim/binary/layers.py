"""Binary and ternary layers on packed bits: validation, packing, kernel call.

Each public function checks its input in Python (one-line FxpsimError),
packs, calls a kernel from :mod:`fxpsim.datapath.xnor` and returns a
:class:`BinaryResult` with the integer dots and the popcount-width report.

Accumulation order: the popcount of a word pair is exact and integer
addition is associative, so every order gives the same dot; there is no
clip inside a popcount (a counter that is too narrow wraps, see below).

Conv padding (NCHW, ``F x C x kh x kw`` weights, patch order channel,
kernel row, kernel column): zero is not a ±1 value, so ``pad_mode`` picks
- ``"zero"`` (default): exact zero padding as in the float network. The
  activation gets a nonzero-mask plane (1 inside the image, 0 in the pad)
  and the ternary kernel computes ``pc(m) - 2*pc((a ^ w) & m)``; costs a
  second popcount per word, only for layers with padding > 0.
- ``"minus-one"``: the pad value is -1 (bit 0), as some BNN implementations
  do (e.g. FINN-style hardware where the border is a binary value); plain
  XNOR-popcount, but the result differs from zero padding at the border.
For the 8-bit first layer (bit planes of {0,1}) zero padding is exact:
the pad's bits are all 0.

Accumulator: with ``acc_bits`` given, the signed dot is held in an
``acc_bits``-bit register; if :class:`PopcountWidth` says it does not fit,
the dots are wrapped (two's complement, as a too-narrow counter does) and
the affected outputs counted: overflow is data, not an exception.

``parallel``: None picks the prange kernel for large products and the
serial twin for small ones (thread launch dominates those); True/False force.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..datapath import core
from ..datapath import xnor as kernels
from ..datapath.xnor import PopcountWidth, popcount_width
from ..errors import FxpsimError, check
from ..graph.geometry import conv_out_size
from ..qformat import QFormat, wrap_raw
from .packing import (
    PackedBits,
    PackedWeights,
    _pack_bool,
    bit_planes,
    check_pm1,
    check_ternary,
    n_words,
    pack_signs,
    pack_ternary,
    pack_ternary_weights,
    pack_weights,
)

PAD_MODES = ("zero", "minus-one")


@dataclass(frozen=True, slots=True, eq=False)
class BinaryResult:
    """Integer dots of a binary/ternary layer with its width report."""

    y: np.ndarray
    """int64 dots (dense ``(B, N)``, conv ``(B, F, OH, OW)``), raw with the input's frac bits."""
    width: PopcountWidth
    """Popcount and dot widths checked against the accumulator."""
    outputs_wrapped: int
    """Outputs changed by wrapping to ``acc_bits`` (0 when the dot fits)."""


def _finish(y: np.ndarray, width: PopcountWidth, max_abs: int) -> BinaryResult:
    y = y.astype(np.int64, copy=False)
    acc_bits = width.acc_bits
    if acc_bits is None or max_abs < (1 << (acc_bits - 1)):
        return BinaryResult(y, width, 0)
    wrapped = wrap_raw(y, QFormat(acc_bits, 0))
    return BinaryResult(wrapped, width, int(np.count_nonzero(wrapped != y)))


def _as_packed_rows(a, name: str) -> PackedBits:
    if isinstance(a, PackedBits):
        return a
    arr = np.asarray(a)
    check(arr.ndim == 2, f"{name} has shape {arr.shape}: dense inputs are (B, K)")
    return pack_signs(arr, name)


def _as_packed_weights(w, name: str) -> PackedWeights:
    if isinstance(w, PackedWeights):
        return w
    return pack_weights(w, name)


def _check_packed(words: np.ndarray, k: int, rows_axis_words: int, name: str) -> None:
    check(words.dtype == np.uint64 and words.ndim == 2,
          f"{name} words are {words.dtype} of shape {words.shape}: packed words are 2-D uint64")
    check(words.shape[rows_axis_words] == n_words(k),
          f"{name} has {words.shape[rows_axis_words]} words per vector but K={k} needs "
          f"{n_words(k)} (= ceil(K/64)): pack with fxpsim.binary.pack_signs/pack_weights")


def _match_k(ka: int, kw: int) -> None:
    if ka != kw:
        raise FxpsimError(
            f"packed input has K={ka} but packed weights have K={kw}: "
            "the dot length must match (input (B, K) against weights (K, N))"
        )


def xnor_dense(a, w, *, acc_bits: int | None = None,
               parallel: bool | None = None) -> BinaryResult:
    """±1 (B, K) · ±1 (K, N) by XNOR-popcount: ``dot = K - 2*popcount(a XOR w)``.

    Rastegari et al. (XNOR-Net, ECCV 2016) Eq. 11; Courbariaux, Hubara et
    al. (BNN, NIPS 2016) "XnorDotProduct". ``a`` and ``w`` are ±1 arrays or
    :class:`PackedBits` / :class:`PackedWeights`.
    """
    pa = _as_packed_rows(a, "binary input")
    pw = _as_packed_weights(w, "binary weights")
    check(pw.mask is None, "xnor_dense got ternary weights: use ternary_dense")
    _match_k(pa.k, pw.k)
    _check_packed(pa.words, pa.k, 1, "binary input")
    _check_packed(pw.words, pw.k, 0, "binary weights")
    y = kernels.gemm("xnor", np.ascontiguousarray(pa.words), np.ascontiguousarray(pw.words), pa.k,
                     parallel=parallel)
    return _finish(y, popcount_width(pa.k, acc_bits), pa.k)


def _ones_mask(k: int, rows: int) -> np.ndarray:
    return _pack_bool(np.ones((rows, k), dtype=bool))


def ternary_dense(a, w, *, acc_bits: int | None = None,
                  parallel: bool | None = None) -> BinaryResult:
    """{-1,0,+1} (B, K) · {-1,0,+1} (K, N) on two bit-planes, exact.

    ``dot = pc(m) - 2*pc((sa XOR sw) AND m)`` with ``m = ma AND mw`` (the
    nonzero masks). TWN (Li et al. 2016) / TTQ (Zhu et al., ICLR 2017)
    weights with their scales applied outside; ±1 inputs are ternary too.
    """
    arr = check_ternary(a, "ternary input")
    check(arr.ndim == 2, f"ternary input has shape {arr.shape}: dense inputs are (B, K)")
    wt = w if isinstance(w, PackedWeights) else pack_ternary_weights(w, "ternary weights")
    _match_k(arr.shape[1], wt.k)
    _check_packed(wt.words, wt.k, 0, "ternary weights")
    sa, ma = pack_ternary(arr)
    mw = wt.mask if wt.mask is not None else _ones_mask(wt.k, wt.n).T.copy()
    y = kernels.gemm("ternary", sa.words, ma.words, np.ascontiguousarray(wt.words), np.ascontiguousarray(mw),
                     parallel=parallel)
    return _finish(y, popcount_width(wt.k, acc_bits), wt.k)


def bitplane_dense(x_raw, fmt_x: QFormat, w, *, acc_bits: int | None = None,
                   parallel: bool | None = None) -> BinaryResult:
    """BNN Algorithm 4 first layer: ``a1 = sum_n 2^(n-1) XnorDotProduct(a0^n, W1b)``.

    ``x_raw`` are raw integers of ``fmt_x`` (e.g. ``UQ8.0`` pixels), ``w``
    ±1 ``(K, N)``. For a {0,1} plane x and weight bits ``b = (w+1)/2``:
    ``sum_k x_k w_k = sum_{x_k=1} (2 b_k - 1) = 2*pc(x AND b) - pc(x)``,
    exact (equivalently ``(XnorDot(2x-1, w) + sum_k w_k) / 2``, the XNOR form
    plus a per-neuron constant). Plane n weighs 2^n (LSB first; the sign plane of a signed format
    -2^(width-1)); the result is raw with ``fmt_x.frac_bits`` frac bits.
    """
    arr = np.asarray(x_raw)
    check(arr.ndim == 2, f"first-layer input has shape {arr.shape}: dense inputs are (B, K)")
    pw = _as_packed_weights(w, "binary weights")
    check(pw.mask is None, "bitplane_dense takes ±1 weights, not ternary")
    _match_k(arr.shape[1], pw.k)
    planes, coef = bit_planes(arr, fmt_x, "first-layer input")
    y = _bitplane_sum(planes, coef, pw, parallel)
    max_abs = max(abs(fmt_x.raw_min), fmt_x.raw_max) * pw.k
    return _finish(y, _plane_width(pw.k, max_abs, acc_bits), max_abs)


def _plane_width(k: int, max_abs: int, acc_bits: int | None) -> PopcountWidth:
    base = popcount_width(k, acc_bits)
    return PopcountWidth(base.k, base.popcount_bits, max_abs.bit_length() + 1, base.acc_bits)


def _bitplane_sum(planes: np.ndarray, coef: np.ndarray, pw: PackedWeights, parallel) -> np.ndarray:
    p, rows, k = planes.shape
    packed = _pack_bool(planes.reshape(p * rows, k) == 1)
    wt = np.ascontiguousarray(pw.words)
    both = kernels.gemm("and", packed, wt, parallel=parallel).reshape(p, rows, pw.n)  # pc(x_n AND b)
    ones = planes.sum(axis=2, dtype=np.int64)  # pc(x_n), per plane and row
    dots = 2 * both - ones[:, :, None]
    return np.tensordot(coef, dots, axes=(0, 0))


def _conv_geometry(x_shape, w_shape, stride: int, padding: int) -> tuple[int, int]:
    check(len(x_shape) == 4, f"conv input has shape {x_shape}: conv inputs are NCHW (B, C, H, W)")
    check(len(w_shape) == 4, f"conv weights have shape {w_shape}: conv weights are (F, C, kh, kw)")
    check(x_shape[1] == w_shape[1],
          f"conv input has C={x_shape[1]} channels but weights expect C={w_shape[1]}: shapes must match")
    check(isinstance(stride, (int, np.integer)) and stride >= 1, f"stride={stride!r} must be an integer >= 1")
    check(isinstance(padding, (int, np.integer)) and padding >= 0,
          f"padding={padding!r} must be an integer >= 0")
    oh = conv_out_size(x_shape[2], w_shape[2], stride, padding)
    ow = conv_out_size(x_shape[3], w_shape[3], stride, padding)
    check(oh >= 1 and ow >= 1,
          f"conv kernel {w_shape[2]}x{w_shape[3]} does not fit input {x_shape[2]}x{x_shape[3]} "
          f"with padding {padding}: enlarge the input or the padding")
    return oh, ow


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int, pad_value) -> np.ndarray:
    """NCHW -> patches ``(B*OH*OW, C*kh*kw)`` in order channel, kernel row, kernel column,
    the border holding ``pad_value`` (:func:`fxpsim.datapath.core.im2col`)."""
    x = np.asarray(x)
    check(x.dtype.kind in "iub", f"conv input has dtype {x.dtype}, not integer: pass ±1, ternary or raw "
                                 "integers (quantize() them first)")
    oh = conv_out_size(x.shape[2], kh, stride, padding)
    ow = conv_out_size(x.shape[3], kw, stride, padding)
    return core.im2col(x, kh, kw, stride, padding, oh, ow, int(pad_value))


def _to_nchw(y: np.ndarray, b: int, oh: int, ow: int) -> np.ndarray:
    return np.ascontiguousarray(y.reshape(b, oh, ow, -1).transpose(0, 3, 1, 2))


def xnor_conv2d(x, w, *, stride: int = 1, padding: int = 0, pad_mode: str = "zero",
                acc_bits: int | None = None) -> BinaryResult:
    """±1 NCHW conv by XNOR-popcount over each patch (XNOR-Net Eq. 11, BNN).

    ``pad_mode="zero"``: exact zero padding via a mask plane (see module
    doc); ``"minus-one"``: border treated as -1. Output ``(B, F, OH, OW)``.
    """
    xa = check_pm1(x, "binary conv input")
    wa = check_pm1(w, "binary conv weights")
    oh, ow = _conv_geometry(xa.shape, wa.shape, stride, padding)
    check(pad_mode in PAD_MODES, f"pad_mode={pad_mode!r}: use one of {', '.join(PAD_MODES)}")
    f, c, kh, kw = wa.shape
    k = c * kh * kw
    wmat = wa.reshape(f, k).T
    if padding == 0 or pad_mode == "minus-one":
        res = xnor_dense(pack_signs(im2col(xa, kh, kw, stride, padding, -1)), pack_weights(wmat),
                         acc_bits=acc_bits)
    else:
        res = ternary_dense(im2col(xa, kh, kw, stride, padding, 0), pack_weights(wmat), acc_bits=acc_bits)
    return BinaryResult(_to_nchw(res.y, xa.shape[0], oh, ow), res.width, res.outputs_wrapped)


def ternary_conv2d(x, w, *, stride: int = 1, padding: int = 0, acc_bits: int | None = None) -> BinaryResult:
    """Ternary (or ±1) NCHW input by ternary weights, two bit-planes; zero padding exact."""
    xa = check_ternary(x, "ternary conv input")
    wa = check_ternary(w, "ternary conv weights")
    oh, ow = _conv_geometry(xa.shape, wa.shape, stride, padding)
    f, c, kh, kw = wa.shape
    res = ternary_dense(im2col(xa, kh, kw, stride, padding, 0),
                        pack_ternary_weights(wa.reshape(f, c * kh * kw).T), acc_bits=acc_bits)
    return BinaryResult(_to_nchw(res.y, xa.shape[0], oh, ow), res.width, res.outputs_wrapped)


def bitplane_conv2d(x_raw, fmt_x: QFormat, w, *, stride: int = 1, padding: int = 0,
                    acc_bits: int | None = None) -> BinaryResult:
    """BNN Algorithm 4 first layer as a conv: bit planes of ``x_raw`` (NCHW) by ±1 weights.

    Zero padding is exact here: the pad's bit planes are 0 in every plane.
    """
    xa = np.asarray(x_raw)
    wa = check_pm1(w, "binary conv weights")
    oh, ow = _conv_geometry(xa.shape, wa.shape, stride, padding)
    f, c, kh, kw = wa.shape
    res = bitplane_dense(im2col(xa, kh, kw, stride, padding, 0), fmt_x, wa.reshape(f, c * kh * kw).T,
                         acc_bits=acc_bits)
    return BinaryResult(_to_nchw(res.y, xa.shape[0], oh, ow), res.width, res.outputs_wrapped)
