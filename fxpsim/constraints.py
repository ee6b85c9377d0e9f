"""Accumulator-width constraints: which weight/data formats fit BW_acc (de Bruin et al., DSD 2018).

de Bruin, Zivkovic and Corporaal count the integer length IL without the
sign bit (``BW = IL + FL + 1``); fxpsim's ``QFormat.int_bits`` includes it
(``I = IL + 1``, :func:`fxpsim.qformat.de_bruin_il`). Their equations, in
their symbols, for a layer with K products per output:

- WC_w/WC_d:  ``BW_w + BW_d = BW_acc + 1 - ceil(log2 K)``            (eq. 3)
- ACT_w/WC_d: ``BW_w + BW_d = BW_acc - floor(log2 R_kernel) + IL_w``  (eq. 5)
  with ``R_kernel = max_kernels sum_i |w_i|`` of the quantized weights
- ACT_y:      ``BW_acc = FL_w + FL_d + IL_y + 1``                      (eq. 6)

fxpsim checks WC and ACT_w exactly on raw integers instead of with the
logarithms: a pair (BW_w, BW_d) is eligible when the largest accumulator
value any input in the data format can produce, bias included (the bias
is the accumulator's initial value), fits BW_acc. The equations drop the
bias and treat |x| < 2**(BW-1) although the most negative value reaches
it, so for a power-of-two K (or ``R_kernel``) and a zero bias they allow
one bit more than is safe; :func:`paper_sum` gives their value for
comparison. Int bits come from the profiled ranges (weights, data, and for
ACT_y the pre-activation sums), the rest of each width is fraction bits.

A2Q (Colbert et al., ICCV 2023; beyond the paper): each output channel's
integer weights keep an L1 norm below ``(2**(BW_acc-1) - 1 - |b_c|) /
2**(BW_d-1)``, so no input in the data format can overflow; channels over
the bound are shrunk toward zero (``LayerConfig.a2q``). Its candidates are
the pairs ACT_w rejects only for some channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .datapath.core import max_abs_term
from .errors import FxpsimError, check
from .qformat import MAX_WIDTH, QFormat, int_bits_for, quantize

CONSTRAINTS = ("wc", "act-w", "act-y", "a2q")
A2Q_MAX_SHRUNK = 0.5
"""A2Q candidates shrink at most this share of a layer's channels (more is no solution)."""
MAX_OPERAND_BITS = 16
"""Widest weight or data format a candidate may use (a DSP's multiplier inputs)."""


