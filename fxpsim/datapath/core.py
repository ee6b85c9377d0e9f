"""What every integer datapath engine shares (DESIGN.md; stumpy's ``core.check_*``).

The engines (:mod:`.dense`, :mod:`.sparse`, :mod:`.bitserial`) take a
:class:`~fxpsim.config.LayerConfig` that is validated once, in its
``__post_init__`` (formats, BW_acc, product width, requantization shift),
and use its derived values as they are (``acc_min``, ``acc_max``,
``shift``, ``fmt_bias_acc``, ``product_shift``). This module checks only what
depends on the call:

- :func:`layer_config`: the cfg of a call, or one built from the keyword
  form ``fmt_x=, fmt_w=, fmt_y=, acc_bits=, overflow=, rounding=``.
- :func:`check_requantize_args` (activation, stochastic seed),
  :func:`check_prefix_flag`, :func:`check_operands` (the arrays: ndim,
  integer dtype, raw range, shapes, the bias in ``fmt_bias_acc``, exact sums
  inside int64 where the engine needs them), :func:`conv_geometry`, and
  :func:`check_knobs` (an engine refusing a knob it does not run).

and holds the arithmetic every engine ends with: :func:`requantize`
(``shift_round(acc, FL_acc - FL_y)`` with the layer's rounding, clip to
``fmt_y`` or wrap by ``output_overflow``, activation) with its counter-based
:func:`stochastic_bits`, :func:`im2col` (conv patches in the sequential
order channel, kernel row, kernel column) and :func:`order_permutation`
(``strided:RF``'s order over them). :class:`OverflowStats` is every engine's statistics
record (DESIGN.md defines its fields).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np

from ..config import LayerConfig
from ..errors import FxpsimError, check
from ..graph.geometry import conv_out_size
from ..qformat import Overflow, QFormat, Rounding, check_raw, shift_round, stochastic_bits, wrap_raw
from . import jit

ACTIVATIONS = ("none", "relu")
I64_LIMIT = 1 << 63


@dataclass(frozen=True, slots=True)
class OverflowStats:
    """Overflow statistics of one layer call (DESIGN.md).

    ``additions``: MACs performed; ``overflow_count``: additions whose exact
    result left the BW_acc range; ``outputs_affected``: outputs with at least
    one; ``max_abs_acc``: max over outputs of ``|bias + full exact sum|``;
    ``max_abs_prefix`` (on request, else None): max over outputs and every
    prefix of the exact running sum in the layer's order, bias first.
    The exact sum adds each product at FL_acc: rounded when FL_acc < FL_w +
    FL_x, never range-limited. Order ``tree``: ``additions`` still K per
    output (K - 1 adder nodes, then the bias), ``overflow_count`` counts
    the nodes and the bias addition, ``max_abs_prefix`` is the largest
    exact |node| (pair sums and the final bias addition). ``cast_overflows``
    (``product="cast"``; 0 otherwise): products that left the BW_acc range
    when cast into it, kept apart from ``overflow_count`` (no addition).
    """

    additions: int
    overflow_count: int
    outputs_affected: int
    max_abs_acc: int
    max_abs_prefix: int | None = None
    cast_overflows: int = 0


@dataclass(frozen=True, slots=True)
class DatapathResult:
    """Raw outputs ``y`` (fmt_y), final accumulators ``acc`` (int64, FL_acc), stats."""

    y: np.ndarray
    acc: np.ndarray
    stats: OverflowStats


# ----------------------------------------------------------------- the call's config

def layer_config(cfg=None, *, fmt_x=None, fmt_w=None, fmt_y=None, acc_bits=None, overflow=None,
                 rounding=None) -> LayerConfig:
    """``cfg`` as it is, or a LayerConfig named ``layer`` built once from the keyword form
    (``overflow`` default wrap, ``rounding`` nearest-even); never both."""
    keywords = dict(fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits, overflow=overflow,
                    rounding=rounding)
    if cfg is not None:
        if not isinstance(cfg, LayerConfig):  # not check(): its message would repr every cfg
            raise FxpsimError(f"cfg={cfg!r} is not a LayerConfig: pass fxpsim.config.LayerConfig(...) or "
                              "the keywords fmt_x, fmt_w, fmt_y, acc_bits")
        given = [k for k, v in keywords.items() if v is not None]
        check(not given, f"both cfg and {', '.join(given)} were given: the LayerConfig already fixes "
                         "them; pass one or the other")
        return cfg
    missing = [k for k in ("fmt_x", "fmt_w", "fmt_y", "acc_bits") if keywords[k] is None]
    check(not missing, f"neither cfg nor {', '.join(missing)} was given: pass a LayerConfig, or the "
                       "keywords fmt_x, fmt_w, fmt_y and acc_bits")
    return LayerConfig("layer", fmt_w=fmt_w, fmt_x=fmt_x, fmt_y=fmt_y, acc_bits=acc_bits,
                       overflow="wrap" if overflow is None else overflow,
                       rounding="nearest-even" if rounding is None else rounding)


def call_config(cfg, activation, seed, **formats) -> tuple[LayerConfig, int | None]:
    """What every engine's public function checks first, in this order: its config
    (:func:`layer_config`: ``cfg`` or the keyword ``formats``), then the activation and the
    stochastic seed (:func:`check_requantize_args`). Returns ``(cfg, seed)``."""
    cfg = layer_config(cfg, **formats)
    return cfg, check_requantize_args(cfg, activation, seed)


def check_requantize_args(cfg: LayerConfig, activation, seed) -> int | None:
    """``activation`` one of :data:`ACTIVATIONS`; stochastic rounding's seed as an int."""
    check(activation in ACTIVATIONS,
          f"unknown activation {activation!r}: use one of {', '.join(ACTIVATIONS)}")
    if cfg.rounding is not Rounding.STOCHASTIC:
        return seed
    check(isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)),
          f"stochastic rounding needs an integer seed, got seed={seed!r}: pass seed=<int> so results repeat")
    return int(seed)


