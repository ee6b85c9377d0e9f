"""Reports: pandas tables printed, and written whole (or not at all) under reports/.

Building a table (a DataFrame from result records) is kept apart from
printing and writing it, as hls4ml separates ``parse_*`` from ``print_*``.
Every file is written to a temporary name beside its target and renamed
into place, so a crash leaves the old file or none, never half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

REPORTS_DIR = Path("reports")


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> Path:
    """Text version of :func:`write_bytes_atomic` (UTF-8)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def format_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A DataFrame as a plain-text table for the terminal."""
    return df.to_markdown(index=False, tablefmt="simple", floatfmt=floatfmt)


def markdown(df: pd.DataFrame, title: str | None = None, text: str | None = None,
             floatfmt: str = ".4g") -> str:
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
    csv = write_text_atomic(outdir / f"{stem}.csv", df.to_csv(index=False))
    md = write_text_atomic(outdir / f"{stem}.md", markdown(df, title, text))
    return [csv, md]


def save_figure(fig, path: Path | str) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(Path(path), buf.getvalue())


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the non-interactive Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)