@dataclass(frozen=True, slots=True)
class LayerRanges:
    """What the constraints need to know of one layer: its stage and two profiled ranges.

    ``stage``: a :class:`fxpsim.simulate.Stage` (folded float weights ``W``,
    dense (K, N) or conv (F, C, kh, kw), bias ``b``, ``kind``, ``name``,
    ``fan_in``); :func:`fxpsim.search.layer_ranges` pairs each stage with its
    :class:`~fxpsim.simulate.LayerProfile`. ``max_abs_x``: the profiled max
    |input|; ``max_abs_acc``: the profiled max |W x + b| before the activation.
    """

    stage: object  # a fxpsim.simulate.Stage (fxpsim.simulate imports this module: no import back)
    max_abs_x: float
    max_abs_acc: float

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def kind(self) -> str:
        return self.stage.kind

    @property
    def W(self) -> np.ndarray:
        return self.stage.W

    @property
    def b(self) -> np.ndarray:
        return self.stage.b

    @property
    def fan_in(self) -> int:
        return self.stage.fan_in

    @property
    def int_bits_w(self) -> int:
        return int_bits_for(float(np.abs(self.W).max()))

    @property
    def int_bits_x(self) -> int:
        return int_bits_for(self.max_abs_x)

    @property
    def int_bits_acc(self) -> int:
        return int_bits_for(self.max_abs_acc)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One eligible (BW_w, BW_d) with its formats."""

    constraint: str
    fmt_w: QFormat
    fmt_x: QFormat
    worst_case_acc: int | None  # largest |acc| raw any input can give (None: not bounded, ACT_y)
    violating_channels: int = 0  # A2Q: channels shrunk to meet the bound

    @property
    def bw_w(self) -> int:
        return self.fmt_w.width

    @property
    def bw_d(self) -> int:
        return self.fmt_x.width


def _channel_l1(w_raw: np.ndarray, kind: str) -> np.ndarray:
    """Sum |w| of each output channel's (kernel's) weights; exact int64 for raw weights."""
    a = np.abs(w_raw.astype(np.int64) if w_raw.dtype.kind in "iu" else w_raw)
    return a.sum(axis=0) if kind == "dense" else a.reshape(a.shape[0], -1).sum(axis=1)


def quantized_weights(layer, fmt_w: QFormat, rounding="nearest-even") -> np.ndarray:
    """Raw weights of ``layer`` (a Stage or LayerRanges) in ``fmt_w``, saturated."""
    return quantize(layer.W, fmt_w, rounding, "clip")


def quantized_bias(layer, fmt_w: QFormat, fmt_x: QFormat, acc_bits: int,
                   rounding="nearest-even", product_shift: int = 0) -> np.ndarray:
    """Raw bias of ``layer`` (a Stage or LayerRanges) in the accumulator format (FL_acc = FL_w + FL_d
    + ``product_shift``, :attr:`~fxpsim.config.LayerConfig.product_shift`), saturated."""
    fl = fmt_w.frac_bits + fmt_x.frac_bits + product_shift
    return quantize(layer.b, QFormat(acc_bits - fl, fl), rounding, "clip")


def max_abs_raw(fmt: QFormat) -> int:
    """Largest |raw| of ``fmt``: the most negative code when signed, the largest when unsigned (0 for
    neither: an unsigned format's raw_min is 0, which made every bound divide by zero or read 0)."""
    return max(-fmt.raw_min, fmt.raw_max)


def worst_case_acc(layer: LayerRanges, fmt_w: QFormat, fmt_x: QFormat, acc_bits: int,
                   actual_weights: bool, l1: np.ndarray | None = None, product_shift: int = 0) -> int:
    """Largest |acc| raw (at FL_acc) over all inputs in ``fmt_x``: worst-case or actual weights.

    ``l1``: the channels' raw-weight L1 norms if already known for ``fmt_w``. ``product_shift``
    d = FL_acc - (FL_w + FL_d) (DESIGN.md): each product ``x w`` enters the accumulator as
    ``(x w) << d``, or rounded right by -d bits, at most ``ceil(|x w| / 2**-d)``
    (:func:`fxpsim.datapath.core.max_abs_term`), so with d < 0 each weight's term is bounded on
    its own (not the L1 norm times x_max, which a rounding per product can exceed).
    """
    x_max = max_abs_raw(fmt_x)  # signed: the most negative input has the largest magnitude
    d = product_shift
    b = np.abs(quantized_bias(layer, fmt_w, fmt_x, acc_bits, product_shift=d)).tolist()
    if actual_weights:
        if d < 0:
            terms = channel_terms(quantized_weights(layer, fmt_w), layer.kind, x_max, d)
            return max(t + bc for t, bc in zip(terms, b))
        if l1 is None:
            l1 = _channel_l1(quantized_weights(layer, fmt_w), layer.kind)
        return max(((n * x_max) << d) + bc for n, bc in zip(l1.tolist(), b))
    return layer.fan_in * max_abs_term(max_abs_raw(fmt_w) * x_max, d) + max(b)


def channel_terms(w_raw: np.ndarray, kind: str, x_max: int, d: int) -> list[int]:
    """Per output channel, sum over its weights of the largest |product at FL_acc| an input of
    magnitude <= ``x_max`` gives (:func:`~fxpsim.datapath.core.max_abs_term`; Python ints)."""
    if d >= 0:
        return [(n * x_max) << d for n in _channel_l1(w_raw, kind).tolist()]
    w = np.abs(np.asarray(w_raw, dtype=np.int64))
    w = w.T if kind == "dense" else w.reshape(w.shape[0], -1)
    return [sum(max_abs_term(int(v) * x_max, d) for v in row) for row in w.tolist()]


def paper_sum(constraint: str, layer: LayerRanges, acc_bits: int, fmt_w: QFormat | None = None) -> int:
    """BW_w + BW_d by de Bruin's equation 3 or 5 (for comparison with the exact check)."""
    if constraint == "wc":
        return acc_bits + 1 - math.ceil(math.log2(layer.fan_in))
    check(fmt_w is not None, "ACT_w/WC_d's equation needs the weight format")
    r = float(_channel_l1(quantized_weights(layer, fmt_w), layer.kind).max()) * fmt_w.lsb
    il_w = fmt_w.int_bits - 1
    return acc_bits - math.floor(math.log2(r)) + il_w if r > 0 else acc_bits + il_w


def a2q_l1_bound(b_abs: np.ndarray, fmt_x: QFormat, acc_bits: int, product_shift: int = 0,
                 fan_in: int = 0) -> np.ndarray:
    """Per output channel, the largest raw-weight L1 norm that cannot overflow BW_acc (Colbert et al.
    2023): ``floor((2**(BW_acc-1) - 1 - |b_c|) / x_max)``, at least 0; ``x_max`` = :func:`max_abs_raw`.

    ``product_shift`` d = FL_acc - (FL_w + FL_d): d > 0 multiplies x_max by 2**d; d < 0 rounds each
    of the ``fan_in`` products right by s = -d bits, each at most ``(|x w| + 2**s - 1) / 2**s``, so
    ``L1 x_max + K (2**s - 1) <= (room) 2**s`` bounds them all."""
    room = (1 << (acc_bits - 1)) - 1 - np.asarray(b_abs).astype(object)  # Python ints: no int64 overflow
    x_max = max_abs_raw(fmt_x)
    if product_shift >= 0:
        bound = room // (x_max << product_shift)
    else:
        s = -product_shift
        bound = (room * (1 << s) - fan_in * ((1 << s) - 1)) // x_max
    return np.clip(bound, 0, (1 << 62)).astype(np.int64)


def a2q_weights(layer, fmt_w: QFormat, fmt_x: QFormat, acc_bits: int,
                rounding="nearest-even", product_shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw weights of ``layer`` (a Stage or LayerRanges) with every channel's L1 norm within the A2Q
    bound (:func:`a2q_l1_bound` at ``product_shift`` = FL_acc - FL_w - FL_d); and the violators' mask.

    A violating channel's raw weights are scaled by bound / L1 and rounded
    toward zero, which keeps its L1 norm at most the bound.
    """
    w = quantized_weights(layer, fmt_w, rounding)
    b = np.abs(quantized_bias(layer, fmt_w, fmt_x, acc_bits, rounding, product_shift))
    bound = a2q_l1_bound(b, fmt_x, acc_bits, product_shift, layer.fan_in)
    l1 = _channel_l1(w, layer.kind)
    bad = l1 > bound
    if np.any(bad):
        w_float = layer.W * 2.0 ** fmt_w.frac_bits  # the unrounded raw weights
        l1_float = _channel_l1(w_float, layer.kind)
        # sum |trunc(s w)| <= s sum |w| = bound when s = bound / sum |w| (floats, then trunc)
        scale = np.where(bad, bound / np.maximum(l1_float, 1e-300), 1.0)
        shape = (1, -1) if layer.kind == "dense" else (-1, 1, 1, 1)
        shrunk = np.clip(np.trunc(w_float * scale.reshape(shape)), fmt_w.raw_min, fmt_w.raw_max)
        w = np.where(bad.reshape(shape), shrunk.astype(np.int64), w)
    return w, bad


def candidates(constraint: str, layer: LayerRanges, acc_bits: int,
               max_bits: int = MAX_OPERAND_BITS, product_shift: int = 0) -> list[Candidate]:
    """The eligible (BW_w, BW_d) of one layer for ``acc_bits`` under ``constraint``, with FL_acc =
    FL_w + FL_d + ``product_shift`` (WC, ACT_w, A2Q bound the terms at FL_acc: :func:`worst_case_acc`).

    WC, ACT_w and A2Q: the Pareto-maximal pairs (no operand can gain a bit
    and stay safe); weight formats in which every weight rounds to zero are
    no solution. ACT_y: every split of FL_w + FL_d = BW_acc - I_y (capped at
    what ``max_bits``-bit operands can hold).
    """
    check(constraint in CONSTRAINTS,
          f"unknown constraint {constraint!r}: use one of {', '.join(CONSTRAINTS)}")
    check(isinstance(acc_bits, int) and not isinstance(acc_bits, bool) and 1 <= acc_bits <= MAX_WIDTH,
          f"acc_bits={acc_bits!r} must be a whole number of bits in 1..{MAX_WIDTH}: the int64 datapath "
          f"holds at most {MAX_WIDTH} accumulator bits (qformat.MAX_WIDTH); choose BW_acc in that range")
    out: list[Candidate] = []
    if constraint == "act-y":
        # FL_w + FL_d = BW_acc - I_y; an accumulator wider than the widest operands can use
        # keeps the widest operands (headroom instead of fraction bits no multiplier has)
        widest = (max_bits - layer.int_bits_w) + (max_bits - layer.int_bits_x)
        fl_sum = min(acc_bits - layer.int_bits_acc, widest)
        for bw_w in range(1, max_bits + 1):
            fmt_w = QFormat.from_width(bw_w, layer.int_bits_w)
            fl_d = fl_sum - fmt_w.frac_bits
            bw_d = layer.int_bits_x + fl_d
            if 1 <= bw_d <= max_bits:
                out.append(Candidate(constraint, fmt_w, QFormat(layer.int_bits_x, fl_d), None))
        return out
    limit = (1 << (acc_bits - 1)) - 1
    actual = constraint != "wc"
    best_d_prev = None
    for bw_w in range(max_bits, 0, -1):  # fewer weight bits leave room for more data bits
        best = None
        fmt_w = QFormat.from_width(bw_w, layer.int_bits_w)
        l1 = _channel_l1(quantized_weights(layer, fmt_w), layer.kind) if actual else None
        if actual and not l1.any():
            continue  # every weight rounds to zero: the layer would compute nothing but its bias
        for bw_d in range(1, max_bits + 1):
            fmt_x = QFormat.from_width(bw_d, layer.int_bits_x)
            if (fmt_w.frac_bits + fmt_x.frac_bits + product_shift > acc_bits + MAX_WIDTH
                    or bw_w + bw_d + product_shift > MAX_WIDTH):
                break
            worst = worst_case_acc(layer, fmt_w, fmt_x, acc_bits, actual, l1, product_shift)
            if worst <= limit:
                best = Candidate(constraint, fmt_w, fmt_x, worst)
            elif constraint != "a2q":
                break
            else:
                w, bad = a2q_weights(layer, fmt_w, fmt_x, acc_bits, product_shift=product_shift)
                if bad.mean() > A2Q_MAX_SHRUNK:
                    break
                l1 = _channel_l1(w, layer.kind).astype(object)
                b = np.abs(quantized_bias(layer, fmt_w, fmt_x, acc_bits, product_shift=product_shift)).astype(object)
                terms = (l1 * max_abs_raw(fmt_x) if product_shift == 0 else
                         np.array(channel_terms(w, layer.kind, max_abs_raw(fmt_x), product_shift), dtype=object))
                best = Candidate(constraint, fmt_w, fmt_x, int(max(terms + b)), int(bad.sum()))
        if best is not None and (best_d_prev is None or best.bw_d > best_d_prev):
            out.append(best)  # Pareto-maximal: more data bits than any wider-weight pair
            best_d_prev = best.bw_d
    return out


def min_acc_bits(constraint: str, layer: LayerRanges, max_bits: int = MAX_OPERAND_BITS,
                 product_shift: int = 0) -> int:
    """The narrowest BW_acc with at least one eligible solution for ``layer``."""
    check(bool(np.any(layer.stage.W)), f"layer {layer.name}: every weight is 0, so no weight format has a value "
                                       "to hold and no accumulator is needed: give a trained model (this one's "
                                       "weights were zeroed or pruned away)")
    for bits in range(1, MAX_WIDTH + 1):
        if candidates(constraint, layer, bits, max_bits, product_shift):
            return bits
    raise FxpsimError(f"layer {layer.name}: no accumulator up to {MAX_WIDTH} bits admits a solution")


def solution_space(layer: LayerRanges, acc_bits: int, max_bits: int = MAX_OPERAND_BITS):
    """Every (BW_w, BW_d) up to ``max_bits`` classified as in de Bruin's Fig. 4.

    Columns: ``wc_safe`` / ``act_w_safe`` (no input in the data format can
    overflow BW_acc with worst-case / the actual weights), ``act_w_optimum``
    (a Pareto-maximal ACT_w pair), ``act_y`` (on the ACT_y line
    FL_w + FL_d = BW_acc - I_y), and ``paper_wc_sum`` (eq. 3's BW_w + BW_d).
    """
    import pandas as pd

    limit = (1 << (acc_bits - 1)) - 1
    optima = {(c.bw_w, c.bw_d) for c in candidates("act-w", layer, acc_bits, max_bits)}
    act_y = {(c.bw_w, c.bw_d) for c in candidates("act-y", layer, acc_bits, max_bits)}
    rows = []
    for bw_w in range(1, max_bits + 1):
        fmt_w = QFormat.from_width(bw_w, layer.int_bits_w)
        l1 = _channel_l1(quantized_weights(layer, fmt_w), layer.kind)
        for bw_d in range(1, max_bits + 1):
            fmt_x = QFormat.from_width(bw_d, layer.int_bits_x)
            rows.append({"layer": layer.name, "K": layer.fan_in, "acc_bits": acc_bits, "bw_w": bw_w, "bw_d": bw_d,
                         "wc_safe": worst_case_acc(layer, fmt_w, fmt_x, acc_bits, False) <= limit,
                         "act_w_safe": worst_case_acc(layer, fmt_w, fmt_x, acc_bits, True, l1) <= limit,
                         "act_w_optimum": (bw_w, bw_d) in optima, "act_y": (bw_w, bw_d) in act_y,
                         "paper_wc_sum": paper_sum("wc", layer, acc_bits)})
    return pd.DataFrame(rows)


def plot_solution_space(df, title: str):
    """de Bruin Fig. 4: BW_d vs BW_w per layer; WC line, ACT_w region and optima, ACT_y points.

    The legend, in plain words, sits under the panels, off every layer's data."""
    from .tables import new_figure

    layers = list(dict.fromkeys(df["layer"]))
    fig, axes = new_figure(1, len(layers), figsize=(3.2 * len(layers), 3.6), squeeze=False)
    for ax, name in zip(axes[0], layers):
        part = df[df["layer"] == name]
        safe = part[part["act_w_safe"]]
        ax.scatter(safe["bw_w"], safe["bw_d"], s=8, color="#bbbbbb",
                   label="no overflow for these weights, any data (ACT_w)")
        wc = part[part["wc_safe"]]
        ax.scatter(wc["bw_w"], wc["bw_d"], s=8, color="#555555", label="no overflow for any weights and data (WC)")
        total = int(part["paper_wc_sum"].iloc[0])
        xs = range(1, int(part["bw_w"].max()) + 1)
        ax.plot(list(xs), [total - x for x in xs], color="C0", linewidth=1,
                label="the paper's worst-case line BW_w + BW_d = const (eq. 3)")
        opt = part[part["act_w_optimum"]]
        ax.scatter(opt["bw_w"], opt["bw_d"], marker="s", s=22, color="C1",
                   label="widest safe pairs for these weights (ACT_w optima)")
        ay = part[part["act_y"]]
        ax.scatter(ay["bw_w"], ay["bw_d"], marker="x", s=26, color="C3",
                   label="fits the profiled outputs only (ACT_y)")
        top = int(part["bw_d"].max())
        ax.set_xlim(0.5, top + 0.5)
        ax.set_ylim(0.5, top + 0.5)
        ax.set_xlabel("weight width BW_w (bits)")
        ax.set_title(f"{name} (K={int(part['K'].iloc[0])})", fontsize=9)
    axes[0][0].set_ylabel("data width BW_d (bits)")
    shown = {}  # every label once, from whichever panel has it
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            shown.setdefault(lab, h)
    fig.legend(list(shown.values()), list(shown),  fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=3,
               title="(BW_w, BW_d) pairs", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig
