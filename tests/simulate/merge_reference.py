"""The Python-int twin of :mod:`fxpsim.simulate.merge`: one element, one conversion, one addition at a time."""

from fxpsim.qformat import Overflow, shift_round_int


def convert_int(v: int, src, dst, rounding) -> int:
    """``v`` (raw of ``src``) in ``dst``: exact left shift or rounding right shift, then saturation."""
    s = src.frac_bits - dst.frac_bits
    v = v << -s if s <= 0 else shift_round_int(v, s, rounding, None)
    return min(max(v, dst.raw_min), dst.raw_max)


def add_reference(raws, fmts, fmt_y, rounding, overflow):
    """Nested lists of Python ints: the element-wise converted sum, clipped or wrapped to ``fmt_y``."""
    flat = [list(map(int, r.reshape(-1))) for r in raws]
    out = []
    for k in range(len(flat[0])):
        total = 0
        for vals, fmt in zip(flat, fmts):
            total += convert_int(vals[k], fmt, fmt_y, rounding)
        if Overflow(overflow) is Overflow.WRAP:
            total = (total - fmt_y.raw_min) % (1 << fmt_y.width) + fmt_y.raw_min
        else:
            total = min(max(total, fmt_y.raw_min), fmt_y.raw_max)
        out.append(total)
    return out


def concat_reference(raws, fmts, fmt_y, rounding):
    """Per image, the converted channels of every input one after another (flat, C order)."""
    out = []
    for b in range(raws[0].shape[0]):
        for r, fmt in zip(raws, fmts):
            out.extend(convert_int(int(v), fmt, fmt_y, rounding) for v in r[b].reshape(-1))
    return out
