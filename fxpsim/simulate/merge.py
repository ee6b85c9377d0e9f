"""Residual Add and channel Concat on integers (DESIGN.md, "Add (residual) and Concat").

Each input is converted to the merge's output format ``fmt_y`` (a rounding
right shift with the layer's rounding, or an exact left shift, then
saturation: :func:`fxpsim.qformat.convert`); Add then sums the converted
raws exactly and saturates (``output_overflow="clip"``) or wraps (``"wrap"``)
the sum to ``fmt_y``; Concat joins the converted inputs along channels
(axis 1). The merge belongs to a stage and takes that stage's ``fmt_y``,
rounding and ``output_overflow`` (:mod:`.stages`). Bit growth of the exact sum
of ``n`` inputs: ``width + ceil(log2 n)`` bits, held in int64 when at most 63.
"""

from __future__ import annotations

import numpy as np

from ..errors import check
from ..qformat import Overflow, QFormat, Rounding, convert, saturate_raw, wrap_raw

__all__ = ["add_int", "concat_int", "check_add_width"]


def check_add_width(n_inputs: int, fmt_y: QFormat, where: str) -> None:
    """Refuse an Add whose exact sum (``fmt_y.width + ceil(log2 n)`` bits) int64 cannot hold."""
    growth = (int(n_inputs) - 1).bit_length()
    check(fmt_y.width + growth <= 63,
          f"{where}: the exact sum of {n_inputs} inputs in {fmt_y} needs {fmt_y.width + growth} bits, more than "
          "the int64 datapath holds (63): give the stage a narrower output format, or add fewer inputs at once")


def add_int(raws, fmts, fmt_y: QFormat, rounding: Rounding, overflow: Overflow, seed=None) -> np.ndarray:
    """Residual add: every ``raws[j]`` (format ``fmts[j]``) converted to ``fmt_y``, summed exactly,
    then saturated (clip) or wrapped to ``fmt_y``."""
    check_add_width(len(raws), fmt_y, "add")
    total = None
    for raw, fmt in zip(raws, fmts):
        v = convert(raw, fmt, fmt_y, rounding, seed)
        total = v.copy() if total is None else total + v
    return wrap_raw(total, fmt_y) if Overflow(overflow) is Overflow.WRAP else saturate_raw(total, fmt_y)


def concat_int(raws, fmts, fmt_y: QFormat, rounding: Rounding, seed=None) -> np.ndarray:
    """Channel concat: every ``raws[j]`` converted to ``fmt_y``, joined along axis 1."""
    return np.concatenate([convert(raw, fmt, fmt_y, rounding, seed) for raw, fmt in zip(raws, fmts)], axis=1)
