"""Binary and ternary quantizers for training (float in, float out).

- :func:`binarize` — BinaryConnect / BNN deterministic: sign, +1 at 0.
- :func:`binarize_stochastic` — BinaryConnect stochastic: +1 with
  probability ``hard_sigmoid(x) = clip((x+1)/2, 0, 1)`` (seeded).
- :func:`ste_grad` — straight-through estimator of sign (BNN, Hubara et
  al. 2016): ``g * 1{|x| <= 1}``, cancelled where ``|x| > 1``.
- :func:`bwn_binarize` — BWN / XNOR-Net Algorithm 1: per output filter
  ``A = mean|W|`` (``||W||_l1 / n``), ``B = sign(W)``, ``W~ = A B``.
- :func:`xnor_input_scale` — XNOR-Net's dense input scaling ``beta = mean|x|`` per row.
- :func:`twn_ternarize` — TWN (Li et al. 2016): ``Delta = 0.7 mean|W|``,
  ``alpha`` = mean of ``|W_i|`` over ``|W_i| > Delta``, per layer.
- :func:`ttq_ternarize` / :func:`ttq_grads` — TTQ (Zhu et al., ICLR 2017):
  ``Delta = t max|W|``, values ``+W_p`` / 0 / ``-W_n`` with given scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check
from ..qformat import _as_float_array


def binarize(x) -> np.ndarray:
    """Deterministic binarization ``sign(x)`` with +1 at 0 (BinaryConnect Eq. 1), float64."""
    return np.where(_as_float_array(x, "value to binarize") >= 0, 1.0, -1.0)


def hard_sigmoid(x) -> np.ndarray:
    """BinaryConnect's ``sigma(x) = clip((x + 1) / 2, 0, 1)``."""
    return np.clip((_as_float_array(x, "value") + 1.0) / 2.0, 0.0, 1.0)


def binarize_stochastic(x, seed) -> np.ndarray:
    """Stochastic binarization (BinaryConnect Eq. 2): +1 with probability hard_sigmoid(x).

    ``seed``: an int or a ``numpy.random.Generator`` (so a trainer can pass its own stream).
    """
    check(seed is not None, "stochastic binarization needs a seed: pass seed=<int> so results repeat")
    p = hard_sigmoid(x)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return np.where(rng.random(p.shape) < p, 1.0, -1.0)


def ste_grad(x, grad) -> np.ndarray:
    """Straight-through estimator of sign: ``grad * 1{|x| <= 1}`` (BNN Sec. 1.3, "hardtanh")."""
    x = _as_float_array(x, "STE input")
    g = _as_float_array(grad, "STE gradient")
    check(x.shape == g.shape, f"STE input shape {x.shape} != gradient shape {g.shape}: pass matching arrays")
    return np.where(np.abs(x) <= 1.0, g, 0.0)


def _filter_axes(w: np.ndarray, out_axis: int | None) -> tuple[int, ...]:
    """Axes reduced for one output filter: dense (K, N) -> 0, conv (F, C, kh, kw) -> 1, 2, 3."""
    if out_axis is None:
        check(w.ndim in (2, 4), f"weights of shape {w.shape}: give out_axis for other than (K, N) or (F, C, kh, kw)")
        out_axis = 1 if w.ndim == 2 else 0
    out_axis %= w.ndim
    return tuple(i for i in range(w.ndim) if i != out_axis)


@dataclass(frozen=True, slots=True, eq=False)
class ScaledBinary:
    """``W~ = scale * sign`` with ``scale`` broadcastable against ``sign``."""

    sign: np.ndarray
    scale: np.ndarray

    @property
    def value(self) -> np.ndarray:
        """The scaled weights ``A * B``."""
        return self.scale * self.sign


def bwn_binarize(w, out_axis: int | None = None) -> ScaledBinary:
    """BWN / XNOR-Net Algorithm 1: ``A_k = ||W_k||_1 / n`` per output filter, ``B = sign(W)``.

    Dense ``(K, N)``: one A per column (output neuron); conv ``(F, C, kh,
    kw)``: one per filter. ``sign`` is +1 at 0.
    """
    arr = _as_float_array(w, "weights")
    axes = _filter_axes(arr, out_axis)
    return ScaledBinary(binarize(arr), np.mean(np.abs(arr), axis=axes, keepdims=True))


