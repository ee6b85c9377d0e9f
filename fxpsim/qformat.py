"""Q-format fixed-point numbers: formats, rounding, overflow, bit views.

Normative semantics (DESIGN.md): ``QFormat(int_bits, frac_bits)`` has
``width = int_bits + frac_bits`` bits and the integer bits INCLUDE the sign
bit, as in ``ap_fixed<W, I>`` and Judd et al. (ICLR 2016: "Q1.9 + Q12.2 +
Q12.9 = 21 bits"). de Bruin et al. (DSD 2018) count IL without the sign bit
(``BW = IL + FL + 1``); :func:`de_bruin_il` is the one place that converts.

A value is ``raw * 2**-frac_bits`` with ``raw`` the two's-complement integer
of ``width`` bits (unsigned formats: ``0 .. 2**width - 1``). Either field
may be negative (``Q-2.10``: all values below 1/8) as long as width >= 1.

Bit growth (the datapath, ``fxpsim.datapath``; FL_acc defaults to FL_w + FL_d):

====================  ==========================  ==================================
operation             fraction bits               width
====================  ==========================  ==================================
w * d                 FL_w + FL_d                 BW_w + BW_d (exact)
p -> FL_acc           FL_acc (shift left exactly  exact; ``product="cast"``: BW_acc
                      or round with product_      (wrap or clip)
                      rounding)
acc + p               FL_acc                      BW_acc (wrap or clip)
acc -> y              FL_y (shift FL_acc - FL_y)  BW_y (round, then clip or wrap)
====================  ==========================  ==================================

Rounding modes and their ap_fixed ``ap_q_mode`` (DESIGN.md):

================  ===============  ==========================================
:class:`Rounding` ``ap_q_mode``    rule
================  ===============  ==========================================
``nearest-even``  ``AP_RND_CONV``  nearest, ties to even
``nearest``       ``AP_RND_INF``   nearest, ties away from zero (not
                                   ``AP_RND``, whose ties go to +inf)
``floor``         ``AP_TRN``       toward minus infinity (drop the low bits)
``toward-zero``   ``AP_TRN_ZERO``  toward zero
``stochastic``    (none)           up with probability = the dropped fraction
================  ===============  ==========================================

Overflow modes: ``wrap`` = ``AP_WRAP``, ``clip`` = ``AP_SAT``; ``ideal`` (an
unbounded accumulator) has no ap_fixed counterpart.

Narrow formats (``QFormat(1, 7, narrow=True)``, written ``Q1.7n``): the range loses its most
negative code, ``raw_min = -raw_max`` (Brevitas/QONNX ``narrow_range``; ``ap_fixed``'s
``AP_SAT_SYM``); unsigned narrow drops the top code, ``raw_max = 2**width - 2`` (QONNX's
``max_int``). Every saturation to such a format clips to the symmetric range; wrapping into it
has no two's-complement meaning and is refused; width >= 2.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from enum import Enum

import numpy as np
from bitstring import Bits

from .errors import FxpsimError, check

MAX_WIDTH = 62
"""Widest operand, product or accumulator the int64 datapath holds exactly."""


class Rounding(str, Enum):
    """How a value between two representable neighbours is rounded."""

    NEAREST_EVEN = "nearest-even"
    """Round to nearest, ties to even (IEEE default, ``AP_RND_CONV``)."""
    NEAREST = "nearest"
    """Round to nearest, ties away from zero (``AP_RND_INF``; not ``AP_RND``, whose ties go to +inf)."""
    FLOOR = "floor"
    """Toward minus infinity: dropping low bits in two's complement (``AP_TRN``)."""
    TOWARD_ZERO = "toward-zero"
    """Toward zero: truncation of the magnitude (``AP_TRN_ZERO``)."""
    STOCHASTIC = "stochastic"
    """Up with probability equal to the dropped fraction (Gupta et al. 2015); seeded."""

    @property
    def code(self) -> int:
        """Small integer passed to the Numba kernels."""
        return list(Rounding).index(self)


class Overflow(str, Enum):
    """What a register does with a value outside its range."""

    WRAP = "wrap"
    """Keep the low ``width`` bits (two's complement): modular arithmetic."""
    CLIP = "clip"
    """Saturate to ``[raw_min, raw_max]``."""
    IDEAL = "ideal"
    """Unbounded accumulator: a reference that no hardware has."""

    @property
    def code(self) -> int:
        """Small integer passed to the Numba kernels."""
        return list(Overflow).index(self)


