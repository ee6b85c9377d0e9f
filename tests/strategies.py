"""Hypothesis strategies shared by the tests (named ``*_st``, brevitas style)."""

from hypothesis import strategies as st

from fxpsim.qformat import MAX_WIDTH, Overflow, QFormat, Rounding

rounding_st = st.sampled_from(list(Rounding))
deterministic_rounding_st = st.sampled_from([r for r in Rounding if r is not Rounding.STOCHASTIC])
overflow_st = st.sampled_from([Overflow.WRAP, Overflow.CLIP])


@st.composite
def qformat_st(draw, min_width: int = 1, max_width: int = MAX_WIDTH, signed=None):
    """Any valid format, int_bits and frac_bits possibly negative."""
    width = draw(st.integers(min_width, max_width))
    int_bits = draw(st.integers(-8, width + 8))
    is_signed = draw(st.booleans()) if signed is None else signed
    return QFormat(int_bits, width - int_bits, is_signed)


@st.composite
def raw_st(draw, fmt: QFormat):
    """A raw integer of ``fmt``, with the edges (min, max, 0, +-1) drawn often."""
    edges = [fmt.raw_min, fmt.raw_max, 0, min(1, fmt.raw_max), max(-1, fmt.raw_min)]
    return draw(st.one_of(st.sampled_from(edges), st.integers(fmt.raw_min, fmt.raw_max)))
