"""The first thing ``import fxpsim`` runs: Ctrl-C and crashes during the CLI's start-up are one line.

The ``fxpsim`` script and ``python -m fxpsim`` import the whole package
(NumPy, Numba, every kernel: 1-3 s) before :func:`fxpsim.cli.main` can catch
anything, so a Ctrl-C there used to print a 30-50-line traceback. When the
process is the CLI (never when fxpsim is imported as a library), :func:`guard`
makes SIGINT print ``fxpsim: interrupted`` and exit 130, and an exception
that escapes an import print one line asking for a bug report and exit 70;
:func:`release` (the first thing ``main`` does) hands both back to Python,
from where ``main`` reports them itself. Then the Numba cache fallback
(:mod:`fxpsim.jitcache`) runs, before any kernel is decorated.
"""

from __future__ import annotations

import os
import signal
import sys

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, as a shell reports a process killed by it)."""
EXIT_INTERNAL = 70
"""Exit status of an internal error (EX_SOFTWARE of sysexits.h): a bug, never bad input."""
BUG_REPORT = "this is a bug in fxpsim: please report it with the command line that caused it"

_previous_hook = sys.excepthook


def is_cli() -> bool:
    """Whether this process is the ``fxpsim`` script or ``python -m fxpsim`` (not a library user)."""
    name = os.path.basename(sys.argv[0] if sys.argv else "")
    if os.path.splitext(name)[0] in ("fxpsim", "fxpsim-script"):
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    return any(a == "-m" and b == "fxpsim" for a, b in zip(argv, argv[1:]))


def internal_error_line(exc: BaseException, prog: str = "fxpsim") -> str:
    """The one line of an exception that escaped: its type, its message (on one line), a bug report."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{prog}: internal error: {type(exc).__name__}{': ' + text if text else ''} ({BUG_REPORT})"


def _interrupted(signum, frame):  # noqa: ARG001 - signal handler API
    print("fxpsim: interrupted", file=sys.stderr, flush=True)
    os._exit(EXIT_INTERRUPTED)  # not SystemExit: a bare `except:` in an imported library would swallow it


def _excepthook(kind, exc, tb):  # noqa: ARG001 - sys.excepthook API
    if isinstance(exc, KeyboardInterrupt):
        print("fxpsim: interrupted", file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)
    print(internal_error_line(exc), file=sys.stderr, flush=True)
    os._exit(EXIT_INTERNAL)  # the status of the catch-all in main; nothing was written yet


def guard() -> bool:
    """Install the start-up handlers if this process is the CLI; returns whether it did."""
    if not is_cli():
        return False
    try:
        signal.signal(signal.SIGINT, _interrupted)
    except ValueError:  # not the main thread: leave Python's handler
        return False
    sys.excepthook = _excepthook
    return True


def release() -> None:
    """Give SIGINT and uncaught exceptions back to Python (only if :func:`guard` took them)."""
    try:
        if signal.getsignal(signal.SIGINT) is _interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        pass
    if sys.excepthook is _excepthook:
        sys.excepthook = _previous_hook


guard()

from .. import jitcache  # noqa: E402 - after the guard: Numba's import (in ensure_cache) is the slow part

jitcache.ensure_cache_quietly()
