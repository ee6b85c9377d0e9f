"""Report tables: pandas tables printed, and written whole (or not at all) under reports/.

(The module is not called ``reports``: a checkout's top-level ``reports/``
folder would shadow it when Python imports the checkout as a namespace
package, e.g. from the folder above one; ``tests/test_tables.py``.)

A table explains itself: a column's unit is in its name (``_lsb``, ``_pct``,
``_kb``, ``bits_per_kept_weight``), a missing value is a blank cell (never
``nan``), and under every printed or Markdown table one legend line
(:func:`legend`) explains the columns a newcomer cannot guess
(:data:`GLOSSARY`: Qi.f formats, IL vs int_bits, widths, LSBs).

Building a table (a DataFrame from result records) is kept apart from
printing and writing it, as hls4ml separates ``parse_*`` from ``print_*``.
Every file is written to a temporary name beside its target, fsynced and
renamed into place (the directory fsynced after), so a crash or a power loss
leaves the old file or none, never half a file.

A written report is a function of its command and its inputs only, so a
re-run diffs clean (``python -m fxpsim.experiments.reproduce``):

- floats in CSV files at 6 significant digits (``%.6g``; a whole number
  below 2**53 in full, NaN as an empty field), in Markdown tables at 4
  (``.4g``, NaN as a blank cell): the last bits of a float sum, which move with summation
  order, do not reach a report (unless a value sits on a rounding edge);
- a model is named by its file name and the first 16 hex digits of its
  sha256 (:func:`model_provenance`), never by its path;
- no wall-clock time: timings belong to ``benchmarks/`` (``bench_*``);
- PNGs carry no software version (``Software`` metadata removed).
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .durable import atomic_open

REPORTS_DIR = Path("reports")
CSV_FLOAT_FORMAT = ".6g"
"""Significant digits of a float in a CSV report (a whole number below 2**53 is written in full)."""
MD_FLOAT_FORMAT = ".4g"
"""Significant digits of a float in a Markdown or terminal table."""
SHA256_DIGITS = 16
"""Hex digits of a model file's sha256 quoted in report text."""


