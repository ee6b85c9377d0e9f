"""Progress bars drawn only on a terminal: a captured log holds lines, never ``\\r`` redraws.

Every bar of fxpsim (training epochs, search candidates) comes from :func:`progress_bar`; the CLI's
``--quiet`` turns them off, and so does a standard error that is not a terminal (a pipe, a file).
"""

from __future__ import annotations

import sys


def on_terminal(stream=None) -> bool:
    """True if ``stream`` (default: standard error, where bars are drawn) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def bars_on(quiet: bool = False) -> bool:
    """Whether a command draws progress bars: not ``--quiet``, and standard error is a terminal."""
    return not quiet and on_terminal()


def progress_bar(total: int, desc: str, enabled: bool = True, **kwargs):
    """A tqdm bar on standard error, disabled (drawing nothing) unless ``enabled`` and on a terminal."""
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    return tqdm(total=total, desc=desc, disable=not (enabled and on_terminal(kwargs["file"])), **kwargs)