def check_prefix_flag(prefix_stats) -> bool:
    """``prefix_stats`` checked to be a bool."""
    if not isinstance(prefix_stats, (bool, np.bool_)):
        raise FxpsimError(f"prefix_stats={prefix_stats!r} is not a bool: pass prefix_stats=True to "
                          "get max_abs_prefix, False (the default) to skip it")
    return bool(prefix_stats)


# ----------------------------------------------------------------- operands

def check_array(arr, fmt: QFormat, name: str, ndim: int, layout: str, in_range: bool = True) -> np.ndarray:
    """Integer array of ``ndim`` dims inside ``fmt``'s raw range (as qformat.check_raw, no copy).

    ``in_range=False`` leaves the range of an int array to an engine that takes its
    minimum and maximum anyway (then :func:`check_raw` raises the same message).
    """
    arr = np.asarray(arr)
    check(arr.ndim == ndim, f"{name} has shape {arr.shape}, not {ndim}-D: pass {name} as {layout}")
    if not in_range and arr.dtype.kind in "iu":
        return arr
    return check_raw(arr, fmt, name, as_int64=False)


def check_bias(b, n_out: int, cfg: LayerConfig) -> np.ndarray:
    """The bias (None: zeros) as int64 raw values of ``cfg.fmt_bias_acc`` (the accumulator
    format: the Simulator converts a bias of another ``fmt_bias`` into it), one per output."""
    if b is None:
        return np.zeros(n_out, dtype=np.int64)
    bias = np.asarray(b)
    check(bias.shape == (n_out,),
          f"bias has shape {bias.shape}, not ({n_out},): give one raw accumulator value per output")
    if bias.dtype.kind not in "iub":
        raise FxpsimError(f"bias has dtype {bias.dtype}, not integer: pass raw accumulator integers "
                          f"(quantize the bias with frac_bits = FL_acc = {cfg.frac_acc})")
    fmt = cfg.fmt_bias_acc
    if bias.size:
        lo, hi = int(bias.min()), int(bias.max())
        check(fmt.raw_min <= lo and hi <= fmt.raw_max,
              f"bias holds raw values in [{lo}, {hi}], outside the {fmt.width}-bit accumulator's range "
              f"[{fmt.raw_min}, {fmt.raw_max}]: BW_acc too small to hold the bias; widen acc_bits or "
              "quantize the bias with fewer integer bits")
    return bias.astype(np.int64)


def max_abs_raw(fmt: QFormat) -> int:
    """Largest |raw| of ``fmt``."""
    return max(abs(fmt.raw_min), abs(fmt.raw_max))


def max_abs_term(max_p: int, d: int) -> int:
    """Largest |product at FL_acc| for products of magnitude <= ``max_p`` and ``d =
    cfg.product_shift``: shifted left exactly, or rounded right (a rounding never passes the
    next integer: ceil(max_p / 2**-d))."""
    return max_p << d if d >= 0 else -((-max_p) >> -d)


def check_int64_sums(k: int, cfg: LayerConfig, bias: np.ndarray, what: str, fix: str) -> None:
    """Every exact partial sum ``bias + sum of K products`` (at FL_acc) provably inside int64:
    ``max|bias| + K max|term| < 2**63`` (operand maxima of the formats, :func:`max_abs_term`)."""
    worst = (int(np.abs(bias).max(initial=0))
             + k * max_abs_term(max_abs_raw(cfg.fmt_x) * max_abs_raw(cfg.fmt_w), cfg.product_shift))
    check(worst < I64_LIMIT,
          f"{what} of K={k} products of {cfg.fmt_x} x {cfg.fmt_w} could reach {worst} >= 2**63: {fix}")


