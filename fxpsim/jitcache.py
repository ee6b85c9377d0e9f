"""Numba's on-disk cache of compiled kernels: a writable location, or none, never a failed import.

Every kernel is ``@njit(cache=True)``; Numba picks its cache folder when a
kernel is *decorated* (at import), trying ``$NUMBA_CACHE_DIR``, then the
``__pycache__`` beside the source file, then its user-wide folder
(``~/.cache/numba``), and raises ``RuntimeError: cannot cache function ...:
no locator available`` when none is writable (a read-only install run by a
user whose ``$HOME`` is read-only too, as in a container). :func:`ensure_cache`
runs before any kernel module is imported (the first thing ``import fxpsim`` does,
from :mod:`fxpsim.cli.startup`): if none of Numba's own places is writable it points Numba at a
private folder in the temp directory, or, failing that, runs fxpsim's kernels
uncached (compiled on every run), and says so in one line on stderr.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

__all__ = ["ensure_cache", "ensure_cache_quietly", "writable_dir"]

_PACKAGE = Path(__file__).resolve().parent
_HINT = "set NUMBA_CACHE_DIR to a writable folder to choose"


def writable_dir(path: str | os.PathLike) -> bool:
    """Whether a file can be created in ``path`` (created if missing), as Numba's locators test it."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _kernel_dirs() -> list[Path]:
    """The package folders whose ``__pycache__`` Numba's in-tree locator would use."""
    return sorted({p.parent for p in _PACKAGE.rglob("*.py") if "__pycache__" not in p.parts})


def _user_wide_dir() -> str:
    from numba.misc.appdirs import AppDirs

    return AppDirs(appname="numba", appauthor=False).user_cache_dir


def _private_temp_dir() -> Path | None:
    """``<tmp>/fxpsim-numba-<uid>``, only if this user owns it and nobody else can write it (a cache
    holds pickles that Numba loads: a folder another user controls would run their code); else a
    fresh ``mkdtemp`` folder (cached for this run only); None when the temp directory is read-only."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(tempfile.gettempdir()) / f"fxpsim-numba-{uid}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022 and writable_dir(path):
            return path
        return Path(tempfile.mkdtemp(prefix="fxpsim-numba-"))
    except OSError:
        return None


def _run_uncached() -> None:
    """Make ``cache=True`` a no-op for fxpsim's kernels (other code keeps Numba's behaviour)."""
    from numba.core.dispatcher import Dispatcher

    enable = Dispatcher.enable_caching
    if getattr(enable, "_fxpsim_uncached", False):
        return

    def enable_caching(self):
        if not str(getattr(self.py_func, "__module__", "")).startswith("fxpsim."):
            enable(self)

    enable_caching._fxpsim_uncached = True
    Dispatcher.enable_caching = enable_caching


def ensure_cache(stderr=None) -> str:
    """Make sure decorating fxpsim's kernels cannot fail; returns where they are cached.

    ``"numba"``: one of Numba's own places is writable (nothing changed);
    otherwise the fallback folder's path, or ``"uncached"``, after one line
    on ``stderr`` (default ``sys.stderr``) naming what was tried.
    """
    import numba.core.config as numba_config

    given = numba_config.CACHE_DIR or os.environ.get("NUMBA_CACHE_DIR", "")
    if given and writable_dir(given):
        return "numba"
    user = _user_wide_dir()
    if all(writable_dir(d / "__pycache__") for d in _kernel_dirs()) or writable_dir(user):
        return "numba"
    tried = (f"NUMBA_CACHE_DIR={given}, " if given else "") + f"{_PACKAGE}/**/__pycache__, {user}"
    out = stderr if stderr is not None else sys.stderr
    fallback = _private_temp_dir()
    if fallback is not None:
        os.environ["NUMBA_CACHE_DIR"] = str(fallback)  # Numba re-reads its environment before compiling
        numba_config.CACHE_DIR = str(fallback)
        print(f"fxpsim: no writable Numba cache folder ({tried}): caching compiled kernels in {fallback}; "
              f"{_HINT}", file=out)
        return str(fallback)
    _run_uncached()
    print(f"fxpsim: no writable Numba cache folder ({tried}, {tempfile.gettempdir()}): kernels compile "
          f"on every run (a slower start); {_HINT}", file=out)
    return "uncached"


def ensure_cache_quietly() -> str:
    """:func:`ensure_cache`, whose own failure is one line on stderr, never a failed ``import fxpsim``."""
    try:
        return ensure_cache()
    except Exception as exc:  # noqa: BLE001 - a probe that fails must not make `import fxpsim` fail
        print(f"fxpsim: could not check Numba's cache folders ({type(exc).__name__}: {exc}); if kernels "
              "fail to load, set NUMBA_CACHE_DIR to a writable folder", file=sys.stderr)
        return "numba"
