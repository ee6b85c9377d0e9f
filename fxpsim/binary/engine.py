"""The xnor engine's stage: XNOR-popcount, [max pool], BN + Sign or fixed-point output BN (BNN Alg. 4).

A BNN stage (Courbariaux, Hubara et al., NIPS 2016, Algorithm 4) is a
binary compute layer (``bfc<N>bnn`` / ``bconv...bnn``, ±1 weights) with what
follows it up to its activation, :class:`BnnBlock`: an optional max pooling
of the integer dots, its BatchNorm, and Sign (a hidden layer: BatchNorm +
Sign folded into one integer threshold per channel, :func:`fold_bn_sign`)
or nothing (the output layer: BatchNorm in fixed point, :func:`batchnorm_fixed`).

The dot: when the stage reads the ±1 outputs of a previous Sign
(``BnnBlock.pm1_input``) it is XNOR-popcount (:func:`xnor_dense`/
:func:`xnor_conv2d`, exact zero padding); otherwise (the first layer, on raw
integers of ``fmt_x``) by bit planes (:func:`bitplane_dense`/:func:`bitplane_conv2d`).
The dots are held in a ``acc_bits``-bit register that wraps (``overflow``
``wrap``; ``ideal``: never), once per dot: a popcount sums words, not a chain
of products, so ``overflow_count`` = ``outputs_affected`` = the dots whose exact
value the register cannot hold. Hidden outputs are ±1 in ``fmt_y`` (raw
``±2**FL_y``), the output layer's are raw ints of ``fmt_y``.
:mod:`fxpsim.datapath.xnor_reference` is the Python-int twin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check
from ..qformat import Overflow, QFormat, Rounding, int_bits_for, wrap_raw
from .bnn import BatchNormParams, SignThreshold, batchnorm_fixed, fold_bn_sign
from .layers import bitplane_conv2d, bitplane_dense, xnor_conv2d, xnor_dense
from .packing import PackedWeights, pack_weights
from .pooling import maxpool_int, threshold_then_pool

__all__ = ["PM1", "BnnBlock", "XnorWeights", "first_layer_bound", "scale_format", "xnor_prepare", "xnor_run"]

PM1 = QFormat(2, 0)
"""±1 activations (and weights) as raw integers of a 2-bit signed format."""


@dataclass(frozen=True, eq=False)
class BnnBlock:
    """What a BNN stage folds after its dot: [max pool ``(size, stride)``], its BatchNorm, Sign or not."""

    bn: BatchNormParams
    pool: tuple | None = None
    sign: bool = True
    """True: hidden layer (BN + Sign as thresholds); False: output layer (fixed-point BN)."""
    bn_flat: bool = False
    """The BatchNorm is per feature of the flattened ``(C*H*W)`` map, not per channel."""
    pm1_input: bool = False
    """The inputs are a previous Sign's ±1 (XNOR-popcount), not raw integers (bit planes)."""


@dataclass(frozen=True, eq=False)
class XnorWeights:
    """One stage's weights as the xnor engine stores them, with its folded BatchNorm."""

    codes: np.ndarray
    """±1 int8: dense ``(K, N)``, conv ``(F, C, kh, kw)``."""
    packed: PackedWeights | None
    """Dense: the packed weight bits (64 per word); conv: None (packed per call, after im2col)."""
    bitplane: bool
    """First layer on raw integers by bit planes (input format not ``Q2.0``)."""
    frac: int
    """Fraction bits of the dots (the first layer's input format's)."""
    bound: int
    """Largest possible |dot|: K (±1 inputs) or max|x_raw| * K (bit planes)."""
    threshold: SignThreshold | None
    fmt_scale: QFormat | None
    """Output layer: the format of BatchNorm's scale gamma / sigma."""


def scale_format(bn: BatchNormParams, scale_bits: int) -> QFormat:
    """``scale_bits`` wide, int bits for the largest |gamma / sqrt(var + eps)|."""
    g = bn.gamma / np.sqrt(bn.var + bn.eps)
    ib = int_bits_for(float(np.abs(g).max()))
    return QFormat(ib, int(scale_bits) - ib)


def first_layer_bound(fmt_x: QFormat, k: int) -> int:
    """Largest |dot| of a bit-plane layer: max|x_raw| * K."""
    return max(abs(fmt_x.raw_min), fmt_x.raw_max) * int(k)