def check_knobs(cfg: LayerConfig, engine: str, honoured: tuple[str, ...]) -> None:
    """A one-line error when ``cfg`` sets a knob (:data:`fxpsim.config.KNOBS`) off its default
    that ``engine`` does not run (it runs the ``honoured`` ones; ``product_rounding`` acts only
    when FL_acc < FL_w + FL_x, so every engine runs it otherwise)."""
    other = [k for k in cfg.knobs if k not in honoured
             and not (k == "product_rounding" and cfg.product_shift >= 0)]
    check(not other, f"layer {cfg.name}: engine {engine} does not run {other[0] if other else ''}="
                     f"{cfg.knobs.get(other[0]) if other else ''!r} (it runs "
                     f"{', '.join(honoured) or 'no knob'} off its default): run the layer on engine dense, "
                     "or leave that knob at its default")


def check_channels_last(cfg: LayerConfig, k: int, channels: int | None = None) -> None:
    """``order="channels-last:C..."`` needs C to divide K (dense) or to be the conv's input
    ``channels``; a one-line error otherwise."""
    c = cfg.channels_last
    if c is None:
        return
    if channels is not None:
        check(c == channels, f"layer {cfg.name}: order={cfg.order} names {c} channels but the conv has "
                             f"{channels} input channels: use order=channels-last:{channels}")
    check(k % c == 0, f"layer {cfg.name}: order={cfg.order}: K={k} inputs are not {c} channels of equal "
                      f"size (K % C != 0): give the channel count of the flattened input, a divisor of {k}")


def order_permutation(cfg: LayerConfig, k: int) -> np.ndarray | None:
    """The input indices in accumulation order, or None when that is 0..K-1 (sequential, RF = 1
    or RF >= K, or ``tree``). ``strided:RF``: k = r, r + RF, ... for r = 0..RF-1 (hls4ml's
    Resource strategy); ``channels-last:C``: k = c * K/C + s for s, then c (hls4ml's channels-last
    tensors); ``channels-last:C+strided:RF``: strided over that sequence."""
    rf, c = cfg.reuse_factor, cfg.channels_last
    if rf is None or (c is None and (rf == 1 or rf >= k)):
        return None
    seq = np.arange(k)
    if c is not None and c > 1 and k // c > 1:
        seq = seq.reshape(c, k // c).T.ravel()
    if rf > 1 and rf < k:
        seq = np.concatenate([seq[r::rf] for r in range(rf)])
    return None if np.array_equal(seq, np.arange(k)) else seq


_INT_TYPES = (np.int8, np.int16, np.int32, np.int64)


def narrow(arr: np.ndarray, fmt: QFormat) -> np.ndarray:
    """``arr`` (checked to lie in ``fmt``'s raw range) in the narrowest signed int type
    holding that range: exact, and every pass over it (im2col, the lane kernels, the
    BLAS copies) moves fewer bytes (measured: LeNet-5 conv2 im2col 37 -> 5 ms)."""
    for dt in _INT_TYPES:
        info = np.iinfo(dt)
        if info.min <= fmt.raw_min and fmt.raw_max <= info.max:
            break
    return arr if arr.dtype.itemsize <= np.dtype(dt).itemsize and arr.dtype.kind == "i" \
        else arr.astype(dt)


def check_operands(x, w, b, cfg: LayerConfig, conv: bool = False):
    """Dense ``x (B, K)``, ``w (K, N)`` or conv ``x (B, C, H, W)``, ``w (F, C, kh, kw)``
    raw ints of ``cfg``'s formats, ``b (N,)`` in ``fmt_bias``: ``(x, w, bias int64)``,
    x and w narrowed (:func:`narrow`), or a one-line error. ``ideal`` also needs
    every exact sum inside int64."""
    if conv:
        x = check_array(x, cfg.fmt_x, "x", 4, "(batch, channels, height, width) NCHW")
        w = check_array(w, cfg.fmt_w, "w", 4, "(filters, channels, kh, kw)")
        check(x.shape[1] == w.shape[1],
              f"x has {x.shape[1]} channels but w expects {w.shape[1]} (w shape {w.shape}): "
              "w must be (filters, x channels, kh, kw)")
        n_out = w.shape[0]
        k = w.shape[1] * w.shape[2] * w.shape[3]
    else:
        x = check_array(x, cfg.fmt_x, "x", 2, "(batch, K)")
        w = check_array(w, cfg.fmt_w, "w", 2, "(K, N)")
        check(x.shape[1] == w.shape[0],
              f"x has K={x.shape[1]} columns but w has {w.shape[0]} rows (w shape {w.shape}): "
              "w must be (K, N) for x (batch, K)")
        n_out = w.shape[1]
        k = w.shape[0]
    check(k >= 1, f"the reduction length K is {k}: a layer needs at least one input per output")
    check_channels_last(cfg, k, w.shape[1] if conv else None)
    bias = check_bias(b, n_out, cfg)
    if cfg.overflow is Overflow.IDEAL:
        check_int64_sums(k, cfg, bias, "ideal accumulation",
                         "the unbounded reference needs int64; use wrap or clip, or narrower operands")
    return narrow(x, cfg.fmt_x), narrow(w, cfg.fmt_w), bias


# ----------------------------------------------------------------- conv geometry

def conv_geometry(x_shape, w_shape, stride, padding) -> tuple[int, int]:
    """Output height and width of an NCHW conv (zero padding, floor mode:
    :func:`fxpsim.graph.geometry.conv_out_size`), or a one-line error."""
    for name, v, least in (("stride", stride, 1), ("padding", padding, 0)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < least:
            raise FxpsimError(f"{name}={v!r} must be an integer >= {least}: e.g. stride=1, padding=0")
    h, wd = x_shape[2] + 2 * padding, x_shape[3] + 2 * padding
    kh, kw = w_shape[2], w_shape[3]
    check(kh <= h and kw <= wd,
          f"kernel {kh}x{kw} is larger than the padded input {h}x{wd}: pad more or use a smaller kernel")
    return (conv_out_size(x_shape[2], kh, int(stride), int(padding)),
            conv_out_size(x_shape[3], kw, int(stride), int(padding)))


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int, oh: int, ow: int,
           pad_value: int = 0) -> np.ndarray:
    """Patches (B*OH*OW, C*kh*kw) of NCHW ``x``, columns in accumulation order c, i, j;
    the padding holds ``pad_value`` (0: a zero tap, still counted as an addition)."""
    if pad_value != 0 and padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=pad_value)
        padding = 0
    dt = x.dtype if x.dtype.kind == "i" else np.int64
    out = np.empty((x.shape[0] * oh * ow, x.shape[1] * kh * kw), dtype=dt)
    jit._im2col_kernel(np.ascontiguousarray(x, dtype=dt), kh, kw, stride, padding, out)
    return out