def parse_rounding(value: str | Rounding) -> Rounding:
    """``'nearest-even'`` (or a :class:`Rounding`) -> :class:`Rounding`."""
    try:
        return Rounding(value)
    except ValueError:
        names = ", ".join(r.value for r in Rounding)
        raise FxpsimError(f"unknown rounding mode {value!r}: use one of {names}") from None


def parse_overflow(value: str | Overflow, allow_ideal: bool = True) -> Overflow:
    """``'wrap'``/``'clip'`` (or ``'ideal'`` for accumulators) -> :class:`Overflow`."""
    allowed = [o for o in Overflow if allow_ideal or o is not Overflow.IDEAL]
    try:
        mode = Overflow(value)
    except ValueError:
        mode = None
    if mode not in allowed:
        names = ", ".join(o.value for o in allowed)
        raise FxpsimError(f"unknown overflow mode {value!r}: use one of {names}")
    return mode


_FORMAT_RE = re.compile(r"^\s*(U?)Q(-?\d+)\.(-?\d+)(N?)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class QFormat:
    """A fixed-point format ``Q<int_bits>.<frac_bits>``, sign bit inside int_bits; ``narrow``:
    the symmetric range (``raw_min = -raw_max``, Brevitas' narrow_range; suffix ``n``)."""

    int_bits: int
    frac_bits: int
    signed: bool = True
    narrow: bool = False

    def __post_init__(self) -> None:
        for name in ("int_bits", "frac_bits"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise FxpsimError(
                    f"QFormat {name}={value!r} is not an integer: give whole bit counts, e.g. QFormat(4, 12)"
                )
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "narrow", bool(self.narrow))
        width = self.int_bits + self.frac_bits
        check(not self.narrow or width >= 2,
              f"narrow QFormat {'' if self.signed else 'U'}Q{self.int_bits}.{self.frac_bits}n has width {width} < 2: "
              "a narrow (symmetric) range needs at least 2 bits; use width >= 2 or narrow=False")
        check(
            width >= 1,
            f"QFormat Q{self.int_bits}.{self.frac_bits} has width {width} < 1: "
            "int_bits + frac_bits must be at least 1",
        )
        check(
            width <= MAX_WIDTH,
            f"QFormat Q{self.int_bits}.{self.frac_bits} has width {width} > {MAX_WIDTH}: "
            f"the int64 datapath holds at most {MAX_WIDTH} bits; use fewer bits",
        )

    @classmethod
    def parse(cls, text: str | QFormat) -> QFormat:
        """Parse ``'Q4.12'`` (signed, sign in the 4), ``'UQ8.0'`` (unsigned), ``'Q1.7n'`` (narrow)."""
        if isinstance(text, QFormat):
            return text
        match = _FORMAT_RE.match(str(text))
        if match is None:
            raise FxpsimError(
                f"bad format {text!r}: write Q<int_bits>.<frac_bits> with the sign bit "
                "counted in int_bits, e.g. Q4.12 (16 bits), UQ8.0 for unsigned, Q1.7n for narrow (symmetric)"
            )
        unsigned, i, f, narrow = match.groups()
        return cls(int(i), int(f), signed=not unsigned, narrow=bool(narrow))

    @classmethod
    def from_width(cls, width: int, int_bits: int, signed: bool = True, narrow: bool = False) -> QFormat:
        """The format of ``width`` bits with ``int_bits`` integer bits."""
        return cls(int_bits, width - int_bits, signed, narrow)

    def __str__(self) -> str:
        return f"{'' if self.signed else 'U'}Q{self.int_bits}.{self.frac_bits}{'n' if self.narrow else ''}"

    @property
    def width(self) -> int:
        """Total bits: int_bits + frac_bits."""
        return self.int_bits + self.frac_bits

    @property
    def raw_min(self) -> int:
        """Smallest raw integer: -2**(width-1) (narrow: -(2**(width-1) - 1)), or 0 when unsigned."""
        return (-(1 << (self.width - 1)) + self.narrow) if self.signed else 0

    @property
    def raw_max(self) -> int:
        """Largest raw integer: 2**(width-1) - 1, or 2**width - 1 when unsigned (narrow: 2**width - 2)."""
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1 - self.narrow

    @property
    def lsb(self) -> float:
        """Value of one raw step: 2**-frac_bits."""
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def min_value(self) -> float:
        """Most negative representable value."""
        return math.ldexp(self.raw_min, -self.frac_bits)

    @property
    def max_value(self) -> float:
        """Largest representable value."""
        return math.ldexp(self.raw_max, -self.frac_bits)


def de_bruin_il(fmt: QFormat) -> int:
    """de Bruin et al.'s integer length IL (sign excluded): ``BW = IL + FL + 1``."""
    return fmt.int_bits - 1 if fmt.signed else fmt.int_bits


def int_bits_for(max_abs: float, signed: bool = True) -> int:
    """Fewest int_bits whose range holds ``max_abs`` (Judd's profiled ranges).

    Signed: the smallest I with ``max_abs < 2**(I-1)``, so both ``-max_abs``
    and ``+max_abs`` lie inside the format at any frac_bits >= the value's
    own precision. Unsigned: the smallest I with ``max_abs < 2**I``. A zero
    range needs no integer bits beyond the sign.
    """
    max_abs = float(max_abs)
    check(math.isfinite(max_abs) and max_abs >= 0,
          f"max_abs={max_abs!r} is not a finite non-negative number: profile a finite range")
    if max_abs == 0.0:
        return 1 if signed else 0
    _, exponent = math.frexp(max_abs)  # max_abs = m * 2**exponent, 0.5 <= m < 1
    return exponent + 1 if signed else exponent


def _as_float_array(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)]
        raise FxpsimError(
            f"{what} contains {bad.size} non-finite value(s) (first: {float(bad.flat[0])}): "
            "NaN/inf cannot be quantized; fix the data or the model that produced it"
        )
    return arr