def xnor_prepare(name: str, kind: str, block: BnnBlock, w_raw: np.ndarray, cfg) -> XnorWeights:
    """Check ``cfg`` for a BNN stage, pack the ±1 weights, fold BatchNorm (+ Sign) once."""
    check(cfg.overflow is not Overflow.CLIP,
          f"layer {name}: engine xnor counts in a register that wraps (a popcount has no saturation): "
          "set overflow wrap (or ideal)")
    check(cfg.rounding is not Rounding.STOCHASTIC,
          f"layer {name}: engine xnor rounds the output BatchNorm deterministically: set rounding nearest-even")
    check(not cfg.a2q, f"layer {name}: a2q shrinks fixed-point weights; ±1 weights have nothing to shrink: "
                       "set a2q false on engine xnor")
    w = np.asarray(w_raw)
    check(bool(np.all(np.abs(w) == 1)),
          f"layer {name}: engine xnor needs ±1 weights, fmt_w {cfg.fmt_w} gives {sorted(set(np.unique(w)))[:4]}: "
          "set fmt_w Q2.0")
    codes = w.astype(np.int8)
    k = int(np.prod(codes.shape[1:])) if kind == "conv2d" else codes.shape[0]
    bitplane = not block.pm1_input
    fx = cfg.fmt_x
    check(bitplane or (fx.frac_bits == 0 and fx.signed and fx.int_bits >= 2),
          f"layer {name} reads the ±1 outputs of a Sign, which fmt_x {fx} cannot hold as integers: set fmt_x Q2.0")
    frac, bound = (cfg.fmt_x.frac_bits, first_layer_bound(cfg.fmt_x, k)) if bitplane else (0, k)
    threshold = fmt_scale = None
    if block.sign:
        fy = cfg.fmt_y
        check(fy.frac_bits >= 0 and fy.raw_max >= (1 << fy.frac_bits) and fy.raw_min <= -(1 << fy.frac_bits),
              f"layer {name}: Sign gives ±1, which fmt_y {fy} cannot hold: set fmt_y Q2.0")
        threshold = fold_bn_sign(block.bn, -bound, bound, frac)
    else:
        check(kind == "dense", f"layer {name}: the output layer of a BNN is dense (bfc<n>bnn-bn)")
        fmt_scale = scale_format(block.bn, cfg.options["scale_bits"])
    packed = pack_weights(codes) if kind == "dense" else None
    return XnorWeights(codes, packed, bitplane, frac, bound, threshold, fmt_scale)


def xnor_run(kind: str, stride: int, padding: int, block: BnnBlock, x_raw: np.ndarray, params: XnorWeights,
             cfg) -> tuple[np.ndarray, np.ndarray, dict]:
    """One BNN stage on raw inputs of ``cfg.fmt_x``: (raw ``y`` in fmt_y, dots, statistics)."""
    p = params
    if kind == "dense":
        x = x_raw.reshape(x_raw.shape[0], -1)
        res = (bitplane_dense(x, cfg.fmt_x, p.packed) if p.bitplane else xnor_dense(x, p.packed))
    elif p.bitplane:
        res = bitplane_conv2d(x_raw, cfg.fmt_x, p.codes, stride=stride, padding=padding)
    else:
        res = xnor_conv2d(x_raw, p.codes, stride=stride, padding=padding, pad_mode="zero")
    exact = np.asarray(res.y, dtype=np.int64)
    dots = exact if cfg.overflow is Overflow.IDEAL else wrap_raw(exact, QFormat(cfg.acc_bits, 0))
    affected = int(np.count_nonzero(dots != exact))
    k = int(np.prod(p.codes.shape[1:])) if kind == "conv2d" else p.codes.shape[0]
    stats = dict(additions=int(exact.size) * k, overflow_count=affected, outputs_affected=affected,
                 max_abs_acc=int(np.abs(exact).max(initial=0)))
    acc = dots
    if block.sign:
        if block.pool is not None and cfg.options["pool_on"] == "bits":
            a = threshold_then_pool(acc, p.threshold, *block.pool, flat=block.bn_flat)
        else:
            if block.pool is not None:
                acc = maxpool_int(acc, *block.pool)
            a = p.threshold.apply(acc.reshape(len(acc), -1) if block.bn_flat else acc)
        y = a.astype(np.int64) << cfg.fmt_y.frac_bits
    else:
        y = batchnorm_fixed(acc, block.bn, fmt_scale=p.fmt_scale, fmt_y=cfg.fmt_y, frac_bits_acc=p.frac,
                            acc_max_abs=p.bound, rounding=cfg.rounding)
    return y, dots, stats