def model_provenance(path: Path | str) -> str:
    """``"digits-cnn.npz (sha256 1a2b3c4d5e6f7a8b)"``: a model file named without its folder.

    A report names the model this way so its text is the same wherever the
    checkout lives; the digest says which version of the file it came from.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{path.name} (sha256 {digest.hexdigest()[:SHA256_DIGITS]})"


def format_csv_float(value) -> str:
    """One float as a CSV field at :data:`CSV_FLOAT_FORMAT`; NaN -> empty, -0 -> 0."""
    v = float(value)
    if math.isnan(v):
        return ""
    if v.is_integer() and abs(v) < 2.0 ** 53:
        return str(int(v))
    return format(v, CSV_FLOAT_FORMAT)


def to_csv(df: pd.DataFrame) -> str:
    """``df`` as CSV text with every float (also in mixed columns) at :data:`CSV_FLOAT_FORMAT`."""
    out = df.copy()
    for col in out.columns:
        values = out[col]
        if pd.api.types.is_float_dtype(values):
            out[col] = values.map(format_csv_float).astype(object)
        elif values.dtype == object:
            out[col] = values.map(lambda v: format_csv_float(v) if isinstance(v, (float, np.floating)) else v)
    return out.to_csv(index=False)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` durably: a temporary file, fsync, rename, fsync of the directory
    (:func:`fxpsim.durable.atomic_open`); creates missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        fh.write(data)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Text version of :func:`write_bytes_atomic` (UTF-8)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


FORMAT_COLUMNS = ("weights", "data", "data_in", "data_out", "input_format")
"""Columns holding a :class:`~fxpsim.qformat.QFormat` name (when their values are such names)."""
_FORMAT = re.compile(r"^U?Q-?\d+\.-?\d+$")

GLOSSARY: tuple[tuple[tuple[str, ...], str], ...] = (
    (FORMAT_COLUMNS,
     "Qi.f = i integer bits incl. the sign (int_bits) + f fraction bits, LSB 2^-f "
     "(f < 0 allowed: Q5.-1 is 4 bits with LSB 2; UQ = unsigned)"),
    (("K", "fan_in"), "products summed per output"),
    (("bw_w", "bw_d", "bw_x"), "widths in bits of weights, data, layer input"),
    (("acc_bits",), "BW_acc, the accumulator width in bits incl. the sign"),
    (("fl_acc",), "accumulator fraction bits"),
    (("il_wc", "il_act_w", "il_act_y", "lb_wrap", "lb_clip"),
     "IL_acc, integer bits excl. the sign (de Bruin: BW_acc = IL_acc + fl_acc + 1; int_bits = IL + 1)"),
    (("worst_case_acc",), "largest |acc| any input can give, raw accumulator LSBs"),
    (("max_abs_acc_lsb", "max_abs_prefix_lsb"), "largest |sum| (final / any prefix), raw accumulator LSBs"),
    (("abs_error_sum",), "sum of |y - y_float| at the layer output, in real units"),
    (("wc_safe", "act_w_safe", "act_w_optimum", "act_y", "constraint"),
     "wc = worst case weights and data, act-w = actual weights, act-y = profiled outputs, "
     "a2q = L1-bounded channels"),
    (("paper_wc_sum",), "BW_w + BW_d on de Bruin's eq. 3 line"),
    (("normalized_accuracy", "relative_accuracy", "relative_test_accuracy"), "accuracy / float accuracy"),
    (("bits_per_kept_weight",), "stored bits / kept (nonzero) weights, index and pointer bits included"),
    (("data_formats",), "per layer its input format i.f (Qi.f without the Q), layers joined by '-'"),
    (("weight_bits",), "per layer its weight width in bits, layers joined by '-'"),
    (("precision",), "Stripes p: a conv layer's input data width in bits"),
    (("precisions",), "Stripes p per conv layer (input data bits), layers joined by '-'"),
    (("what", "bits"), "the swept field and its bits (the other fields held wide)"),
    (("traffic_ratio",), "bits of weights, inputs and outputs moved / the same at 32 bits"),
    (("range_used",), "max |acc| / 2^(BW_acc-1)"),
    (("acc_bits_needed",), "the BW_acc (incl. the sign) that holds max_abs_acc_lsb"),
    (("out_min", "out_max"), "smallest / largest layer output, in real units"),
    (("mean_abs_error",), "mean of |y - y_float| at the layer output, in real units"),
    (("outputs_out_of_format",), "float-model outputs beyond fmt_y's range (saturated there)"),
    (("n_train",), "training images"),
    (("trained_params",), "parameters the optimizer updates"),
    (("frozen",), "layers left out of the optimizer (the gradient still flows through them)"),
    (("rounds",), "fine-tunings the alternation ran (search, fine-tune, search again, ...)"),
    (("converged",), "the last search returned the config the model was fine-tuned to"),
    (("formats",), "per layer its name, weight and input format fmt_w*fmt_x (Qi.f), then out and the last "
                   "layer's output format"),
    (("vs_alone_pts",), "integer accuracy minus the network fine-tuned at that width alone, percentage points"),
    (("within_1pt",), "FlexNet at most 1 point below the alone-trained network (issue 19's target)"),
)
"""Legend entries: the columns a newcomer cannot guess, and one short explanation each."""

BLANK_MEANS: dict[str, str] = {
    "val_accuracy": "not fine-tuned (a post-training row)",
    "kept_epoch": "not fine-tuned (a post-training row)",
    "rescaled_channels": "not fine-tuned (a post-training row)",
    "rounds": "not an alternating row",
    "converged": "not an alternating row",
    "worst_case_acc": "not bounded (act-y bounds the profiled outputs only)",
    "accuracy": "no formats meet the constraint at that BW_acc",
    "conv_speedup": "no conv layer",
    "conv_ideal_speedup": "no conv layer",
    "kmeans_error_pct": "no weight sharing at that stage",
    "shared_kb": "no weight sharing (--clusters)",
    "huffman_kb": "no Huffman coding (--huffman)",
    "input_format": "not a conv layer (bit-parallel in both)",
    "precision": "not a conv layer (bit-parallel in both)",
    "paper_": "no value in the paper",
}
"""What a blank cell means, per column (``paper_``: every column of that prefix; ``accuracy``: every
``*_accuracy``); a blank in a column not named here needs its report's text."""


