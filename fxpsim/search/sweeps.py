"""Uniform bit-width sweeps (Judd et al., ICLR 2016, Figure 2).

One setting for all layers at a time, varying one field while the others
are held wide: (a) the weights' fraction bits, (b) the data's integer
bits, (c) the data's fraction bits. Integer bits that are held come from
the profiled ranges (:func:`fxpsim.simulate.profile`); the accumulator is
ideal so that only the swept field matters. Accuracy is reported relative
to the float model on the same samples.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from ..config import LayerConfig, NetworkConfig
from ..errors import check
from ..qformat import MAX_WIDTH, QFormat, int_bits_for
from ..reports import new_figure
from ..simulate import Evaluator, LayerProfile, data_ranges

WHAT = ("weight-frac", "data-int", "data-frac")
WIDE_FRAC = 14
"""Fraction bits of a field held wide: below 2**-14 the float models do not change."""


def wide_config(prof: list[LayerProfile], acc_bits: int = MAX_WIDTH, overflow="ideal",
                rounding="nearest-even", frac_bits: int = WIDE_FRAC) -> NetworkConfig:
    """Every field wide: profiled integer bits and ``frac_bits`` fraction bits.

    The output format of a layer is the input format of the next layer.
    """
    data = [QFormat(int_bits_for(m), frac_bits) for m in data_ranges(prof)]
    return NetworkConfig(tuple(
        LayerConfig(p.name, QFormat(int_bits_for(p.max_abs_w), frac_bits), data[i], data[i + 1],
                    acc_bits, overflow, rounding)
        for i, p in enumerate(prof)))


def set_data_format(config: NetworkConfig, i: int, fmt: QFormat) -> NetworkConfig:
    """Layer ``i``'s input data format, which is also layer ``i-1``'s output format."""
    config = config.with_layer(i, fmt_x=fmt)
    if i > 0:
        config = config.with_layer(i - 1, fmt_y=fmt)
    return config


def uniform_setting(base: NetworkConfig, what: str, bits: int) -> NetworkConfig:
    """``base`` with field ``what`` set to ``bits`` in every layer (logits kept wide)."""
    layers = []
    for cfg in base:
        if what == "weight-frac":
            cfg = replace(cfg, fmt_w=QFormat(cfg.fmt_w.int_bits, bits))
        elif what == "data-int":
            cfg = replace(cfg, fmt_x=QFormat(bits, cfg.fmt_x.frac_bits))
        else:
            cfg = replace(cfg, fmt_x=QFormat(cfg.fmt_x.int_bits, bits))
        layers.append(cfg)
    for i in range(len(layers) - 1):  # the next layer's input format is this layer's output format
        layers[i] = replace(layers[i], fmt_y=layers[i + 1].fmt_x)
    return NetworkConfig(tuple(layers))


def sweep(ev: Evaluator, prof: list[LayerProfile], what: str, bits=range(0, 17)) -> pd.DataFrame:
    """Accuracy vs one uniform field (Judd Fig. 2): a row per bit count."""
    check(what in WHAT, f"unknown sweep {what!r}: use one of {', '.join(WHAT)}")
    base = wide_config(prof)
    rows = []
    for b in bits:
        try:
            config = uniform_setting(base, what, int(b))
        except ValueError:
            continue  # a width < 1 at this setting: no such format, no point on the curve
        acc = ev.accuracy(config)
        rows.append({"what": what, "bits": int(b), "accuracy": acc,
                     "relative_accuracy": acc / ev.float_accuracy if ev.float_accuracy else float("nan")})
    return pd.DataFrame(rows)


def plot_sweeps(df: pd.DataFrame, title: str):
    """Relative accuracy vs bits, one line per swept field (Judd Fig. 2)."""
    fig, ax = new_figure(figsize=(6, 4))
    for what, part in df.groupby("what", sort=False):
        ax.plot(part["bits"], part["relative_accuracy"], marker="o", label=what)
    ax.set_xlabel("bits")
    ax.set_ylabel("accuracy relative to float")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return fig