# ----------------------------------------------------------------- requantization

_SMALL_WORK = 1 << 20
"""MACs below which kernels run on one thread (waking a thread pool costs more)."""


@contextmanager
def threads_for(work: int):
    """One Numba thread for small calls; the configured count otherwise."""
    if work >= _SMALL_WORK:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def requantize(acc: np.ndarray, cfg: LayerConfig, activation: str = "none", seed: int | None = None
               ) -> np.ndarray:
    """acc (FL_acc) -> y (fmt_y): round by ``cfg.shift`` with ``cfg.rounding``, clip to fmt_y
    (``output_overflow="wrap"``: keep its low bits, two's complement), activation; the
    arguments checked by :func:`check_requantize_args`."""
    v = np.ascontiguousarray(acc, dtype=np.int64)
    s = cfg.shift
    y_min, y_max = cfg.fmt_y.raw_min, cfg.fmt_y.raw_max
    wrap = cfg.output_overflow is Overflow.WRAP
    if cfg.rounding is not Rounding.STOCHASTIC:  # fused Numba pass (same semantics as below)
        out = np.empty(v.shape, dtype=np.int64)
        with threads_for(v.size * 64):
            jit._requantize_kernel(v.reshape(-1), s, cfg.rounding.code, y_min, y_max, wrap,
                                   activation == "relu", out.reshape(-1))
        return out
    if wrap:  # the low bits of the rounded value: int64 arithmetic wraps modulo 2**64 > 2**width
        y = v << np.int64(-s) if s <= 0 else shift_round(v, s, Rounding.STOCHASTIC, seed)
        y = wrap_raw(y, cfg.fmt_y)
    elif s <= 0:
        hi_a = y_max >> -s  # largest acc with acc * 2**-s <= y_max
        lo_a = -((-y_min) >> -s)  # smallest acc with acc * 2**-s >= y_min
        y = np.where(v > hi_a, np.int64(y_max),
                     np.where(v < lo_a, np.int64(y_min), np.clip(v, lo_a, hi_a) << np.int64(-s)))
    else:
        y = np.clip(shift_round(v, s, Rounding.STOCHASTIC, seed), y_min, y_max)
    if activation == "relu":
        y = np.maximum(y, 0)
    return y.astype(np.int64)
