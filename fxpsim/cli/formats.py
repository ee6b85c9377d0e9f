"""``fxpsim format Q4.12 [VALUE ...]``: a format's range, and values' raw bits."""

from __future__ import annotations

import sys

from . import arg_type
from .common import real
from ..qformat import QFormat, Rounding, dequantize, parse_rounding, quantize, to_bits


def add_parser(sub) -> None:
    p = sub.add_parser("format", help="show a Q-format's range and the bits of values in it")
    p.add_argument("fmt", type=arg_type(QFormat.parse), help="format I.F with the sign in I, e.g. Q4.12")
    p.add_argument("values", nargs="*", type=real(-sys.float_info.max, sys.float_info.max, "VALUE",
                                                  "a value to quantize is a finite number (NaN and inf are "
                                                  "not values: DESIGN.md)"),
                   help="values to quantize and show")
    p.add_argument("--rounding", type=arg_type(parse_rounding), default="nearest-even",
                   metavar="{" + ",".join(r.value for r in Rounding) + "}",
                   help="how a value between two steps of the format is rounded")
    p.add_argument("--overflow", default="clip", choices=["wrap", "clip"],
                   help="a value outside the range: wrap (two's complement) or clip (saturate)")
    p.set_defaults(func=run)


def run(args) -> int:
    fmt = args.fmt
    print(f"{fmt}: {fmt.width} bits, raw [{fmt.raw_min}, {fmt.raw_max}], "
          f"values [{fmt.min_value:g}, {fmt.max_value:g}], lsb {fmt.lsb:g}")
    if args.values:
        raw = quantize(args.values, fmt, args.rounding, args.overflow)
        for x, r, v in zip(args.values, raw, dequantize(raw, fmt)):
            print(f"{x:>14g} -> raw {int(r):>12d}  bits {to_bits(int(r), fmt)}  value {v:g}")
    return 0
