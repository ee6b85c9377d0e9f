"""Profiling (Judd et al., ICLR 2016): integer bits from the ranges a calibration set reaches.

A :class:`LayerProfile` is a :class:`~.stages.Stage` plus what the float
model reached on it over the calibration set: the stage's input, its
kernel output and its pre-activation sum ``W x + b``. Weight ranges come
from the stage itself. :func:`config_from_profile` turns profiles into a
Judd-style config; :func:`data_ranges` gives one range per data format.
(Module ``profiling``, not ``profile``: :func:`profile` is re-exported by
the package under that name.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import LayerConfig, NetworkConfig
from ..graph.geometry import conv_out_size, window_view
from ..qformat import QFormat, int_bits_for
from .dag import dag_kernel_inputs
from .simulator import Simulator
from .stages import Stage

__all__ = ["LayerProfile", "config_from_profile", "data_ranges", "profile"]


@dataclass(frozen=True, slots=True, repr=False)
class LayerProfile:
    """Observed ranges of one stage over a calibration set (float model)."""

    stage: Stage
    max_abs_x: float  # the stage's input
    max_abs_y: float  # the kernel's output (after folded BN and fused ReLU)
    min_y: float
    max_abs_acc: float  # the pre-activation sum

    def __repr__(self) -> str:
        return (f"LayerProfile({self.name!r}, fan_in={self.fan_in}, max_abs_w={self.max_abs_w:.6g}, "
                f"max_abs_x={self.max_abs_x:.6g}, max_abs_y={self.max_abs_y:.6g}, min_y={self.min_y:.6g}, "
                f"max_abs_acc={self.max_abs_acc:.6g})")

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def fan_in(self) -> int:
        return self.stage.fan_in

    @property
    def max_abs_w(self) -> float:
        """Max |w| of the stage's (folded) float weights."""
        return float(np.abs(self.stage.W).max())

    @property
    def max_abs_b(self) -> float:
        return float(np.abs(self.stage.b).max())


def profile(sim: Simulator, x, prepared: bool = False) -> list[LayerProfile]:
    """Profile inputs, outputs and pre-activations of every stage of ``sim`` on ``x``."""
    xf = x if prepared else sim.prepare(x)
    trace = sim.float_trace(xf)
    out = []
    h_in = xf
    dag = dag_kernel_inputs(sim, xf) if getattr(sim, "is_dag", False) else None
    for k, (s, (kernel_out, stage_out)) in enumerate(zip(sim.stages, trace)):
        max_y = float(np.abs(kernel_out).max())
        if dag is not None:  # the kernel reads its source node; fmt_y holds the stage's merges too
            h_in, max_y = dag[k]
        pre = _pre_activation(s, h_in)
        out.append(LayerProfile(s, float(np.abs(h_in).max()), max_y,
                                float(kernel_out.min()), float(np.abs(pre).max())))
        h_in = stage_out
    return out


def _pre_activation(s: Stage, x: np.ndarray) -> np.ndarray:
    """The float sum W x + b (folded) of a stage, before its activation: the float reference,
    windows from :mod:`fxpsim.graph.geometry` (cross-correlation, zero padding)."""
    if s.kind == "dense":
        return x.reshape(len(x), -1) @ s.W + s.b
    pad, k = s.padding, s.kernel_size
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = conv_out_size(x.shape[2], k, s.stride, pad), conv_out_size(x.shape[3], k, s.stride, pad)
    win = window_view(xp, k, s.stride, ho, wo)
    return np.einsum("bchwij,fcij->bfhw", win, s.W, optimize=True) + s.b[None, :, None, None]


def data_ranges(prof: list[LayerProfile]) -> list[float]:
    """Max |value| of each data format: the network input, then each layer's output.

    Layer i's output format must hold its kernel's output (before pooling)
    and is also layer i+1's input format.
    """
    out = [prof[0].max_abs_x]
    for i, p in enumerate(prof):
        nxt = prof[i + 1].max_abs_x if i + 1 < len(prof) else 0.0
        out.append(max(p.max_abs_y, nxt))
    return out


def config_from_profile(prof: list[LayerProfile], weight_bits: int = 16, data_bits: int = 16,
                        acc_bits: int = 48, overflow="ideal", rounding="nearest-even",
                        margin_bits: int = 0) -> NetworkConfig:
    """Judd-style config: int bits from each profiled max |value|, the rest fraction bits.

    The output format of a layer is the input format of the next, as in
    Judd et al.'s one data format per layer; the last layer's output gets
    its own profiled range. ``margin_bits`` adds integer headroom.
    """
    data = [QFormat.from_width(data_bits, int_bits_for(m) + margin_bits) for m in data_ranges(prof)]
    layers = []
    for i, p in enumerate(prof):
        fmt_w = QFormat.from_width(weight_bits, int_bits_for(p.max_abs_w) + margin_bits)
        layers.append(LayerConfig(p.name, fmt_w, data[i], data[i + 1], acc_bits, overflow, rounding))
    return NetworkConfig(tuple(layers))