def check_wrappable(fmt: QFormat, where: str) -> None:
    """Refuse wrapping into a narrow format: its range is not the ``width``-bit two's complement."""
    check(not fmt.narrow, f"{where}: wrap into the narrow format {fmt} has no two's-complement meaning "
                          "(its range is symmetric): saturate (clip) to it, or use a format without narrow")


def wrap_raw(raw, fmt: QFormat) -> np.ndarray:
    """Keep the low ``fmt.width`` bits of integer ``raw`` (two's complement if signed)."""
    check_wrappable(fmt, "wrap_raw")
    raw = np.asarray(raw, dtype=np.int64)
    mask = np.int64((1 << fmt.width) - 1)
    return ((raw - np.int64(fmt.raw_min)) & mask) + np.int64(fmt.raw_min)


def saturate_raw(raw, fmt: QFormat) -> np.ndarray:
    """Clip integer ``raw`` to ``[fmt.raw_min, fmt.raw_max]``."""
    return np.clip(np.asarray(raw, dtype=np.int64), fmt.raw_min, fmt.raw_max)


_HUGE = math.ldexp(1.0, 1000)
"""Stand-in for a scaled value at or beyond 2**1024 (x * 2**frac_bits with x = m * 2**e, m < 2**53,
is then a multiple of 2**971 > 2**62): like the exact value it rounds to itself, clips to the
rail and wraps to 0."""
_TINY = math.ldexp(1.0, -1074)
"""Stand-in for a nonzero scaled value that underflowed to 0: every nonzero |v| < 1/2 rounds
alike (floor: -1 if negative, else 0; the others 0; stochastic: up iff the draw u < |v|, i.e.
u == 0, for positives, never for negatives, since u <= 1 - 2**-53)."""


def _scale_exact(arr: np.ndarray, frac_bits: int, rounding: Rounding) -> np.ndarray:
    """``arr * 2**frac_bits`` for every finite double, exact or replaced by a stand-in with the
    same rounded, clipped and wrapped raw value (DESIGN.md: the scaling is exact).

    ``np.ldexp`` is exact unless the product leaves the double range: beyond 2**1024 it gives
    inf (-> :data:`_HUGE`), below the smallest subnormal +-0 (-> :data:`_TINY`; a subnormal
    that keeps a nonzero value rounds like the exact one, and a flush to 0 is only wrong for
    floor and stochastic). Only arrays that can hit a case pay for its check (one reduction
    over the int64 view: -0.0 is the smallest int64). NaN/inf input is an error.
    """
    if arr.size == 0:
        return np.ldexp(arr, frac_bits)
    hi, lo = float(arr.max()), float(arr.min())  # NaN propagates
    if not (math.isfinite(hi) and math.isfinite(lo)):
        _as_float_array(arr, "value to quantize")  # raises, naming the bad value
    big = max(hi, -lo)
    if frac_bits > 0 and big != 0.0 and math.frexp(big)[1] + frac_bits > 1024:
        with np.errstate(over="ignore"):
            scaled = np.ldexp(arr, frac_bits)
        return np.where(np.isinf(scaled), np.copysign(_HUGE, arr), scaled)
    scaled = np.ldexp(arr, frac_bits)
    if frac_bits < 0 and rounding in (Rounding.FLOOR, Rounding.STOCHASTIC):
        bits, bits_in = scaled.view(np.int64), arr.view(np.int64)
        flushed = int(bits.min()) == -(1 << 63)  # a -0.0 (bit pattern 1 << 63) in the result
        if rounding is Rounding.STOCHASTIC and not flushed:  # a new +0.0 (all bits zero)?
            flushed = np.count_nonzero(bits) != np.count_nonzero(bits_in)
        if flushed:
            lost = (scaled == 0) & (arr != 0)
            scaled = np.where(lost, np.copysign(_TINY, arr), scaled)
    return scaled


