"""A QONNX ``Quant`` node as a Q-format (QONNX custom op ``IntQuant``/``Quant``, Brevitas' IntQuant).

``Quant(x, scale, zeropt, bitwidth; signed, narrow, rounding_mode)`` computes
``(round(clamp(x / scale + zeropt, min_int, max_int)) - zeropt) * scale`` with
``min_int .. max_int`` = ``-2**(W-1) .. 2**(W-1) - 1`` (unsigned: ``0 .. 2**W - 1``) for
``W = bitwidth``. With one power-of-two scale ``2**-F`` for the whole tensor, zero point 0
that is exactly DESIGN.md's quantize to ``QFormat(W - F, F, signed, narrow)`` (its raw range
is ``min_int .. max_int``, QONNX's ``narrow`` dropping the most negative code, or unsigned the
top one; clamping before or after rounding to an integer bound is the same) followed by
dequantize: Brevitas' ``Q1.7``, ``UQ1.7``, ``Q-2.10``, ``Q1.7n``.

Rounding modes (QONNX's table) and fxpsim's: ``ROUND`` = ``HALF_EVEN`` -> nearest-even,
``HALF_UP`` -> nearest (ties away from zero), ``FLOOR`` -> floor, ``DOWN`` (``ROUND_TO_ZERO``)
-> toward-zero; ``CEIL``, ``UP`` and ``HALF_DOWN`` have no fxpsim mode and are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import FxpsimError, check
from ..qformat import QFormat, Rounding, dequantize, quantize

__all__ = ["QUANT_DOMAINS", "QUANT_OPS", "ROUNDING_MODES", "QuantSpec", "power_of_two_frac_bits", "quant_spec"]

QUANT_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
"""The domains QONNX, FINN and Brevitas write ``Quant`` nodes in."""
QUANT_OPS = ("Quant", "IntQuant")
"""QONNX renamed ``Quant`` to ``IntQuant``; both mean the same op."""
ROUNDING_MODES = {"ROUND": Rounding.NEAREST_EVEN, "HALF_EVEN": Rounding.NEAREST_EVEN,
                  "HALF_UP": Rounding.NEAREST, "FLOOR": Rounding.FLOOR, "DOWN": Rounding.TOWARD_ZERO,
                  "ROUND_TO_ZERO": Rounding.TOWARD_ZERO}
"""QONNX ``rounding_mode`` (upper case) -> fxpsim :class:`~fxpsim.qformat.Rounding`."""


@dataclass(frozen=True, slots=True)
class QuantSpec:
    """A ``Quant`` node as fxpsim sees it: its format, its rounding, and which node it is."""

    fmt: QFormat
    rounding: Rounding
    node: str  # "node Quant_3 (Quant)", for messages

    def fake_quant(self, x: np.ndarray) -> np.ndarray:
        """The node's output on ``x``: quantize (saturating) then dequantize, as float32."""
        check(np.isfinite(x).all(), f"{self.node}: its input holds NaN/inf: fix the model before export")
        return dequantize(quantize(x, self.fmt, self.rounding, "clip"), self.fmt).astype(np.float32)


def power_of_two_frac_bits(scale: float) -> int | None:
    """``F`` with ``scale == 2**-F`` exactly, or None when ``scale`` is not a power of two."""
    if not (math.isfinite(scale) and scale > 0):
        return None
    mantissa, exponent = math.frexp(scale)  # scale = mantissa * 2**exponent, 0.5 <= mantissa < 1
    return 1 - exponent if mantissa == 0.5 else None


def _scalar(node: str, name: str, value: np.ndarray, fix: str) -> float:
    """The one value of a scalar or all-equal (per-channel but uniform) input."""
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    check(flat.size >= 1, f"{node}: {name} is an empty tensor: {fix}")
    check(np.all(flat == flat[0]),
          f"{node}: per-channel {name}s differ ({flat.min():.4g} .. {flat.max():.4g}): a layer has one "
          f"Q-format in fxpsim; {fix}")
    return float(flat[0])


def quant_spec(node: str, scale, zeropt, bitwidth, signed=1, narrow=0, rounding_mode="ROUND") -> QuantSpec:
    """The Q-format of a ``Quant`` node (inputs and attributes as QONNX defines them), or a
    one-line :class:`FxpsimError` naming ``node``, the value, the rule and the fix."""
    s = _scalar(node, "scale", scale, "requantize with one power-of-two scale per tensor")
    frac = power_of_two_frac_bits(s)
    check(frac is not None, f"{node}: scale {s:.4g} is not a power of two: not a Q-format; requantize "
                            "with a power-of-two scale (Brevitas: restrict_scaling_type=POWER_OF_TWO)")
    zp = _scalar(node, "zero point", zeropt, "requantize with zero point 0 (symmetric quantization)")
    check(zp == 0, f"{node}: zero point {zp:.4g} is not 0: a Q-format has no offset; requantize with "
                   "zero point 0 (symmetric quantization)")
    w = _scalar(node, "bit width", bitwidth, "give one integer bit width")
    check(w == int(w) and w >= 1, f"{node}: bit width {w:.4g} is not a whole number >= 1: give the "
                                  "number of bits, e.g. 8")
    check(not (int(signed) and w == 1), f"{node}: a signed 1-bit Quant is bipolar (BipolarQuant): "
                                        "binary layers run with `fxpsim binary`, not through import")
    mode = rounding_mode.decode() if isinstance(rounding_mode, bytes) else str(rounding_mode)
    rounding = ROUNDING_MODES.get(mode.upper())
    check(rounding is not None, f"{node}: rounding_mode {mode!r} has no fxpsim rounding (fxpsim takes "
                                f"{', '.join(ROUNDING_MODES)}): export with rounding_mode ROUND")
    try:
        fmt = QFormat(int(w) - frac, frac, signed=bool(int(signed)), narrow=bool(int(narrow)))
    except FxpsimError as exc:
        raise FxpsimError(f"{node}: bit width {int(w)} with scale 2**{-frac}: {exc}") from None
    return QuantSpec(fmt, rounding, node)