def xnor_input_scale(x) -> np.ndarray:
    """XNOR-Net's input scale for a dense layer: ``beta = mean |x|`` per row, shape (B, 1)."""
    arr = _as_float_array(x, "input")
    check(arr.ndim == 2, f"input of shape {arr.shape}: the dense input scale takes (B, K)")
    return np.mean(np.abs(arr), axis=1, keepdims=True)


def _check_threshold(t: float, what: str) -> float:
    t = float(t)
    check(np.isfinite(t) and 0.0 < t <= 1.0,
          f"ternary threshold {what}={t!r} is outside (0, 1]: give a fraction such as 0.7 (TWN) or 0.05 (TTQ)")
    return t


@dataclass(frozen=True, slots=True, eq=False)
class Ternary:
    """Ternary weights: codes in {-1, 0, +1}, the threshold Delta and the value per code."""

    codes: np.ndarray
    delta: float
    pos_scale: float
    neg_scale: float

    @property
    def value(self) -> np.ndarray:
        """``+pos_scale`` where code is +1, ``-neg_scale`` where -1, 0 elsewhere."""
        return np.where(self.codes > 0, self.pos_scale, np.where(self.codes < 0, -self.neg_scale, 0.0))


def twn_ternarize(w, factor: float = 0.7) -> Ternary:
    """TWN (Li et al. 2016): ``Delta = factor * mean|W|`` (factor 0.7), per-layer scale.

    ``alpha = mean(|W_i| : |W_i| > Delta)`` (0 if no weight exceeds Delta);
    codes ``sign(W_i)`` where ``|W_i| > Delta``, else 0.
    """
    t = _check_threshold(factor, "factor")
    arr = _as_float_array(w, "weights")
    mag = np.abs(arr)
    delta = t * float(mag.mean()) if arr.size else 0.0
    keep = mag > delta
    alpha = float(mag[keep].mean()) if np.any(keep) else 0.0
    codes = np.where(keep, np.sign(arr), 0.0).astype(np.int8)
    return Ternary(codes, delta, alpha, alpha)


def ttq_ternarize(w, pos_scale: float, neg_scale: float, t: float = 0.05) -> Ternary:
    """TTQ (Zhu et al., ICLR 2017): ``Delta = t * max|W|``; ``+W_p`` above, ``-W_n`` below ``-Delta``, else 0."""
    tt = _check_threshold(t, "t")
    check(float(pos_scale) > 0 and float(neg_scale) > 0,
          f"TTQ scales W_p={pos_scale!r}, W_n={neg_scale!r} must be > 0 (W_n is the magnitude of the negative value)")
    arr = _as_float_array(w, "weights")
    delta = tt * float(np.abs(arr).max(initial=0.0))
    codes = np.where(arr > delta, 1, np.where(arr < -delta, -1, 0)).astype(np.int8)
    return Ternary(codes, delta, float(pos_scale), float(neg_scale))


def ttq_grads(tern: Ternary, grad) -> tuple[np.ndarray, float, float]:
    """TTQ backward (Zhu et al. Eq. 7, 8): (latent-weight grad, dL/dW_p, dL/dW_n).

    ``dL/dW_p = sum_{I_p} g``; the negative value is ``-W_n`` (W_n > 0), so
    the chain rule gives ``dL/dW_n = -sum_{I_n} g`` (the paper prints the
    sum without the minus). The latent weights get ``W_p g`` on I_p, ``g``
    on I_z and ``W_n g`` on I_n.
    """
    g = _as_float_array(grad, "TTQ gradient")
    check(g.shape == tern.codes.shape, f"gradient shape {g.shape} != weight shape {tern.codes.shape}")
    pos, neg = tern.codes > 0, tern.codes < 0
    latent = np.where(pos, tern.pos_scale * g, np.where(neg, tern.neg_scale * g, g))
    return latent, float(g[pos].sum()), float(-g[neg].sum())
