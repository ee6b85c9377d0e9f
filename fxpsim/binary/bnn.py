"""BNN inference as hardware runs it (Courbariaux, Hubara et al., NIPS 2016, Algorithm 4).

1. First layer: ``a1 = sum_{n=1..8} 2^(n-1) XnorDotProduct(a0^n, W1b)`` on
   the bit planes of the 8-bit input (:func:`fxpsim.binary.bitplane_dense`).
2. Hidden layers: ``a_k = XnorDotProduct(a_{k-1}^b, W_k^b)``, then
   ``Sign(BatchNorm(a_k))`` folded into one integer threshold per neuron
   (:func:`fold_bn_sign`): a comparison, no multiplier.
3. Output layer: XnorDotProduct then BatchNorm in fixed point
   (:func:`batchnorm_fixed`, formats from :mod:`fxpsim.qformat`).

The float reference (:mod:`fxpsim.binary.reference`) evaluates the same
network with float64 ±1 matrices and :func:`batchnorm_float`; the hidden
activations and the output dots are bit-exact equal to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check
from ..qformat import MAX_WIDTH, QFormat, Rounding, check_raw, convert, parse_rounding, quantize
from .layers import bitplane_dense, xnor_dense
from .packing import check_pm1, pack_weights
from .popcount import PopcountWidth


@dataclass(frozen=True, slots=True, eq=False)
class BatchNormParams:
    """Per-neuron BatchNorm at inference: ``gamma * (a - mean) / sqrt(var + eps) + beta``."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-5

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("gamma", "beta", "mean", "var"):
            arr = np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64))
            check(arr.ndim == 1, f"BatchNorm {name} has shape {arr.shape}: give one value per neuron")
            check(bool(np.all(np.isfinite(arr))), f"BatchNorm {name} holds NaN/inf: fix the trained model")
            arrays[name] = arr
        n = arrays["gamma"].shape[0]
        for name, arr in arrays.items():
            check(arr.shape == (n,), f"BatchNorm {name} has {arr.shape[0]} values but gamma has {n}: "
                  "give one value per neuron for every parameter")
            object.__setattr__(self, name, arr)
        eps = float(self.eps)
        check(np.isfinite(eps) and eps >= 0, f"BatchNorm eps={self.eps!r} must be finite and >= 0")
        object.__setattr__(self, "eps", eps)
        check(bool(np.all(arrays["var"] + eps > 0)),
              "BatchNorm var + eps <= 0 for some neuron: variances must be >= 0 and var + eps > 0")

    @property
    def n(self) -> int:
        """Number of neurons (channels)."""
        return self.gamma.shape[0]


def _per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """Broadcast a per-neuron vector over dense ``(B, N)`` or conv ``(B, F, H, W)``."""
    return p if ndim == 2 else p.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_float(a, bn: BatchNormParams) -> np.ndarray:
    """The one float64 BatchNorm expression: ``(a - mean) / sqrt(var + eps) * gamma + beta``."""
    a = np.asarray(a, dtype=np.float64)
    nd = a.ndim
    std = np.sqrt(bn.var + bn.eps)
    return (a - _per_channel(bn.mean, nd)) / _per_channel(std, nd) * _per_channel(bn.gamma, nd) \
        + _per_channel(bn.beta, nd)


def sign(y) -> np.ndarray:
    """BNN's Sign: +1 where ``y >= 0`` (so +1 at 0), else -1, as int8."""
    return np.where(np.asarray(y) >= 0, 1, -1).astype(np.int8)


@dataclass(frozen=True, slots=True, eq=False)
class SignThreshold:
    """``Sign(BatchNorm(a))`` as integer compares: +1 iff ``a >= t`` (or ``a <= t`` where flipped)."""

    threshold: np.ndarray
    """int64 per neuron, within ``[acc_min - 1, acc_max + 1]``."""
    flip: np.ndarray
    """bool per neuron: gamma < 0, so the comparison is ``a <= threshold``."""

    def apply(self, acc) -> np.ndarray:
        """±1 int8 activations from integer accumulators (dense or NCHW)."""
        a = np.asarray(acc, dtype=np.int64)
        t = _per_channel(self.threshold, a.ndim)
        f = _per_channel(self.flip, a.ndim)
        return np.where(np.where(f, a <= t, a >= t), 1, -1).astype(np.int8)


