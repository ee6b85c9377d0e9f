"""Learning-rate schedules of the lecture notes ("learning rate schedules").

``t`` counts epochs from 0; the schedule gives the learning rate of epoch ``t``.

===============  ====================================  ===========================
name             epsilon_t                             parameters
===============  ====================================  ===========================
``constant``     ``eps0``                              --
``step``         ``eps0 * factor ** floor(t / every)``  ``every`` (T), ``factor``
``exponential``  ``eps0 * exp(-k t)``                  ``k``
``inverse``      ``eps0 / (1 + k t)`` (1/t decay)      ``k``
===============  ====================================  ===========================

The notes' step decay: "decay learning rate by half every few epochs"
(``factor=0.5``), with T = 2 or 10 epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import FxpsimError, check
from .optim import check_lr

SCHEDULES = ("constant", "step", "exponential", "inverse")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A learning-rate schedule: ``schedule(t)`` is the rate of epoch ``t`` (0-based)."""

    kind: str = "constant"
    lr0: float = 0.001
    k: float = 0.1
    every: int = 10
    factor: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", parse_schedule(self.kind))
        object.__setattr__(self, "lr0", check_lr(self.lr0))
        check(self.k >= 0 and math.isfinite(self.k), f"schedule decay k={self.k!r} must be a finite number >= 0")
        check(isinstance(self.every, int) and self.every >= 1,
              f"step decay every={self.every!r} must be a whole number of epochs >= 1")
        check(0 < self.factor <= 1, f"step decay factor={self.factor!r} must be in (0, 1], e.g. 0.5")

    def __call__(self, t: int) -> float:
        if self.kind == "step":
            return self.lr0 * self.factor ** (t // self.every)
        if self.kind == "exponential":
            return self.lr0 * math.exp(-self.k * t)
        if self.kind == "inverse":
            return self.lr0 / (1.0 + self.k * t)
        return self.lr0

    def to_dict(self) -> dict:
        """JSON-able description (stored in a model's training metadata)."""
        out = {"kind": self.kind, "lr0": self.lr0}
        if self.kind == "step":
            out.update(every=self.every, factor=self.factor)
        elif self.kind in ("exponential", "inverse"):
            out["k"] = self.k
        return out


def parse_schedule(name: str) -> str:
    """Canonical schedule name (aliases: step-decay, exp, 1/t) or a one-line error."""
    key = str(name).strip().lower()
    key = {"step-decay": "step", "exp": "exponential", "1/t": "inverse", "inverse-time": "inverse",
           "none": "constant"}.get(key, key)
    if key not in SCHEDULES:
        raise FxpsimError(f"unknown learning-rate schedule {name!r}: use one of {', '.join(SCHEDULES)}")
    return key


def constant(lr0: float) -> Schedule:
    """``eps_t = eps0``."""
    return Schedule("constant", lr0)


def step_decay(lr0: float, every: int = 10, factor: float = 0.5) -> Schedule:
    """``eps_t = eps0 * factor ** floor(t / every)``."""
    return Schedule("step", lr0, every=every, factor=factor)


def exponential(lr0: float, k: float = 0.1) -> Schedule:
    """``eps_t = eps0 * exp(-k t)``."""
    return Schedule("exponential", lr0, k=k)


def inverse_time(lr0: float, k: float = 0.1) -> Schedule:
    """1/t decay: ``eps_t = eps0 / (1 + k t)``."""
    return Schedule("inverse", lr0, k=k)
