"""Durable atomic writes: fsync of the file before the rename, of its directory after (issue 14, item 6)."""

import errno
import os
import stat

import numpy as np
import pytest

from fxpsim import durable
from fxpsim.modelfile import Model, load_model, save_model
from fxpsim.network import build_network
from fxpsim.tables import write_bytes_atomic, write_text_atomic
from fxpsim.train.data import Preprocess


def tiny_model() -> Model:
    net = build_network("fc3", (1, 2, 2), 3, seed=0)
    return Model(net, Preprocess.fit(np.ones((2, 1, 2, 2)), "none"), {"dataset": "digits"})


@pytest.fixture
def events(monkeypatch):
    """Record fsync (of a file or a directory, by inode) and replace calls, in order."""
    log = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        log.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", st.st_ino))
        real_fsync(fd)

    def replace(src, dst):
        log.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


@pytest.mark.parametrize("writer", ["bytes", "text", "model"])
def test_file_fsynced_before_the_rename_and_directory_after(tmp_path, events, writer):
    target = tmp_path / "out.bin"
    if writer == "bytes":
        write_bytes_atomic(target, b"abc")
    elif writer == "text":
        write_text_atomic(target, "abc")
    else:
        save_model(target, tiny_model())
    kinds = [e[0] for e in events]
    assert kinds == ["fsync-file", "replace", "fsync-dir"], events
    assert events[0][1] == target.stat().st_ino  # the file synced is the one renamed into place
    assert events[2][1] == tmp_path.stat().st_ino
    assert os.listdir(tmp_path) == ["out.bin"]
    if writer == "model":
        load_model(target)
    else:
        assert target.read_bytes() == b"abc"


def test_permissions_are_the_usual_ones(tmp_path):
    mask = os.umask(0o027)
    try:
        path = write_bytes_atomic(tmp_path / "r.csv", b"x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES])
def test_a_filesystem_that_refuses_directory_fsync_is_tolerated(tmp_path, monkeypatch, code):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert write_bytes_atomic(tmp_path / "a" / "b.txt", b"ok").read_bytes() == b"ok"


def test_a_directory_that_cannot_be_opened_is_tolerated(tmp_path, monkeypatch):
    real_open = os.open

    def deny(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_DIRECTORY", 0):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    durable.fsync_dir(tmp_path)  # no error
    assert write_bytes_atomic(tmp_path / "c.txt", b"ok").read_bytes() == b"ok"


def test_a_real_directory_fsync_error_is_raised(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_bytes_atomic(tmp_path / "d.txt", b"new")
    assert (tmp_path / "d.txt").read_bytes() == b"new"  # renamed, then the sync of the rename failed


def test_a_failed_file_fsync_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = write_bytes_atomic(tmp_path / "e.txt", b"old")

    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_bytes_atomic(target, b"new")
    with pytest.raises(OSError, match="Input/output"):
        save_model(tmp_path / "m.npz", tiny_model())
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["e.txt"]


def test_an_interrupt_while_writing_leaves_no_temporary(tmp_path):
    target = write_bytes_atomic(tmp_path / "f.txt", b"old")
    with pytest.raises(KeyboardInterrupt), durable.atomic_open(target) as fh:
        fh.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.txt"]