def fold_bn_sign(bn: BatchNormParams, acc_min: int, acc_max: int, frac_bits: int = 0) -> SignThreshold:
    """Fold BatchNorm + Sign into one integer threshold per neuron (BNN, Sec. on inference).

    With ``s = sqrt(var + eps) > 0``, ``gamma (a - mean)/s + beta >= 0`` is
    ``a >= mean - beta*s/gamma`` for gamma > 0 and ``a <= ...`` (flipped)
    for gamma < 0; gamma = 0 gives the constant ``beta >= 0``. The
    threshold is not taken from that real formula but found by bisection on
    the integers ``[acc_min, acc_max]`` with :func:`batchnorm_float` itself
    (each IEEE step is monotone in ``a``), so the compare equals the float
    computation bit for bit, ties included. ``frac_bits``: the accumulator
    holds ``a * 2**frac_bits`` (first layer from a fractional input format).
    """
    acc_min, acc_max = int(acc_min), int(acc_max)
    check(acc_min <= acc_max, f"accumulator range [{acc_min}, {acc_max}] is empty: give acc_min <= acc_max")
    check(max(abs(acc_min), abs(acc_max)) + 1 < 2 ** 53,
          f"accumulator range [{acc_min}, {acc_max}] exceeds 2**53: float64 cannot fold it exactly")
    flip = bn.gamma < 0
    sgn = np.where(flip, -1, 1).astype(np.int64)

    def positive(m: np.ndarray) -> np.ndarray:  # BN(a) >= 0 at a = sgn * m, nondecreasing in m
        a = np.ldexp((sgn * m).astype(np.float64), -frac_bits)[None, :]
        return (batchnorm_float(a, bn)[0] >= 0)

    # in m = sgn * a, find the smallest m in [m_lo, m_hi + 1] with positive(m)
    m_lo = np.where(flip, -acc_max, acc_min).astype(np.int64)
    m_hi = np.where(flip, -acc_min, acc_max).astype(np.int64)
    lo = m_lo - 1  # invariant: positive(lo) false (virtual), positive(hi) true (virtual)
    hi = m_hi + 1
    while np.any(hi - lo > 1):
        mid = lo + (hi - lo) // 2
        p = positive(mid)
        active = hi - lo > 1
        hi = np.where(active & p, mid, hi)
        lo = np.where(active & ~p, mid, lo)
    return SignThreshold(sgn * hi, flip)


def batchnorm_fixed(acc, bn: BatchNormParams, *, fmt_scale: QFormat, fmt_y: QFormat,
                    frac_bits_acc: int = 0, acc_max_abs: int | None = None,
                    rounding: str | Rounding = Rounding.NEAREST_EVEN) -> np.ndarray:
    """Output-layer BatchNorm in fixed point: ``y = a*g + h`` (BNN Algorithm 4, step 3).

    ``g = gamma / sqrt(var + eps)`` quantized to ``fmt_scale``; ``h = beta -
    mean*g`` quantized to the product's frac bits ``frac_bits_acc +
    fmt_scale.frac_bits``; product and sum exact in int64; one rounding
    (``qformat.convert``) to ``fmt_y.frac_bits``, then saturated to ``fmt_y``.
    Returns raw integers of ``fmt_y``.
    """
    rounding = parse_rounding(rounding)
    a = np.asarray(acc)
    check(a.dtype.kind in "iu", f"output-layer accumulators have dtype {a.dtype}: pass integer dots")
    a = a.astype(np.int64)
    g = bn.gamma / np.sqrt(bn.var + bn.eps)
    h = bn.beta - bn.mean * g
    g_raw = quantize(g, fmt_scale, Rounding.NEAREST_EVEN, "clip")
    frac_p = frac_bits_acc + fmt_scale.frac_bits
    max_a = int(np.abs(a).max(initial=0)) if acc_max_abs is None else int(acc_max_abs)
    prod_bits = max_a.bit_length() + fmt_scale.width
    check(prod_bits <= 60,
          f"|acc| up to {max_a} times {fmt_scale} needs {prod_bits} bits > 60: use a narrower fmt_scale")
    check(bool(np.all(np.abs(h) < 2.0 ** (60 - frac_p))),
          f"BN offset beta - mean*g reaches {float(np.abs(h).max()):g}, which at {frac_p} frac bits "
          "exceeds 60 bits: use fewer fmt_scale frac bits")
    fmt_h = QFormat.from_width(MAX_WIDTH, MAX_WIDTH - frac_p)  # the widest int64 datapath format
    h_raw = quantize(h, fmt_h, Rounding.NEAREST_EVEN, "clip")
    y_acc = a * _per_channel(g_raw, a.ndim) + _per_channel(h_raw, a.ndim)
    return convert(y_acc, fmt_h, fmt_y, rounding)  # rounds, saturates