def _holds_formats(values: pd.Series) -> bool:
    """Whether a column holds Qi.f format names (``weights`` elsewhere is a count)."""
    return any(isinstance(v, str) and _FORMAT.match(v) for v in values)


def _has_blank(values: pd.Series) -> bool:
    """Whether a column has a blank cell: missing (NaN/None) or an empty string, as a CSV reads back."""
    return bool(values.isna().any() or (not pd.api.types.is_numeric_dtype(values) and (values == "").any()))


def _blank_reason(col: str) -> str | None:
    for key, why in BLANK_MEANS.items():
        if col == key or (key.endswith("_") and col.startswith(key)) or col.endswith("_" + key):
            return why
    return None


def legend(df: pd.DataFrame) -> str | None:
    """One line explaining ``df``'s columns that :data:`GLOSSARY` names, and its blank cells;
    None when there is nothing to explain."""
    cols = [str(c) for c in df.columns]
    parts = []
    for names, text in GLOSSARY:
        present = [c for c in cols if c in names
                   and (names is not FORMAT_COLUMNS or _holds_formats(df[c]))]
        if present:
            parts.append(f"{', '.join(present)}: {text}")
    blanks: dict[str, list[str]] = {}
    for c in df.columns:
        why = _blank_reason(str(c))
        if why is not None and _has_blank(df[c]):
            blanks.setdefault(why, []).append(str(c))
    for why, names in blanks.items():
        parts.append(f"blank {', '.join(names)}: {why}")
    return "Legend: " + "; ".join(parts) + "." if parts else None


def _blank_missing(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with NaN/None as None in object columns, which tabulate prints as a blank cell."""
    if not df.isna().to_numpy().any():
        return df
    out = df.copy()
    for col in out.columns:
        if out[col].isna().any():
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _tabulate(df: pd.DataFrame, floatfmt: str, **kwargs) -> str:
    return _blank_missing(df).to_markdown(index=False, floatfmt=floatfmt, missingval="", **kwargs)


def format_table(df: pd.DataFrame, floatfmt: str = MD_FLOAT_FORMAT, with_legend: bool = True) -> str:
    """A DataFrame as a plain-text table for the terminal: blank cells for NaN, its legend
    line (:func:`legend`) under it."""
    text = _tabulate(df, floatfmt, tablefmt="simple")
    note = legend(df) if with_legend else None
    return f"{text}\n{note}" if note else text


def markdown_table(df: pd.DataFrame, floatfmt: str = MD_FLOAT_FORMAT) -> str:
    """``df`` as a Markdown table (blank cells for NaN), its legend line after a blank line."""
    note = legend(df)
    return _tabulate(df, floatfmt) + (f"\n\n{note}" if note else "")


def markdown(df: pd.DataFrame, title: str | None = None, text: str | None = None,
             floatfmt: str = MD_FLOAT_FORMAT) -> str:
    """A Markdown document: optional title and text, then the table and its legend."""
    parts = []
    if title:
        parts.append(f"# {title}\n")
    if text:
        parts.append(text.rstrip() + "\n")
    parts.append(markdown_table(df, floatfmt) + "\n")
    return "\n".join(parts)


def write_table(df: pd.DataFrame, stem: str, outdir: Path | str = REPORTS_DIR,
                title: str | None = None, text: str | None = None) -> list[Path]:
    """Write ``df`` as ``<outdir>/<stem>.csv`` and ``<stem>.md``; returns the paths."""
    outdir = Path(outdir)
    csv = write_text_atomic(outdir / f"{stem}.csv", to_csv(df))
    md = write_text_atomic(outdir / f"{stem}.md", markdown(df, title, text))
    return [csv, md]


def save_figure(fig, path: Path | str) -> Path:
    """Save a matplotlib figure as PNG atomically and close it (no version stamp: same bytes each run)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return write_bytes_atomic(Path(path), buf.getvalue())


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the non-interactive Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)