_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def stochastic_bits(seed: int, index: np.ndarray, bits: int) -> np.ndarray:
    """``bits`` uniform bits per output: SplitMix64 of ``seed + GOLDEN * (index + 1)``.

    Counter-based (no state), so every path draws the same bits (DESIGN.md): the
    datapath engines and their reference twin (``index``: the output's flat C-order
    index in the layer's output layout, dense (B, N), conv (B, F, OH, OW)),
    :func:`quantize` (53 bits per element) and :func:`shift_round` (``shift`` bits).
    Because the b-bit draw is the top b bits of one 64-bit word, quantizing an
    exactly representable value and shifting its raw integer make the same choice.
    """
    idx = np.asarray(index).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed % (1 << 64)) + np.uint64(_GOLDEN) * (idx + np.uint64(1))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(64 - bits)).astype(np.int64)


def quantize(x, fmt: QFormat, rounding: str | Rounding = Rounding.NEAREST_EVEN,
             overflow: str | Overflow = Overflow.CLIP, seed: int | None = None) -> np.ndarray:
    """Float -> raw int64: scale by 2**frac_bits exactly, round, then wrap or clip.

    Exact for every finite double and format (DESIGN.md), subnormals and Q100.-90 included:
    ``quantize([-1e-300], QFormat(100, -90), "floor") == [-1]``. ``seed`` drives stochastic
    rounding (required for it, so results repeat): up iff the element's counter-based
    draw u (53 bits of :func:`stochastic_bits`, index = flat C-order position) is below the
    dropped fraction. NaN or inf is an error, not a value.
    """
    fmt = QFormat.parse(fmt)
    rounding = parse_rounding(rounding)
    overflow = parse_overflow(overflow, allow_ideal=False)
    if overflow is Overflow.WRAP:
        check_wrappable(fmt, "quantize")
    scaled = _scale_exact(_real_values(x), fmt.frac_bits, rounding)
    if rounding is Rounding.NEAREST_EVEN:
        r = np.rint(scaled)
    elif rounding is Rounding.NEAREST:
        mag = np.abs(scaled)
        low = np.floor(mag)
        r = np.copysign(low + (mag - low >= 0.5), scaled)
    elif rounding is Rounding.FLOOR:
        r = np.floor(scaled)
    elif rounding is Rounding.TOWARD_ZERO:
        r = np.trunc(scaled)
    else:
        check(seed is not None, "stochastic rounding needs a seed: pass seed=<int> so results repeat")
        low = np.floor(scaled)
        u = np.ldexp(stochastic_bits(seed, np.arange(scaled.size).reshape(scaled.shape), 53), -53)
        r = low + (u < scaled - low)
    if overflow is Overflow.CLIP:
        r = np.clip(r, float(fmt.raw_min), float(fmt.raw_max))
        return saturate_raw(r.astype(np.int64), fmt)
    r = np.fmod(r, math.ldexp(1.0, fmt.width))  # exact; |r| < 2**width <= 2**62
    return wrap_raw(r.astype(np.int64), fmt)


def _real_values(x) -> np.ndarray:
    """``x`` as float64, refusing what is not a real number (complex, bool, strings, objects)
    instead of casting it: ``np.asarray(["1.5"], float)`` would parse, complex would drop its imaginary part."""
    a = np.asarray(x)
    check(a.dtype.kind in "fiu",
          f"quantize takes real numbers (int or float arrays), not {a.dtype} ({_kind_name(a.dtype)}): "
          "convert the values to floats first")
    return a.astype(np.float64, copy=False)


