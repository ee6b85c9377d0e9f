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
from ..parallel import SERIAL, EvalSetup, Parallel, evaluator_of
from ..qformat import MAX_WIDTH, QFormat, int_bits_for
from ..tables import new_figure
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


def sweep(ev: Evaluator, prof: list[LayerProfile], what, bits=range(0, 17),
          parallel: Parallel = SERIAL) -> pd.DataFrame:
    """Accuracy vs one uniform field (Judd Fig. 2): a row per bit count; ``what`` may be several
    fields (their rows in that order). Each setting is one task of ``parallel`` (its frozen config)."""
    whats = (what,) if isinstance(what, str) else tuple(what)
    for w in whats:
        check(w in WHAT, f"unknown sweep {w!r}: use one of {', '.join(WHAT)}")
    base = wide_config(prof)
    points = []
    for w in whats:
        for b in bits:
            try:
                points.append((w, int(b), uniform_setting(base, w, int(b))))
            except ValueError:
                continue  # a width < 1 at this setting: no such format, no point on the curve
    configs = [c for _, _, c in points]
    if parallel.serial:
        accs = [ev.accuracy(c) for c in configs]
    else:
        accs = parallel.map(_accuracy_task, configs, EvalSetup.of(ev, prof))
        ev.evaluations += len(configs)
    return pd.DataFrame([{"what": w, "bits": b, "accuracy": acc,
                          "relative_accuracy": acc / ev.float_accuracy if ev.float_accuracy else float("nan")}
                         for (w, b, _), acc in zip(points, accs)])


def _accuracy_task(setup: EvalSetup, config: NetworkConfig) -> float:
    """A worker's :meth:`Evaluator.accuracy` of one config."""
    return evaluator_of(setup).accuracy(config)


FIELD_NAMES = {"weight-frac": "weight fraction bits", "data-int": "data integer bits (incl. sign)",
               "data-frac": "data fraction bits"}
"""The swept fields (:data:`WHAT`) in plain words, for axis and legend labels."""


def plot_sweeps(df: pd.DataFrame, title: str):
    """Relative accuracy vs bits, one line per swept field (Judd Fig. 2); the x axis names the field."""
    fig, ax = new_figure(figsize=(6.5, 4))
    fields = list(dict.fromkeys(df["what"]))
    for what, part in df.groupby("what", sort=False):
        ax.plot(part["bits"], part["relative_accuracy"], marker="o", label=FIELD_NAMES.get(what, what))
    ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":", label="99 % of float accuracy")
    ax.set_xlabel(f"{FIELD_NAMES.get(fields[0], fields[0])} (the other fields held wide)" if len(fields) == 1
                  else "bits of the swept field (the other fields held wide)")
    ax.set_ylabel("accuracy relative to float")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(title="swept field", fontsize=8, title_fontsize=8, loc="lower right")
    ax.set_title(title)
    return fig
