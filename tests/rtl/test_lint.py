"""fxpsim/rtl is lint-clean Verilog-2005 (``verilator --lint-only -Wall``) at the parameter edges."""

from __future__ import annotations

import subprocess

import pytest

from fxpsim.interop.vectors import rtl_sources

from .cocotb_run import require_verilator

CASES = [
    ("fxp_pe", {}),
    ("fxp_pe", {"W_X": 1, "W_W": 1, "BW_ACC": 2, "W_Y": 1, "W_B": 2, "PRODUCT_CAST": 1, "SHIFT": -4,
                "PRODUCT_SHIFT": -2, "BIAS_SHIFT": 3}),
    ("fxp_pe", {"W_X": 31, "W_W": 31, "BW_ACC": 62, "SHIFT": 70, "OVERFLOW": 1, "OUT_WRAP": 1}),
    ("fxp_pe", {"X_SIGNED": 0, "Y_SIGNED": 0, "RELU": 1, "SHIFT": 5, "PRODUCT_SHIFT": 3, "PRODUCT_CAST": 1}),
    ("fxp_dense", {}),
    ("fxp_dense", {"K": 1, "N": 1}),
    ("fxp_dense", {"K": 1, "N": 5, "P": 2}),
    ("fxp_dense", {"K": 64, "N": 128, "P": 12}),
]


@pytest.mark.parametrize("top, params", CASES)
def test_lint_clean(top, params):
    folder = require_verilator()
    cmd = [str(folder / "verilator"), "--lint-only", "-Wall", "--top-module", top,
           *(f"-G{k}={v}" for k, v in params.items()), *map(str, rtl_sources())]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    warnings = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("%")]
    assert run.returncode == 0 and not warnings, warnings
