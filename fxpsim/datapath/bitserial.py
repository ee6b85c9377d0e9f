"""The bit-serial engine of Stripes (Judd et al., MICRO 2016): exact SIP inner products.

Stripes (STR) feeds each activation to its serial inner-product unit (SIP)
one bit per cycle, so a layer whose activations need ``p`` bits takes ``p``
cycles where the bit-parallel baseline, DaDianNao (DaDN), takes one 16-bit
cycle; STR processes 16 windows at once so that both engines have the same
peak throughput at 16 bits, and the ideal speedup is ``16 / p``.

Evaluation (bit-exact). One SIP computes, per cycle ``i`` and per
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

When bit-serial equals bit-parallel (``fxpsim.datapath.dense``'s ``dense``/``conv2d``,
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

Timing (cycles per layer and network, DaDianNao vs Stripes) is
:mod:`fxpsim.timing.stripes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..config import LayerConfig
from ..errors import FxpsimError, check
from ..qformat import MAX_WIDTH, Overflow, QFormat
from .core import call_config, check_knobs, check_operands, conv_geometry, im2col, layer_config, requantize

__all__ = ["BitSerialResult", "BitSerialStats", "KNOBS_RUN", "bit_serial_conv2d", "bit_serial_dense",
           "clip_safe"]

KNOBS_RUN = ("fmt_bias", "output_overflow")
"""The knobs (:data:`fxpsim.config.KNOBS`) this engine runs off their defaults (the bias arrives in the
accumulator format; the output is requantized by the core); the others are refused with one line."""

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
    elif bound < 1 << MAX_WIDTH:
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
        worst = (max(1 << (cfg.acc_bits - 1), int(np.abs(bias).max(initial=0)))
                 + k_len * int(np.abs(w2).max(initial=0)) * (1 << p))
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


def bit_serial_dense(x, w, b=None, cfg: LayerConfig | None = None, *, fmt_x=None, fmt_w=None,
                     fmt_y=None, acc_bits=None, overflow=None, lanes=16, msb_first=False,
                     rounding=None, activation="none", seed=None) -> BitSerialResult:
    """Stripes dense layer: ``x`` (B, K) raw fmt_x fed bit-serially, ``w`` (K, N).

    Arguments (``cfg`` or the keyword form), validation and requantization as
    :func:`fxpsim.datapath.dense.dense`,
    plus ``lanes`` (activations per SIP brick, the adder-tree width; 16 in
    Stripes) and ``msb_first``. The accumulator has ``acc_bits`` bits and
    FL_acc = FL_w + FL_x; ``b`` is in that format. See the module docstring
    for when the result equals the bit-parallel one.
    """
    cfg, seed = call_config(cfg, activation, seed, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits,
                            overflow=overflow, rounding=rounding)
    check_knobs(cfg, "bitserial", KNOBS_RUN)
    x, w, bias = check_operands(x, w, b, cfg, conv=False)
    acc, stats, cycles = _run(x, w, bias, cfg, lanes=lanes, digit_bits=1, msb_first=msb_first)
    return BitSerialResult(requantize(acc, cfg, activation, seed), acc, stats, cycles)


def bit_serial_conv2d(x, w, b=None, cfg: LayerConfig | None = None, *, stride=1, padding=0,
                      fmt_x=None, fmt_w=None, fmt_y=None, acc_bits=None, overflow=None, lanes=16,
                      msb_first=False, order="datapath", rounding=None, activation="none",
                      seed=None) -> BitSerialResult:
    """Stripes conv layer: ``x`` (B, C, H, W) raw fmt_x, ``w`` (F, C, kh, kw), NCHW.

    As :func:`fxpsim.datapath.dense.conv2d` (zero padding, requantization). Bricks:
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
    cfg, seed = call_config(cfg, activation, seed, fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits,
                            overflow=overflow, rounding=rounding)
    check_knobs(cfg, "bitserial", KNOBS_RUN)
    x, w, bias = check_operands(x, w, b, cfg, conv=True)
    oh, ow = conv_geometry(x.shape, w.shape, stride, padding)
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
    return BitSerialResult(requantize(acc, cfg, activation, seed), acc, stats, cycles)


def _bit_parallel(x2, w2, b=None, *, fmt_x, fmt_w, acc_bits, overflow, fmt_y=QFormat(MAX_WIDTH, 0)):
    """The bit-parallel order on (M, K) x (K, N) (one product per addition,
    k = 0..K-1) from the same kernel: one whole-value digit, one lane. A
    twin for tests and benchmarks; the datapath proper is fxpsim.datapath.dense."""
    cfg = layer_config(fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits, overflow=overflow)
    x2, w2, bias = check_operands(x2, w2, b, cfg, conv=False)
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
    ``fxpsim.datapath.core.im2col`` (the datapath order).
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