@dataclass(frozen=True, slots=True, eq=False)
class BnnMlp:
    """A BNN multilayer perceptron: ±1 weights ``(K_l, N_l)`` and one BatchNorm per layer."""

    weights: tuple
    bns: tuple
    fmt_x: QFormat

    def __post_init__(self) -> None:
        ws = tuple(check_pm1(w, f"layer {i} weights") for i, w in enumerate(self.weights))
        check(len(ws) >= 1 and len(ws) == len(self.bns),
              f"BnnMlp has {len(ws)} weight matrices and {len(self.bns)} BatchNorms: give one of each per layer")
        for i, (w, bn) in enumerate(zip(ws, self.bns)):
            check(w.ndim == 2, f"layer {i} weights have shape {w.shape}: dense weights are (K, N)")
            check(bn.n == w.shape[1], f"layer {i} has N={w.shape[1]} outputs but its BatchNorm has {bn.n}")
            if i:
                check(w.shape[0] == ws[i - 1].shape[1],
                      f"layer {i} takes K={w.shape[0]} inputs but layer {i - 1} gives {ws[i - 1].shape[1]}")
        object.__setattr__(self, "weights", ws)
        object.__setattr__(self, "bns", tuple(self.bns))


@dataclass(frozen=True, slots=True, eq=False)
class BnnResult:
    """Output of :func:`bnn_mlp`: raw fixed-point outputs, dots and per-layer widths."""

    y: np.ndarray
    """Output layer after fixed-point BatchNorm, raw ints of ``fmt_y``."""
    acc_out: np.ndarray
    """Output layer's integer dots a_L (before BatchNorm)."""
    hidden: tuple
    """±1 int8 activations a_1^b .. a_{L-1}^b."""
    widths: tuple
    """:class:`PopcountWidth` per layer (first layer: dot_bits is a1's width)."""
    outputs_wrapped: int
    """Outputs changed by a too-narrow accumulator, all layers."""


def bnn_mlp(net: BnnMlp, x_raw, *, fmt_scale: QFormat, fmt_y: QFormat, acc_bits: int | None = None,
            rounding: str | Rounding = Rounding.NEAREST_EVEN) -> BnnResult:
    """Run a BNN MLP as Algorithm 4: bit-plane first layer, thresholds, fixed-point output BN."""
    x = check_raw(x_raw, net.fmt_x, "BNN input")
    check(x.ndim == 2 and x.shape[1] == net.weights[0].shape[0],
          f"BNN input has shape {x.shape}: expected (B, {net.weights[0].shape[0]})")
    widths: list[PopcountWidth] = []
    hidden = []
    wrapped = 0
    n_layers = len(net.weights)
    max_x = max(abs(net.fmt_x.raw_min), net.fmt_x.raw_max)
    res = bitplane_dense(x, net.fmt_x, pack_weights(net.weights[0]), acc_bits=acc_bits)
    frac, bound = net.fmt_x.frac_bits, max_x * net.weights[0].shape[0]
    for layer in range(n_layers):
        if layer:
            res = xnor_dense(hidden[-1], pack_weights(net.weights[layer]), acc_bits=acc_bits)
            frac, bound = 0, net.weights[layer].shape[0]
        widths.append(res.width)
        wrapped += res.outputs_wrapped
        if layer == n_layers - 1:
            break
        hidden.append(fold_bn_sign(net.bns[layer], -bound, bound, frac).apply(res.y))
    y = batchnorm_fixed(res.y, net.bns[-1], fmt_scale=fmt_scale, fmt_y=fmt_y, frac_bits_acc=frac,
                        acc_max_abs=bound, rounding=rounding)
    return BnnResult(y, res.y, tuple(hidden), tuple(widths), wrapped)
