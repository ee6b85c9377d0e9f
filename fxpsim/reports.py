"""Reports: pandas tables printed, and written whole (or not at all) under reports/.

Building a table (a DataFrame from result records) is kept apart from
printing and writing it, as hls4ml separates ``parse_*`` from ``print_*``.
Every file is written to a temporary name beside its target, fsynced and
renamed into place (the directory fsynced after), so a crash or a power loss
leaves the old file or none, never half a file.

A written report is a function of its command and its inputs only, so a
re-run diffs clean (``python -m fxpsim.experiments.reproduce``):

- floats in CSV files at 6 significant digits (``%.6g``; a whole number
  below 2**53 in full, NaN as an empty field), in Markdown tables at 4
  (``.4g``): the last bits of a float sum, which move with summation
  order, do not reach a report (unless a value sits on a rounding edge);
- a model is named by its file name and the first 16 hex digits of its
  sha256 (:func:`model_provenance`), never by its path;
- no wall-clock time: timings belong to ``benchmarks/`` (``bench_*``);
- PNGs carry no software version (``Software`` metadata removed).
"""

from __future__ import annotations

import hashlib
import math
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


def format_table(df: pd.DataFrame, floatfmt: str = MD_FLOAT_FORMAT) -> str:
    """A DataFrame as a plain-text table for the terminal."""
    return df.to_markdown(index=False, tablefmt="simple", floatfmt=floatfmt)


def markdown(df: pd.DataFrame, title: str | None = None, text: str | None = None,
             floatfmt: str = MD_FLOAT_FORMAT) -> str:
    """A Markdown document: optional title and text, then the table."""
    parts = []
    if title:
        parts.append(f"# {title}\n")
    if text:
        parts.append(text.rstrip() + "\n")
    parts.append(df.to_markdown(index=False, floatfmt=floatfmt) + "\n")
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
