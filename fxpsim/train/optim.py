"""Optimizers of the lecture notes, Algorithms 8.1-8.7, as one general update.

Sorted in order of increasing complexity (as tinygrad's ``nn/optim.py``):
each named constructor is a thin call of :class:`Optimizer`, whose
parameters select the variant. ``g`` is the mini-batch gradient of the
(regularised) loss, ``eps`` the learning rate epsilon, ``alpha`` the
momentum, ``delta`` the small stabilising constant.

- ``sgd`` (8.1): ``theta -= eps * g``
- ``momentum`` (8.2): ``v = alpha*v - eps*g; theta += v``
- ``nesterov`` (8.3): ``g`` taken at ``theta + alpha*v``, then as momentum
- ``adagrad`` (8.4): ``r += g*g; theta -= eps / (delta + sqrt(r)) * g``
- ``rmsprop`` (8.5): ``r = rho*r + (1-rho)*g*g; theta -= eps / sqrt(delta + r) * g``
- ``rmsprop-nesterov`` (8.6): ``g`` at ``theta + alpha*v``; ``r`` as 8.5;
  ``v = alpha*v - eps / sqrt(delta + r) * g; theta += v``
- ``adam`` (8.7): ``s = rho1*s + (1-rho1)*g; r = rho2*r + (1-rho2)*g*g``;
  ``theta -= eps * (s / (1-rho1^t)) / (sqrt(r / (1-rho2^t)) + delta)``

Algorithm 8.6 prints ``eps / sqrt(r)`` without a delta; here the delta of
Algorithm 8.5 sits under the root (``delta=0`` gives 8.6 literally, but
divides by zero where a gradient has always been zero).

Nesterov variants evaluate the gradient at the interim point
``theta~ = theta + alpha*v``: the trainer calls :meth:`Optimizer.lookahead`
before the forward pass (it moves the parameters to ``theta~`` in place)
and :meth:`Optimizer.step` after the backward pass (it puts back
``theta + v``).

Regularisation (lecture notes, "add regularization term to loss"):
``L + l2 * sum W^2 + l1 * sum |W|`` over the parameters flagged ``decay``
(weights, not biases or BatchNorm), so ``g`` gains ``2*l2*W + l1*sign(W)``
before the update.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import FxpsimError, check

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "rmsprop-nesterov", "adam")


class Optimizer:
    """The general update of Algorithms 8.1-8.7; variants are parameters.

    ``params`` are updated in place (the network keeps references to them).
    ``second_moment``: ``None``, ``"sum"`` (AdaGrad's ``r += g*g``) or
    ``"ema"`` (``r = rho*r + (1-rho)*g*g``). ``delta_in_sqrt`` puts delta
    under the root (RMSProp) instead of after it (AdaGrad, Adam).
    ``first_moment`` keeps Adam's ``s`` with decay ``rho1``; ``bias_correction``
    divides ``s`` and ``r`` by ``1 - rho^t``. ``momentum`` > 0 keeps a velocity
    ``v``; ``nesterov`` takes the gradient at ``theta + alpha*v``.
    """

    def __init__(self, params: Sequence[np.ndarray], lr: float, *, momentum: float = 0.0,
                 nesterov: bool = False, second_moment: str | None = None, rho: float = 0.9,
                 delta: float = 1e-8, delta_in_sqrt: bool = False, first_moment: bool = False,
                 rho1: float = 0.9, bias_correction: bool = False, l2: float = 0.0, l1: float = 0.0,
                 decay: Sequence[bool] | None = None, name: str = "optimizer"):
        self.params = list(params)
        for p in self.params:
            check(isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.floating),
                  "optimizer parameters must be floating-point numpy arrays (updated in place)")
        check(second_moment in (None, "sum", "ema"),
              f"second_moment={second_moment!r} must be None, 'sum' (AdaGrad) or 'ema' (RMSProp/Adam)")
        check(not nesterov or momentum > 0, "nesterov=True needs a momentum alpha > 0")
        for label, value in (("rho", rho), ("rho1", rho1), ("momentum", momentum)):
            check(0.0 <= value < 1.0, f"{label}={value!r} must be in [0, 1)")
        for label, value in (("delta", delta), ("l2", l2), ("l1", l1)):
            check(value >= 0.0, f"{label}={value!r} must be >= 0")
        self.lr = check_lr(lr)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.second_moment, self.rho = second_moment, float(rho)
        self.delta, self.delta_in_sqrt = float(delta), bool(delta_in_sqrt)
        self.first_moment, self.rho1 = bool(first_moment), float(rho1)
        self.bias_correction = bool(bias_correction)
        self.l2, self.l1 = float(l2), float(l1)
        self.decay = [True] * len(self.params) if decay is None else [bool(d) for d in decay]
        check(len(self.decay) == len(self.params), "decay needs one flag per parameter")
        self.name = name
        self.t = 0  # time step of Algorithm 8.7
        zeros = lambda: [np.zeros_like(p) for p in self.params]  # noqa: E731
        self.v = zeros() if self.momentum > 0 else None
        self.r = zeros() if second_moment else None
        self.s = zeros() if first_moment else None
        self._theta: list[np.ndarray] | None = None  # theta saved during a Nesterov look-ahead

    def lookahead(self) -> None:
        """Nesterov interim update ``theta~ = theta + alpha*v`` in place (8.3, 8.6); else nothing."""
        if not self.nesterov:
            return
        check(self._theta is None, "lookahead() called twice without step()")
        self._theta = [p.copy() for p in self.params]
        for p, v in zip(self.params, self.v):
            p += self.momentum * v

    def penalty(self) -> float:
        """The regularisation term ``l2 * sum W^2 + l1 * sum |W|`` at the current parameters."""
        total = 0.0
        for p, d in zip(self.params, self.decay):
            if d and self.l2:
                total += self.l2 * float(np.sum(np.square(p, dtype=np.float64)))
            if d and self.l1:
                total += self.l1 * float(np.sum(np.abs(p), dtype=np.float64))
        return total

    def step(self, grads: Sequence[np.ndarray]) -> None:
        """Apply one update with the mini-batch gradients ``grads`` (one per parameter)."""
        grads = list(grads)
        check(len(grads) == len(self.params), f"step() got {len(grads)} gradients for {len(self.params)} parameters")
        check(not self.nesterov or self._theta is not None,
              f"{self.name}: call lookahead() before computing the gradient (Nesterov interim point)")
        self.t += 1
        eps = self.lr
        for i, (p, g) in enumerate(zip(self.params, grads)):
            check(g.shape == p.shape, f"gradient {i} has shape {g.shape}, parameter {p.shape}")
            g = g.astype(p.dtype, copy=True)
            if self.decay[i] and self.l2:
                g += (2.0 * self.l2) * p
            if self.decay[i] and self.l1:
                g += self.l1 * np.sign(p)
            d = self._direction(i, g)
            if self.v is None:
                p -= eps * d
            else:
                v = self.v[i]
                v *= self.momentum
                v -= eps * d
                if self.nesterov:
                    p[...] = self._theta[i] + v
                else:
                    p += v
        self._theta = None

    def _direction(self, i: int, g: np.ndarray) -> np.ndarray:
        """The scaled gradient: ``g``, AdaGrad/RMSProp's ``g / root``, or Adam's ``s^ / root``."""
        if self.second_moment is None:
            return g
        r = self.r[i]
        if self.second_moment == "sum":
            r += g * g
        else:
            r *= self.rho
            r += (1.0 - self.rho) * (g * g)
        if self.first_moment:
            s = self.s[i]
            s *= self.rho1
            s += (1.0 - self.rho1) * g
            num = s
        else:
            num = g
        if self.bias_correction:
            num = num / (1.0 - self.rho1 ** self.t) if self.first_moment else num
            r = r / (1.0 - self.rho ** self.t)
        root = np.sqrt(self.delta + r) if self.delta_in_sqrt else np.sqrt(r) + self.delta
        return num / root


def check_lr(lr: float) -> float:
    """A learning rate must be a finite number > 0."""
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise FxpsimError(f"learning rate {lr!r} is not a number: give e.g. --lr 0.001") from None
    check(np.isfinite(value) and value > 0, f"learning rate {lr!r} must be a finite number > 0, e.g. 0.001")
    return value


def SGD(params, lr: float = 0.01, **reg) -> Optimizer:
    """Algorithm 8.1: ``theta -= eps * g``."""
    return Optimizer(params, lr, name="sgd", **reg)


def Momentum(params, lr: float = 0.01, momentum: float = 0.9, **reg) -> Optimizer:
    """Algorithm 8.2: ``v = alpha*v - eps*g; theta += v``."""
    return Optimizer(params, lr, momentum=momentum, name="momentum", **reg)


def Nesterov(params, lr: float = 0.01, momentum: float = 0.9, **reg) -> Optimizer:
    """Algorithm 8.3: momentum with the gradient taken at ``theta + alpha*v``."""
    return Optimizer(params, lr, momentum=momentum, nesterov=True, name="nesterov", **reg)


def AdaGrad(params, lr: float = 0.01, delta: float = 1e-7, **reg) -> Optimizer:
    """Algorithm 8.4: ``r += g*g; theta -= eps / (delta + sqrt(r)) * g``."""
    return Optimizer(params, lr, second_moment="sum", delta=delta, name="adagrad", **reg)


def RMSProp(params, lr: float = 0.001, rho: float = 0.9, delta: float = 1e-6, momentum: float = 0.0,
            nesterov: bool = False, **reg) -> Optimizer:
    """Algorithm 8.5 (``momentum=0``); with ``nesterov=True`` Algorithm 8.6."""
    return Optimizer(params, lr, second_moment="ema", rho=rho, delta=delta, delta_in_sqrt=True,
                     momentum=momentum, nesterov=nesterov,
                     name="rmsprop-nesterov" if nesterov else "rmsprop", **reg)


def Adam(params, lr: float = 0.001, rho1: float = 0.9, rho2: float = 0.999, delta: float = 1e-8,
         **reg) -> Optimizer:
    """Algorithm 8.7: first and second moments with bias correction."""
    return Optimizer(params, lr, first_moment=True, rho1=rho1, second_moment="ema", rho=rho2,
                     delta=delta, bias_correction=True, name="adam", **reg)


def parse_optimizer(name: str) -> str:
    """Canonical optimizer name or a one-line error listing the choices."""
    key = str(name).strip().lower().replace("_", "-")
    key = {"sgd-momentum": "momentum", "nag": "nesterov", "rmsprop-nag": "rmsprop-nesterov"}.get(key, key)
    if key not in OPTIMIZERS:
        raise FxpsimError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
    return key


def make_optimizer(name: str, params, lr: float, *, momentum: float = 0.9, **reg) -> Optimizer:
    """The optimizer called ``name`` (see :data:`OPTIMIZERS`) over ``params``.

    ``momentum`` is alpha for momentum, nesterov and rmsprop-nesterov; ``reg``
    holds ``l2``, ``l1`` and ``decay`` flags.
    """
    key = parse_optimizer(name)
    if key == "sgd":
        return SGD(params, lr, **reg)
    if key == "momentum":
        return Momentum(params, lr, momentum, **reg)
    if key == "nesterov":
        return Nesterov(params, lr, momentum, **reg)
    if key == "adagrad":
        return AdaGrad(params, lr, **reg)
    if key == "rmsprop":
        return RMSProp(params, lr, **reg)
    if key == "rmsprop-nesterov":
        return RMSProp(params, lr, momentum=momentum, nesterov=True, **reg)
    return Adam(params, lr, **reg)
