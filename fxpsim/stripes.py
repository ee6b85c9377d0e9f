"""Stripes: bit-serial evaluation and its timing model (Judd et al., MICRO 2016).

Stripes (STR) feeds each activation to its serial inner-product unit (SIP)
one bit per cycle, so a layer whose activations need ``p`` bits takes ``p``
cycles where the bit-parallel baseline, DaDianNao (DaDN), takes one 16-bit
cycle; STR processes 16 windows at once so that both engines have the same
peak throughput at 16 bits, and the ideal speedup is ``16 / p``.

Part 1, evaluation (bit-exact). One SIP computes, per cycle ``i`` and per
brick of ``lanes`` consecutive activations ``k in g`` (the datapath order:
dense k = 0..K-1; conv channel, kernel row, kernel column)::

    psum[g, i] = sum_{k in g} w[k] * bit_i(x[k])          (exact adder tree)
    acc        <- ovf(acc + s_i * 2**i * psum[g, i])      (BW_acc register)

with ``s_i = -1`` for the sign bit of a signed (two's complement) activation
(it weighs ``-2**(p-1)``) and ``+1`` otherwise, bricks outer, bits inner
(conv ``order="stripes"``: bricks of ``lanes`` channels at one kernel
position instead, as the hardware reads them; ``cycles_per_output =
ceil(K/lanes) * p`` counts one SIP's cycles for one output),
least significant bit first (``msb_first=True`` reverses the bits), the
bias the initial accumulator value and ``ovf`` wrap, clip or ideal after
EVERY addition (DESIGN.md). Because ``x = sum_i s_i bit_i(x) 2**i``,
the sum of all terms equals the bit-parallel sum ``sum_k w[k] x[k]``.

How p counts: ``p = fmt_x.width``. A signed format spends one of its p
cycles on the sign bit; activations after ReLU are non-negative, so give
them an unsigned format (``UQ``): then all p bits are magnitude bits
weighing ``+2**i``, which is how Stripes' per-layer precisions count.

When bit-serial equals bit-parallel (``fxpsim.kernels.dense``/``conv2d``,
one product per addition, k = 0..K-1):

* ``wrap`` and ``ideal``: always (the same exact sum; wrapping every step
  equals wrapping once, modular arithmetic).
* ``clip``, unsigned activations and ``lanes=1`` (conv: ``order="datapath"``): always. Each product is
  split into pieces ``w * bit_i * 2**i`` of one sign (w's) and added in the
  bit-parallel k order; saturating additions of same-sign increments equal
  one saturating addition of their sum (``min(min(a+t1, hi)+t2, hi) =
  min(a+t1+t2, hi)`` for t2 >= 0, a in range), so the register follows the
  bit-parallel one product by product.
* ``clip`` otherwise (bricks of lanes > 1 add several products' bit-planes
  at once; a signed activation's sign-bit piece has the sign opposite to
  its other pieces): the additions differ, and the results can differ, but
  only when some prefix sum of one of the two sequences leaves
  ``[min, max]``. They agree for an output whenever no prefix of either
  sequence can overflow (both then hold the exact sum), which
  :func:`clip_safe` checks with the cheap bound ``b + P <= max`` and
  ``b + N >= min`` (P, N: sums of the positive and of the negative pieces
  ``s_i w bit_i 2**i``; for unsigned activations these are the bit-parallel
  sums of positive and negative products).

Part 2, timing (:func:`time_layer`, :func:`time_network`), parameters in
:class:`AcceleratorConfig`: ``tiles`` x ``filters`` (per tile) x ``lanes``
(synapses per filter). DaDN per cycle: one window, ``tiles*filters``
filters, ``lanes`` input channels of one kernel position, 16-bit. Layer
cycles (work padded to whole filter and lane groups)::

    DaDN conv:  groups * OH*OW * kh*kw * ceil(C_g/lanes) * ceil(F_g/(tiles*filters))
    STR  conv:  groups * ceil(OH*OW/16) * kh*kw * ceil(C_g/lanes) * ceil(F_g/(tiles*filters)) * p
    DaDN fc:    ceil(n_in/lanes) * ceil(n_out/(tiles*filters));   STR fc = DaDN fc

STR processes ``baseline_bits`` (16) windows per cycle, hence the same peak
throughput at 16 bits. Fully-connected layers have no weight reuse across
windows, so STR runs them bit-parallel at DaDN's speed (speedup 1; Stripes
accelerates convolutional layers only, as Tartan, Delmas et al. 2017, says
of it; DaDN's FC layers are bound by weight bandwidth, and bit-serial
FC would need a different weight per window): a precision profile lists
conv layers only, as Table I does ("9-8-5-5-7" for AlexNet's five conv
layers). (DNNsim instead multiplexes FC outputs over the 16 window
columns, which times FC bit-serially too; not modelled here.) Ideal speedup (Table I's
column): 16/p per conv layer and ``sum DaDN / sum (DaDN * p / 16)`` for the
network, i.e. weighted by DaDN time, window padding ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numba
import numpy as np

from .errors import FxpsimError, check
from .kernels.datapath import _conv_out_size, _validate, im2col, requantize
from .qformat import Overflow, QFormat

__all__ = [
    "SHAPE_PRESETS", "AcceleratorConfig", "BitSerialResult", "BitSerialStats", "LayerShape",
    "LayerTiming", "NetworkTiming", "bit_serial_conv2d", "bit_serial_dense", "clip_safe",
    "fold_input_scaling", "nonnegative_inputs", "parse_input_shape", "parse_profile", "parse_shapes",
    "profile_from_config", "shapes_from_network", "time_layer", "time_network", "unsigned_inputs",
]

_WRAP, _IDEAL = Overflow.WRAP.code, Overflow.IDEAL.code


# --------------------------------------------------------------------------- kernel

@numba.njit(cache=True, parallel=True)
def _serial_kernel(x, w, b, p, x_signed, digit_bits, lanes, msb_first, acc_bits, ovf,
                   acc_out, row_overflows, row_affected):
    """Rows of x (M, K) times w (K, N), x fed ``digit_bits`` bits per cycle.

    ``digit_bits=1``: Stripes (one bit per cycle, bricks of ``lanes``);
    ``digit_bits=p, lanes=1``: the bit-parallel datapath (one product per
    addition). The top digit of a signed x is two's complement (negative
    weight). Writes the final accumulators and per-row overflow statistics.
    """
    m_rows, k_len = x.shape
    n_out = w.shape[1]
    lo = -(np.int64(1) << (acc_bits - 1))
    hi = (np.int64(1) << (acc_bits - 1)) - 1
    mask = (np.int64(1) << acc_bits) - 1
    n_digits = (p + digit_bits - 1) // digit_bits
    for m in numba.prange(m_rows):
        acc = b.copy()
        psum = np.zeros(n_out, np.int64)
        affected = np.zeros(n_out, np.bool_)
        n_ovf = 0
        for g0 in range(0, k_len, lanes):
            g1 = min(g0 + lanes, k_len)
            for jj in range(n_digits):
                j = n_digits - 1 - jj if msb_first else jj
                shift = j * digit_bits
                width = min(digit_bits, p - shift)
                top = x_signed and shift + width == p
                for n in range(n_out):
                    psum[n] = 0
                for k in range(g0, g1):
                    d = (x[m, k] >> shift) & ((np.int64(1) << width) - 1)
                    if top and d >= (np.int64(1) << (width - 1)):
                        d -= np.int64(1) << width  # the sign bit weighs -2**(p-1)
                    if d != 0:
                        for n in range(n_out):
                            psum[n] += w[k, n] * d
                for n in range(n_out):
                    t = acc[n] + (psum[n] << shift)
                    if ovf == _IDEAL or (lo <= t <= hi):
                        acc[n] = t
                    else:
                        n_ovf += 1
                        affected[n] = True
                        if ovf == _WRAP:
                            acc[n] = ((t - lo) & mask) + lo
                        else:
                            acc[n] = lo if t < lo else hi
        for n in range(n_out):
            acc_out[m, n] = acc[n]
        row_overflows[m] = n_ovf
        row_affected[m] = np.sum(affected)


# --------------------------------------------------------------------------- results

@dataclass(frozen=True, slots=True)
class BitSerialStats:
    """Overflow statistics of one run (the datapath's ``OverflowStats`` fields).

    ``additions``: register additions (one per brick per bit per output);
    ``overflow_count``: additions whose exact result left the BW_acc range;
    ``outputs_affected``: outputs with at least one (0 for ideal);
    ``max_abs_acc``: max |bias + sum_k w x| over outputs, the final value of
    an unbounded accumulator, as the datapath defines it (the same for
    bit-serial and bit-parallel: the width a wrap accumulator needs).
    """

    additions: int
    overflow_count: int
    outputs_affected: int
    max_abs_acc: int


@dataclass(frozen=True, slots=True)
class BitSerialResult:
    """``y`` (raw ints of fmt_y, requantized as the datapath does), ``acc`` (final
    accumulators, FL_acc), ``stats``, ``cycles_per_output`` (one SIP:
    ``ceil(K/lanes) * p``)."""

    y: np.ndarray
    acc: np.ndarray
    stats: BitSerialStats
    cycles_per_output: int


# --------------------------------------------------------------------------- wrappers

def _check_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise FxpsimError(f"{name}={value!r} is not an integer >= {low}: give a whole number, e.g. {name}=16")
    return int(value)


def _max_abs_exact(x2, w2, bias) -> int:
    """max |bias + x @ w| over outputs (the datapath's ``max_abs_acc``), exact."""
    bound = (int(np.abs(bias).max(initial=0))
             + x2.shape[1] * int(np.abs(x2).max(initial=0)) * int(np.abs(w2).max(initial=0)))
    if bound < 1 << 53:
        exact = (x2.astype(np.float64) @ w2.astype(np.float64)).astype(np.int64) + bias
    elif bound < 1 << 62:
        exact = x2 @ w2 + bias
    else:
        exact = x2.astype(object) @ w2.astype(object) + bias.astype(object)
    return int(np.abs(exact).max(initial=0))


def _run(x2, w2, bias, cfg, *, lanes, digit_bits, msb_first):
    """Run the kernel on validated (M, K) x (K, N); return acc (M, N), stats, cycles per output."""
    lanes = _check_int(lanes, "lanes")
    x2 = np.ascontiguousarray(x2, dtype=np.int64)
    w2 = np.ascontiguousarray(w2, dtype=np.int64)
    m_rows, k_len = x2.shape
    n_out = w2.shape[1]
    p = cfg.fmt_x.width
    digit_bits = min(digit_bits, p)
    # int64 headroom: |acc| < 2**(BW_acc-1) plus |term| < min(lanes, K) * 2**(BW_w-1) * 2**p.
    term_bits = (min(lanes, k_len) - 1).bit_length() + cfg.fmt_w.width + p
    check(max(term_bits, cfg.acc_bits) + 1 <= 63,
          f"bricks of {lanes} {cfg.fmt_w.width}-bit weights x {p}-bit activations need {term_bits} bits "
          "per partial sum: beyond int64; use fewer lanes or narrower formats")
    if cfg.overflow is Overflow.IDEAL:  # pieces of a signed x can sum to ~2x |w x| on the way
        worst = (1 << (cfg.acc_bits - 1)) + k_len * int(np.abs(w2).max(initial=0)) * (1 << p)
        check(worst < 1 << 63, f"ideal bit-serial accumulation of K={k_len} products of {cfg.fmt_x} x "
              f"{cfg.fmt_w} could reach {worst} >= 2**63: use wrap or clip, or narrower operands")
    acc = np.empty((m_rows, n_out), np.int64)
    row_ovf = np.zeros(m_rows, np.int64)
    row_aff = np.zeros(m_rows, np.int64)
    if m_rows and n_out:
        _serial_kernel(x2, w2, bias, p, cfg.fmt_x.signed, digit_bits, lanes, bool(msb_first),
                       cfg.acc_bits, cfg.overflow.code, acc, row_ovf, row_aff)
    cycles = -(-k_len // lanes) * -(-p // digit_bits)
    stats = BitSerialStats(additions=m_rows * n_out * cycles, overflow_count=int(row_ovf.sum()),
                           outputs_affected=int(row_aff.sum()),
                           max_abs_acc=_max_abs_exact(x2, w2, bias))
    return acc, stats, cycles


def bit_serial_dense(x, w, b=None, *, fmt_x, fmt_w, fmt_y, acc_bits, overflow="wrap", lanes=16,
                     msb_first=False, rounding="nearest-even", activation="none",
                     seed=None) -> BitSerialResult:
    """Stripes dense layer: ``x`` (B, K) raw fmt_x fed bit-serially, ``w`` (K, N).

    Arguments, validation and requantization as :func:`fxpsim.kernels.dense`,
    plus ``lanes`` (activations per SIP brick, the adder-tree width; 16 in
    Stripes) and ``msb_first``. The accumulator has ``acc_bits`` bits and
    FL_acc = FL_w + FL_x; ``b`` is in that format. See the module docstring
    for when the result equals the bit-parallel one.
    """
    x, w, bias, cfg = _validate(x, w, b, fmt_x, fmt_w, fmt_y, acc_bits, overflow, rounding,
                                activation, seed, conv=False)
    acc, stats, cycles = _run(x, w, bias, cfg, lanes=lanes, digit_bits=1, msb_first=msb_first)
    return BitSerialResult(requantize(acc, cfg), acc, stats, cycles)


def bit_serial_conv2d(x, w, b=None, *, stride=1, padding=0, fmt_x, fmt_w, fmt_y, acc_bits,
                      overflow="wrap", lanes=16, msb_first=False, order="datapath",
                      rounding="nearest-even", activation="none", seed=None) -> BitSerialResult:
    """Stripes conv layer: ``x`` (B, C, H, W) raw fmt_x, ``w`` (F, C, kh, kw), NCHW.

    As :func:`fxpsim.kernels.conv2d` (zero padding, requantization). Bricks:
    ``order="datapath"`` groups ``lanes`` consecutive terms of the datapath
    order (channel, kernel row, kernel column), which keeps the equalities
    with the bit-parallel datapath listed in the module docstring;
    ``order="stripes"`` uses the hardware's bricks, ``lanes`` channels at one
    kernel position (row, column outer; channels zero-padded to whole
    bricks), so ``cycles_per_output = kh*kw*ceil(C/lanes)*p`` is the timing
    model's per-window work. wrap/ideal results are the same in both.
    Returns ``acc``/``y`` of shape (B, F, OH, OW).
    """
    check(order in ("datapath", "stripes"),
          f"unknown brick order {order!r}: use 'datapath' (channel, row, column) or 'stripes' "
          "(lanes channels at one kernel position)")
    lanes = _check_int(lanes, "lanes")
    x, w, bias, cfg = _validate(x, w, b, fmt_x, fmt_w, fmt_y, acc_bits, overflow, rounding,
                                activation, seed, conv=True)
    oh, ow = _conv_out_size(x.shape, w.shape, stride, padding)
    f, c, kh, kw = w.shape
    cols = im2col(x, kh, kw, int(stride), int(padding), oh, ow)
    wm = w.reshape(f, -1).T
    if order == "stripes":
        c_pad = -(-c // lanes) * lanes
        cols = np.pad(cols.reshape(-1, c, kh * kw).transpose(0, 2, 1), ((0, 0), (0, 0), (0, c_pad - c)))
        cols = cols.reshape(-1, kh * kw * c_pad)
        wm = np.pad(w.transpose(2, 3, 1, 0).reshape(kh * kw, c, f), ((0, 0), (0, c_pad - c), (0, 0)))
        wm = wm.reshape(kh * kw * c_pad, f)
    acc, stats, cycles = _run(cols, wm, bias, cfg, lanes=lanes, digit_bits=1, msb_first=msb_first)
    acc = np.ascontiguousarray(acc.reshape(x.shape[0], oh, ow, f).transpose(0, 3, 1, 2))
    return BitSerialResult(requantize(acc, cfg), acc, stats, cycles)


def _bit_parallel(x2, w2, b=None, *, fmt_x, fmt_w, acc_bits, overflow, fmt_y="Q62.0"):
    """The bit-parallel order on (M, K) x (K, N) (one product per addition,
    k = 0..K-1) from the same kernel: one whole-value digit, one lane. A
    twin for tests and benchmarks; the datapath proper is fxpsim.kernels."""
    x2, w2, bias, cfg = _validate(x2, w2, b, fmt_x, fmt_w, fmt_y, acc_bits, overflow,
                                  "nearest-even", "none", None, conv=False)
    acc, stats, _ = _run(x2, w2, bias, cfg, lanes=1, digit_bits=cfg.fmt_x.width, msb_first=False)
    return acc, stats


def clip_safe(x, w, b=None, *, fmt_x, acc_bits) -> np.ndarray:
    """Outputs (B, N) where bit-serial clip provably equals bit-parallel clip.

    True where ``b + P <= max`` and ``b + N >= min`` with P (N) the sum of
    the positive (negative) pieces ``s_i w_k bit_i(x_k) 2**i`` over all k
    and bits: then no prefix of the bit-serial sequence (bricks of any
    width, any bit order) nor of the bit-parallel one (P, N bound its
    positive and negative products too) leaves the range, so both equal
    the exact sum. Dense shapes; for conv pass the rows of
    ``fxpsim.kernels.datapath.im2col`` (the datapath order).
    """
    fmt_x = QFormat.parse(fmt_x)
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    p = fmt_x.width
    if fmt_x.signed:
        sign = (x >> (p - 1)) & 1                    # the sign bit, weighing -2**(p-1)
        low = x + sign * (np.int64(1) << (p - 1))    # the value of the other bits, >= 0
    else:
        sign, low = np.zeros_like(x), x
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    high = sign * (np.int64(1) << (p - 1))
    pos = low @ wp - high @ wn                       # w>0 times low bits; w<0 times the sign bit
    neg = low @ wn - high @ wp
    bias = np.zeros(w.shape[1], np.int64) if b is None else np.asarray(b, np.int64)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    return (bias + pos <= hi) & (bias + neg >= lo)


# --------------------------------------------------------------------------- timing model

@dataclass(frozen=True, slots=True)
class AcceleratorConfig:
    """DaDN / Stripes organisation (Stripes Sec. IV; DaDianNao, Chen et al. 2014).

    ``tiles`` x ``filters`` (per tile) x ``lanes`` (synapses per filter):
    DaDN multiplies ``tiles*filters*lanes`` 16-bit pairs per cycle; Stripes
    adds ``windows`` (= ``baseline_bits``) concurrent windows of 1-bit
    activations, so both have the same peak throughput at 16 bits.
    """

    tiles: int = 16
    filters: int = 16
    lanes: int = 16
    baseline_bits: int = 16

    def __post_init__(self) -> None:
        for name in ("tiles", "filters", "lanes", "baseline_bits"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise FxpsimError(f"{name}={value!r} must be a positive integer: e.g. --{name} 16 "
                                  "(the paper's 16 tiles x 16 filters x 16 lanes)")
            object.__setattr__(self, name, int(value))

    @property
    def windows(self) -> int:
        """Windows Stripes processes in parallel: baseline_bits (equal peak at 16 bits)."""
        return self.baseline_bits

    @property
    def filters_in_parallel(self) -> int:
        """Filters processed at once over all tiles: tiles * filters."""
        return self.tiles * self.filters


@dataclass(frozen=True, slots=True)
class LayerShape:
    """A conv or fully-connected layer by shape only (no weights needed).

    ``conv``: ``in_channels`` -> ``out_channels`` with a ``kernel_h`` x
    ``kernel_w`` kernel producing ``out_h`` x ``out_w`` windows, ``groups``
    as in Caffe. ``fc``: ``in_channels`` inputs -> ``out_channels`` outputs.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel_h: int = 1
    kernel_w: int = 1
    out_h: int = 1
    out_w: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        check(self.kind in ("conv", "fc"), f"layer {self.name!r} has kind {self.kind!r}: use 'conv' or 'fc'")
        for field in ("in_channels", "out_channels", "kernel_h", "kernel_w", "out_h", "out_w", "groups"):
            value = getattr(self, field)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise FxpsimError(f"layer {self.name!r}: {field}={value!r} must be a positive integer")
            object.__setattr__(self, field, int(value))
        check(self.in_channels % self.groups == 0 and self.out_channels % self.groups == 0,
              f"layer {self.name!r}: groups={self.groups} must divide in_channels={self.in_channels} "
              f"and out_channels={self.out_channels}")
        if self.kind == "fc":
            check((self.kernel_h, self.kernel_w, self.out_h, self.out_w, self.groups) == (1, 1, 1, 1, 1),
                  f"fc layer {self.name!r} takes only in_channels and out_channels (no kernel/output map)")

    @classmethod
    def conv(cls, name: str, in_channels: int, out_channels: int, kernel: int, in_hw,
             stride: int = 1, padding: int = 0, groups: int = 1) -> LayerShape:
        """A square-kernel conv layer from its input size: OH = (H + 2*pad - k)//stride + 1."""
        h, w = (in_hw, in_hw) if isinstance(in_hw, (int, np.integer)) else in_hw
        oh, ow = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
        check(oh >= 1 and ow >= 1, f"conv layer {name!r}: a {kernel}x{kernel} kernel does not fit the "
              f"{h}x{w} input with padding {padding}")
        return cls(name, "conv", in_channels, out_channels, kernel, kernel, oh, ow, groups)

    @classmethod
    def fc(cls, name: str, n_in: int, n_out: int) -> LayerShape:
        """A fully-connected layer of ``n_in`` inputs and ``n_out`` outputs."""
        return cls(name, "fc", n_in, n_out)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image (no padding)."""
        return (self.out_h * self.out_w * self.kernel_h * self.kernel_w
                * (self.in_channels // self.groups) * self.out_channels)


@dataclass(frozen=True, slots=True)
class LayerTiming:
    """One layer's row of the Stripes table (cycles per image)."""

    name: str
    kind: str
    macs: int
    precision: int | None
    baseline_cycles: int
    stripes_cycles: int
    speedup: float
    ideal_speedup: float


@dataclass(frozen=True, slots=True)
class NetworkTiming:
    """Per-layer timings and network totals: speedup = sum DaDN / sum STR."""

    layers: tuple[LayerTiming, ...]
    baseline_cycles: int
    stripes_cycles: int
    speedup: float
    ideal_speedup: float


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def time_layer(shape: LayerShape, precision: int | None,
               config: AcceleratorConfig = AcceleratorConfig()) -> LayerTiming:
    """DaDN and Stripes cycles of one layer (formulas in the module docstring).

    Conv layers take the activation precision ``p`` (1..baseline_bits); fc
    layers run bit-parallel in Stripes and take ``None``.
    """
    c = config
    if shape.kind == "fc":
        check(precision is None, f"fc layer {shape.name!r} runs bit-parallel in Stripes: give no precision")
        base = _ceil(shape.in_channels, c.lanes) * _ceil(shape.out_channels, c.filters_in_parallel)
        return LayerTiming(shape.name, "fc", shape.macs, None, base, base, 1.0, 1.0)
    p = _check_precision(precision, c.baseline_bits)
    per_window = (shape.kernel_h * shape.kernel_w * _ceil(shape.in_channels // shape.groups, c.lanes)
                  * _ceil(shape.out_channels // shape.groups, c.filters_in_parallel) * shape.groups)
    windows = shape.out_h * shape.out_w
    base = windows * per_window
    stripes = _ceil(windows, c.windows) * per_window * p
    return LayerTiming(shape.name, "conv", shape.macs, p, base, stripes, base / stripes, c.baseline_bits / p)


def time_network(shapes, profile, config: AcceleratorConfig = AcceleratorConfig()) -> NetworkTiming:
    """Time a network given by shapes under a precision profile (one p per conv layer).

    ``profile``: a string ``"9-8-5-5-7"`` or a sequence of ints, in conv-layer
    order. Network speedup = sum DaDN cycles / sum Stripes cycles; ideal =
    sum DaDN / sum (DaDN * p / baseline_bits), fc layers at 1 (Table I).
    """
    shapes = tuple(shapes)
    check(len(shapes) > 0 and all(isinstance(s, LayerShape) for s in shapes),
          "time_network needs a non-empty sequence of LayerShape")
    n_conv = sum(s.kind == "conv" for s in shapes)
    precisions = iter(parse_profile(profile, n_layers=n_conv, max_bits=config.baseline_bits))
    rows = tuple(time_layer(s, next(precisions) if s.kind == "conv" else None, config) for s in shapes)
    base = sum(r.baseline_cycles for r in rows)
    stripes = sum(r.stripes_cycles for r in rows)
    ideal_den = sum(r.baseline_cycles * (r.precision if r.precision else config.baseline_bits) for r in rows)
    ideal = float(Fraction(base * config.baseline_bits, ideal_den))
    return NetworkTiming(rows, base, stripes, float(Fraction(base, stripes)), ideal)


def _check_precision(p, max_bits: int) -> int:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or not 1 <= p <= max_bits:
        raise FxpsimError(f"precision {p!r} is outside 1..{max_bits}: Stripes feeds 1 to {max_bits} "
                          "activation bits per layer")
    return int(p)


def parse_profile(profile, n_layers: int | None = None, max_bits: int = 16) -> tuple[int, ...]:
    """``"9-8-5-5-7"`` (or a sequence of ints) -> ``(9, 8, 5, 5, 7)``, checked.

    Each precision must lie in 1..max_bits; with ``n_layers`` the profile
    must have exactly that many entries (one per conv layer).
    """
    if n_layers == 0 and (profile is None or len(profile) == 0):
        return ()  # a network without conv layers: nothing runs bit-serially
    if isinstance(profile, str):
        parts = profile.strip().split("-")
        if not profile.strip() or not all(part.strip().isdigit() for part in parts):
            raise FxpsimError(f"bad precision profile {profile!r}: write bits per conv layer joined "
                              "by '-', e.g. 9-8-5-5-7")
        values = tuple(int(part) for part in parts)
    else:
        values = tuple(profile)
        check(len(values) > 0, "empty precision profile: give one precision per conv layer, e.g. 9-8-5-5-7")
    values = tuple(_check_precision(v, max_bits) for v in values)
    if n_layers is not None:
        check(len(values) == n_layers, f"profile {'-'.join(map(str, values))} has {len(values)} "
              f"precision(s) but the network has {n_layers} conv layer(s): give one per conv layer")
    return values


# --------------------------------------------------------------------------- shapes of real networks

def shapes_from_network(network) -> tuple[LayerShape, ...]:
    """One :class:`LayerShape` per compute layer of a network (or model), in order.

    Names follow :func:`fxpsim.simulate.build_stages` (``conv1, conv2, ...,
    fc1, ...``, counted per kind), so a profile or a config from the search
    lines up with them. Conv2D gives its kernel, stride and padding on the
    input shape in ``network.shapes``; Dense gives ``n_in -> n_out``. Only
    the structure is read: the weights may be zero (``Network.from_config``).
    """
    network = getattr(network, "network", network)
    shapes, counters = [], {"conv2d": 0, "dense": 0}
    for i, layer in enumerate(network.layers):
        if layer.kind not in counters:
            continue
        counters[layer.kind] += 1
        if layer.kind == "dense":
            shapes.append(LayerShape.fc(f"fc{counters['dense']}", int(layer.n_in), int(layer.n_out)))
        else:
            c, h, w = network.shapes[i]
            shapes.append(LayerShape.conv(f"conv{counters['conv2d']}", int(c), int(layer.c_out), int(layer.k),
                                          (int(h), int(w)), int(layer.stride), int(layer.padding)))
    check(shapes, "the network has no Conv2D or Dense layer to time")
    return tuple(shapes)


def _caffe_alexnet() -> tuple[LayerShape, ...]:
    c, f = LayerShape.conv, LayerShape.fc
    return (c("conv1", 3, 96, 11, 227, stride=4),            # 55x55, pool 3/2 -> 27
            c("conv2", 96, 256, 5, 27, padding=2, groups=2),  # 27x27, pool -> 13
            c("conv3", 256, 384, 3, 13, padding=1),
            c("conv4", 384, 384, 3, 13, padding=1, groups=2),
            c("conv5", 384, 256, 3, 13, padding=1, groups=2),  # pool -> 6x6x256
            f("fc6", 9216, 4096), f("fc7", 4096, 4096), f("fc8", 4096, 1000))


SHAPE_PRESETS = {
    "lenet-caffe": ("Caffe's LeNet (the network of Stripes' Table I): conv20x5 on 28x28, maxpool2, "
                    "conv50x5, maxpool2, fc500, fc10",
                    lambda: (LayerShape.conv("conv1", 1, 20, 5, 28), LayerShape.conv("conv2", 20, 50, 5, 12),
                             LayerShape.fc("fc1", 800, 500), LayerShape.fc("fc2", 500, 10))),
    "alexnet": ("Caffe's BVLC AlexNet on 227x227x3 (conv2/4/5 in 2 groups), 5 conv + 3 fc",
                _caffe_alexnet),
}
"""Networks known by shape only: name -> (description, builder of its LayerShapes)."""


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1x28x28"`` (C x H x W) or ``"784"`` -> a tuple of positive ints."""
    parts = str(text).strip().lower().split("x")
    if not all(part.strip().isdigit() and int(part) >= 1 for part in parts) or len(parts) not in (1, 3):
        raise FxpsimError(f"bad input shape {text!r}: write CxHxW for images (e.g. 1x28x28) or N for "
                          "flat inputs (e.g. 784), positive integers")
    return tuple(int(part) for part in parts)


def parse_shapes(text: str, input_shape=None) -> tuple[tuple[LayerShape, ...], str]:
    """Layers by shape: a preset of :data:`SHAPE_PRESETS` or an architecture spec.

    A spec uses the network grammar (``conv20x5-maxpool2-conv50x5-maxpool2-
    fc500-fc10``, or an architecture name such as ``lenet5``) on
    ``input_shape`` (``"1x28x28"``; required for a spec). Returns the
    shapes and a one-line description.
    """
    from .network import ARCHITECTURES, Network, parse_spec, resolve_spec

    key = str(text).strip().lower()
    if key in SHAPE_PRESETS:
        check(input_shape is None, f"--shapes {key} fixes its own input size: give no --input-shape")
        desc, build = SHAPE_PRESETS[key]
        return build(), desc
    if input_shape is None:
        raise FxpsimError(f"--shapes {text!r} is not a preset ({', '.join(SHAPE_PRESETS)}): for an "
                          "architecture spec give its input size too, e.g. --input-shape 1x28x28")
    in_shape = parse_input_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    n_classes = 10
    spec = resolve_spec(key, in_shape, n_classes) if key in ARCHITECTURES else key
    layers = parse_spec(spec, in_shape)
    net = Network(layers, in_shape, seed=None)
    return shapes_from_network(net), f"{spec} on {'x'.join(map(str, in_shape))}"


def profile_from_config(config, shapes) -> tuple[int, ...]:
    """Conv layers' activation precisions p = input data width (``fmt_x.width``) of a config.

    The config must name the same layers as ``shapes`` in order (a config
    from ``fxpsim search`` for this model); fc layers are skipped (they run
    bit-parallel in Stripes).
    """
    names = [s.name for s in shapes]
    cfg_names = [layer.name for layer in config]
    check(cfg_names == names, f"the config's layers ({', '.join(cfg_names)}) do not match the network's "
                              f"({', '.join(names)}): give a config made for this model")
    return tuple(layer.fmt_x.width for layer, s in zip(config, shapes) if s.kind == "conv")


# --------------------------------------------------------------------------- sign bits of ReLU outputs

_KEEPS_SIGN = ("maxpool2d", "avgpool2d", "flatten")


def nonnegative_inputs(stages, x_first=None) -> list[bool]:
    """Per stage (:func:`fxpsim.simulate.build_stages`): is its input never negative?

    Stage ``i > 0``: by structure, when stage ``i-1`` ends in a ReLU (fused,
    or a later ``relu`` op) followed only by pooling or flatten (the integer
    max, the rounded average and a reshape of non-negative values stay
    non-negative). Stage 0: when ``x_first`` (its float input on the data at
    hand) is given and has no negative value; otherwise False.
    """
    out = [x_first is not None and bool(np.min(x_first) >= 0)]
    for s in stages[:-1]:
        nonneg = bool(s.relu)
        for op, _ in s.post:
            nonneg = True if op == "relu" else (nonneg and op in _KEEPS_SIGN)
        out.append(nonneg)
    return out


def unsigned_inputs(config, nonnegative):
    """The config with each non-negative input's sign bit dropped: Q(I,F) -> UQ(I-1,F).

    The sign bit of a value that is never negative is always 0, so a layer
    whose input is non-negative computes the same values from the unsigned
    format one bit narrower: ``Q(I,F)`` holds ``0 .. 2**(I-1) - 2**-F`` of
    its non-negative range, and so does ``UQ(I-1,F)``; quantizing or
    saturating a non-negative value gives the same raw integer in both.
    Stripes then feeds ``p - 1`` bits (its precisions count magnitude
    bits). The previous layer's output format changes with it (it is the
    same data). 1-bit formats, and layers with possibly negative inputs,
    are kept.
    """
    from .sweep import set_data_format

    check(len(nonnegative) == len(config), f"{len(nonnegative)} flags for {len(config)} layers")
    for i, (cfg, nonneg) in enumerate(zip(config, nonnegative)):
        fmt = cfg.fmt_x
        if nonneg and fmt.signed and fmt.width > 1:
            config = set_data_format(config, i, QFormat(fmt.int_bits - 1, fmt.frac_bits, signed=False))
    return config


def fold_input_scaling(model, scale: float = 256.0):
    """The same network fed ``raw_pixels / scale`` (Caffe's LeNet input: [0, 1)), preprocessing folded.

    ``apply(x) = (x - mean) / std`` is per channel and affine, so the first
    compute layer absorbs it: ``W' = W * scale / std[c]``, ``b' = b - sum
    W * mean[c] / std[c]`` (exact for a Dense layer, and for a Conv2D
    without padding, whose windows never see a padded zero). The float
    network is unchanged up to float rounding; its input becomes
    non-negative, as in Caffe, where Stripes' precisions were measured.
    """
    from .modelfile import Model
    from .network import Network
    from .train.data import Preprocess

    pre, net = model.preprocess, model.network
    mean, std = np.asarray(pre.mean, np.float64), np.asarray(pre.std, np.float64)
    check(mean.shape[1:] == (1, 1), f"the model's preprocessing '{pre.mode}' subtracts a mean image: "
                                    "only per-channel scaling folds into the first layer")
    first = next(i for i, layer in enumerate(net.layers) if layer.kind in ("conv2d", "dense"))
    check(all(layer.kind in ("flatten", "dropout") for layer in net.layers[:first]),
          "layers before the first Conv2D/Dense must be flatten/dropout to fold the input scaling")
    copy = Network.from_config(net.to_config(), dtype=np.float64)
    copy.load_state_dict(net.state_dict())
    layer = copy.layers[first]
    c, h, w = net.input_shape
    gain = np.broadcast_to(scale / std.reshape(c), (c,))
    shift = (mean / std).reshape(c)
    if layer.kind == "conv2d":
        check(int(layer.padding) == 0, "the first Conv2D pads with zeros: folding the input scaling "
                                       "would change the padded values; this works for unpadded layers")
        W = layer.params["W"]
        bias_shift = np.einsum("fcuv,c->f", W, shift)
        W *= gain[None, :, None, None]
    else:
        per_input = np.repeat(np.arange(c), h * w)
        W = layer.params["W"]
        bias_shift = W.T @ shift[per_input]
        W *= gain[per_input][:, None]
    layer.params["b"] -= bias_shift
    zeros = np.zeros((c, 1, 1), np.float32)
    folded = Preprocess("none", zeros, np.full((c, 1, 1), scale, np.float32))
    return Model(copy, folded, {**model.metadata, "input_scaling": f"pixels / {scale:g}, folded"})
