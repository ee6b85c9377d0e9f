"""Durable atomic writes: a crash or a power loss leaves the old file or the new one, whole.

The bytes go to a temporary file beside the target (same directory, so the
rename is atomic), which is fsynced before ``os.replace`` renames it over the
target; the directory is fsynced after, so that the rename itself is on disk
(POSIX makes a rename durable only by an fsync of its directory). A
filesystem that refuses to fsync or open a directory (EINVAL, ENOTSUP:
some network, FUSE and overlay filesystems; EACCES: a write-only directory)
is tolerated silently: the file itself was synced. On any error before the
rename the temporary file is removed and an existing target is untouched.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES, errno.EPERM,
                           errno.EISDIR, errno.EBADF})
"""errno values of a directory that cannot be opened or fsynced: the rename stays, unsynced."""


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync ``directory`` (after a rename in it); tolerated silently where the filesystem refuses."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        if exc.errno in _NO_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new contents to; on a clean exit it replaces ``path`` durably.

    The temporary file (``.<name>.<random>.tmp`` beside ``path``) gets the
    usual permissions (``0666 & ~umask``; ``mkstemp`` makes 0600), is flushed
    and fsynced, renamed over ``path`` and the directory fsynced.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
