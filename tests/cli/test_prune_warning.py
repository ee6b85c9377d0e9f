"""Issue 17, item 3: ``prune`` warns, in one line naming the flag to change, when the pruned test error
is more than 5 points above the dense one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fxpsim.cli import main
from fxpsim.experiments.prune import WARN_POINTS, error_warning

MLP = str(Path(__file__).resolve().parents[2] / "models" / "digits-mlp.npz")


@pytest.mark.parametrize("before, after, quality, flag", [
    (0.97, 0.91, None, "--target-sparsity"), (0.97, 0.50, 1.5, "--quality"), (0.9756, 0.2533, None, "--target-sparsity")])
def test_a_rise_beyond_five_points_is_one_line_naming_the_flag(before, after, quality, flag):
    line = error_warning(SimpleNamespace(accuracy_before=before, accuracy_after=after), SimpleNamespace(quality=quality))
    assert line is not None and "\n" not in line and line.startswith("warning: ")
    assert f"a lower {flag}" in line and f"{100 * (1 - after):.2f} %" in line


@pytest.mark.parametrize("before, after", [(0.97, 0.97), (0.97, 0.99), (0.97, 0.925), (0.97, 0.9201)])
def test_no_warning_within_five_points(before, after):
    assert WARN_POINTS == 5.0
    assert error_warning(SimpleNamespace(accuracy_before=before, accuracy_after=after), SimpleNamespace(quality=None)) is None


def test_prune_warns_on_stderr_and_still_writes(tmp_path, capsys):
    out = tmp_path / "p.npz"
    argv = ["prune", MLP, "--target-sparsity", "0.995", "--iterations", "1", "--retrain-epochs", "0", "--quiet",
            "--out", str(out), "--reports", str(tmp_path)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: pruning raised the test error by ")
    assert "try a lower --target-sparsity" in err and out.exists()
