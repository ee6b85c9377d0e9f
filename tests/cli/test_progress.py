"""Issue 17, item 3: progress bars only on a terminal, ``--quiet`` on every command that shows progress,
and a captured log of lines, never ``\\r`` redraws."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from fxpsim.cli import build_parser
from fxpsim.progress import bars_on, on_terminal, progress_bar

TRAIN = ["train", "--arch", "mlp-small", "--dataset", "digits", "--epochs", "2"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal(monkeypatch):
    pipe = io.StringIO()
    bar = progress_bar(10, "x", file=pipe)
    bar.update(10)
    bar.close()
    assert pipe.getvalue() == "" and not on_terminal(pipe)
    tty = _Tty()
    bar = progress_bar(10, "x", file=tty)
    bar.update(10)
    bar.close()
    assert "\r" in tty.getvalue() and "10/10" in tty.getvalue()
    off = _Tty()
    progress_bar(10, "x", enabled=False, file=off).close()
    assert off.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", tty)
    assert bars_on() and not bars_on(quiet=True)
    monkeypatch.setattr(sys, "stderr", pipe)
    assert not bars_on()


def test_a_closed_stream_is_no_terminal():
    stream = io.StringIO()
    stream.close()
    assert not on_terminal(stream)


@pytest.mark.parametrize("command", ["train", "binary", "prune", "compress", "finetune", "search", "stripes"])
def test_every_command_with_progress_takes_quiet(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    assert any("--quiet" in a.option_strings for a in sub._actions)


def _run(argv, tmp_path, stderr):
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "fxpsim", *argv, "--out", str(tmp_path / "m.npz")],
                          stdout=subprocess.PIPE, stderr=stderr, cwd=tmp_path, env=env, timeout=300)


def test_a_captured_log_has_lines_not_carriage_returns(tmp_path):
    proc = _run(TRAIN, tmp_path, subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr.decode()
    log = proc.stdout + proc.stderr
    assert b"\r" not in log
    assert b"epoch 1/2: loss" in proc.stdout and b"epoch 2/2: loss" in proc.stdout  # the lines the bar would show


def test_a_terminal_gets_the_bar_and_quiet_turns_it_off(tmp_path):
    for quiet, drawn in (([], True), (["--quiet"], False)):
        master, slave = pty.openpty()
        try:
            proc = _run(TRAIN + quiet, tmp_path, slave)
        finally:
            os.close(slave)
        seen = b""
        try:
            while chunk := os.read(master, 65536):
                seen += chunk
        except OSError:  # the terminal's other end is closed: all read
            pass
        os.close(master)
        assert proc.returncode == 0
        assert (b"\r" in seen) == drawn, seen[-400:]
        assert (b"epoch 1/2: loss" in proc.stdout) == (not drawn)


def test_no_bar_is_drawn_outside_the_progress_module():
    """Every bar goes through :func:`fxpsim.progress.progress_bar` (the acc table's searches once drew
    tqdm bars into a captured log): no other module imports tqdm."""
    package = Path(__file__).resolve().parents[2] / "fxpsim"
    users = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
             if "tqdm" in p.read_text() and p.name != "progress.py"]
    assert users == []


def test_a_captured_search_log_has_no_bar(tmp_path, capsys):
    from fxpsim.cli import main

    assert main(["search", "--acc-bits", "16", "--out", str(tmp_path)]) == 0  # progress on by default
    err = capsys.readouterr().err
    assert "\r" not in err and "cand/s" not in err