def _kind_name(dtype) -> str:
    return {"c": "complex", "b": "bool", "U": "strings", "S": "bytes", "O": "objects", "M": "datetimes",
            "m": "timedeltas"}.get(dtype.kind, "not numbers")


def dequantize(raw, fmt: QFormat) -> np.ndarray:
    """Raw integers -> float64 values ``raw * 2**-frac_bits``: exact for |raw| <= 2**53, else
    rounded to nearest even (int64 -> float64), while the value is a normal double. Raw values
    are whole numbers (an int array, or floats that are whole); 1.7 is refused, not truncated."""
    fmt = QFormat.parse(fmt)
    a = np.asarray(raw)
    if a.dtype.kind == "f":
        whole = np.isfinite(a) & (a == np.floor(a)) & (np.abs(a) <= 2.0**63 - 1024)
        if not whole.all():
            raise FxpsimError(f"dequantize takes raw integers, got {float(a[~whole].flat[0])!r}: raw values are "
                              "whole numbers (quantize() gives them); to convert a float value use quantize")
    else:
        check(a.dtype.kind in "iu", f"dequantize takes raw integers, not {a.dtype} ({_kind_name(a.dtype)}): "
                                    "give the int64 raw values quantize() returns")
    return np.ldexp(a.astype(np.int64).astype(np.float64), -fmt.frac_bits)


def _check_shift(shift) -> int:
    """``shift`` as an int, or a clear error if it is not a whole number within +-MAX_WIDTH."""
    if isinstance(shift, (bool, np.bool_)) or not isinstance(shift, (int, np.integer)):
        raise FxpsimError(f"shift={shift!r} is not an integer: shift by a whole number of bits")
    shift = int(shift)
    check(abs(shift) <= MAX_WIDTH,
          f"shift by {shift} bits is beyond +-{MAX_WIDTH}: the int64 datapath cannot hold it; "
          "use qformat.convert() between formats, which rounds or saturates exactly")
    return shift


def shift_round(raw, shift: int, rounding: str | Rounding = Rounding.NEAREST_EVEN,
                seed: int | None = None) -> np.ndarray:
    """Integer ``raw / 2**shift`` rounded (``shift < 0``: exact left shift).

    This is the requantization step of the datapath (accumulator with
    FL_acc fraction bits -> output with FL_y: ``shift = FL_acc - FL_y``).
    DESIGN.md: shifts are exact; ``|shift| > 62`` (:data:`MAX_WIDTH`) and a left
    shift whose result leaves int64 are refused, never wrapped. To saturate to a
    format instead, use :func:`convert`.
    """
    shift = _check_shift(shift)
    rounding = parse_rounding(rounding)
    v = np.asarray(raw, dtype=np.int64)
    if shift <= 0:
        k = -shift
        if k and v.size:
            lo, hi = int(v.min()), int(v.max())
            limit = 1 << (63 - k)  # v << k fits int64 iff -limit <= v < limit
            if lo < -limit or hi >= limit:
                bad = lo if lo < -limit else hi
                raise FxpsimError(
                    f"left shift by {k} of raw value {bad} leaves int64 (|raw| must stay below "
                    f"2**{63 - k}): use qformat.convert() to a format, which saturates, or shift less"
                )
        return v << np.int64(k)
    s = np.int64(shift)
    q = v >> s  # floor
    rem = v - (q << s)  # 0 <= rem < 2**shift
    half = np.int64(1) << (s - 1)
    if rounding is Rounding.FLOOR:
        return q
    if rounding is Rounding.TOWARD_ZERO:
        return q + ((rem != 0) & (v < 0))
    if rounding is Rounding.NEAREST:
        return q + ((rem > half) | ((rem == half) & (v >= 0)))
    if rounding is Rounding.NEAREST_EVEN:
        return q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    check(seed is not None, "stochastic rounding needs a seed: pass seed=<int> so results repeat")
    return q + (stochastic_bits(seed, np.arange(v.size).reshape(v.shape), int(s)) < rem)


def shift_round_int(v: int, shift: int, rounding: Rounding, draw) -> int:
    """Python-int ``v / 2**shift`` rounded, any ``shift > 0``; ``draw()`` gives the stochastic
    ``u`` in ``[0, 2**shift)`` (up iff ``u < rem``)."""
    q, rem = v >> shift, v & ((1 << shift) - 1)  # floor, 0 <= rem < 2**shift
    half = 1 << (shift - 1)
    if rounding is Rounding.FLOOR:
        up = False
    elif rounding is Rounding.TOWARD_ZERO:
        up = rem != 0 and v < 0
    elif rounding is Rounding.NEAREST:
        up = rem > half or (rem == half and v >= 0)
    elif rounding is Rounding.NEAREST_EVEN:
        up = rem > half or (rem == half and q & 1 == 1)
    else:
        up = draw() < rem
    return q + up


def convert(raw, src: QFormat, dst: QFormat, rounding: str | Rounding = Rounding.NEAREST_EVEN,
            seed: int | None = None) -> np.ndarray:
    """Re-express raw values of ``src`` in ``dst``: rounding right shift or exact left shift
    by ``FL_src - FL_dst``, then saturation to ``dst`` (DESIGN.md: shifts between formats are
    exact, nothing wraps). Exact for any two valid formats:

    - left shift by k: clamp first, as the datapath's requantize does (``hi = raw_max >> k``,
      ``lo = -((-raw_min) >> k)``), so nothing overflows; k > 62 saturates every nonzero value;
    - right shift by s <= 62: :func:`shift_round`; s > 62 (|raw / 2**s| < 1/2): rounded with
      Python ints, one element at a time; stochastic draws there come from
      ``random.Random(seed).getrandbits(s)`` (up iff u < the dropped bits).
    """
    src, dst = QFormat.parse(src), QFormat.parse(dst)
    rounding = parse_rounding(rounding)
    v = np.asarray(raw, dtype=np.int64)
    if src == dst:
        return v
    s = src.frac_bits - dst.frac_bits
    if s < 0:
        k = -s
        hi, lo = dst.raw_max >> k, -((-dst.raw_min) >> k)  # v << k in range iff lo <= v <= hi
        inside = np.clip(v, lo, hi) << np.int64(min(k, MAX_WIDTH))  # k > 62: lo = hi = 0
        return np.where(v > hi, np.int64(dst.raw_max), np.where(v < lo, np.int64(dst.raw_min), inside))
    if s <= MAX_WIDTH:
        return saturate_raw(shift_round(v, s, rounding, seed), dst)
    if rounding is Rounding.STOCHASTIC:
        check(seed is not None, "stochastic rounding needs a seed: pass seed=<int> so results repeat")
    rng = random.Random(seed)
    out = [shift_round_int(int(a), s, rounding, lambda: rng.getrandbits(s)) for a in v.flat]
    return saturate_raw(np.array(out, dtype=np.int64).reshape(v.shape), dst)


def check_raw(raw, fmt: QFormat, name: str, as_int64: bool = True) -> np.ndarray:
    """``raw`` (as int64, or in its own integer dtype without a copy), or a clear error
    if any value is outside ``fmt``'s raw range."""
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iub":
        raise FxpsimError(
            f"{name} has dtype {arr.dtype}, not integer: pass raw integers (quantize() them first)"
        )
    arr = arr.astype(np.int64) if as_int64 else (arr.astype(np.int8) if arr.dtype.kind == "b" else arr)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < fmt.raw_min or hi > fmt.raw_max:
            raise FxpsimError(
                f"{name} holds raw values in [{lo}, {hi}], outside {fmt}'s range "
                f"[{fmt.raw_min}, {fmt.raw_max}]: quantize with that format or widen it"
            )
    return arr


def to_bits(raw: int, fmt: QFormat) -> str:
    """Two's-complement bit string of one raw value, e.g. ``'1111.0100'`` for Q4.4 -0.75.

    The binary point is shown where it falls inside the word.
    """
    raw = int(raw)
    check(fmt.raw_min <= raw <= fmt.raw_max,
          f"raw value {raw} is outside {fmt}'s range [{fmt.raw_min}, {fmt.raw_max}]")
    bits = (Bits(int=raw, length=fmt.width) if fmt.signed else Bits(uint=raw, length=fmt.width)).bin
    if 0 < fmt.frac_bits < fmt.width:
        return bits[: fmt.int_bits] + "." + bits[fmt.int_bits:]
    return bits


def from_bits(text: str, fmt: QFormat) -> int:
    """Inverse of :func:`to_bits`: a bit string (a ``.`` is ignored) -> raw integer."""
    digits = text.replace(".", "").replace("_", "")
    check(len(digits) == fmt.width and set(digits) <= {"0", "1"},
          f"bit string {text!r} is not {fmt.width} binary digits for {fmt}")
    bits = Bits(bin=digits)
    return bits.int if fmt.signed else bits.uint
