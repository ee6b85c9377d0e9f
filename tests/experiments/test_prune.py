"""The pruning study without argv: :func:`fxpsim.experiments.prune.run_prune` and its frozen settings."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxpsim.cli import main
from fxpsim.errors import FxpsimError
from fxpsim.experiments.prune import PruneStudy, Retraining, parse_sparsity, run_prune
from fxpsim.tables import to_csv

MLP = Path(__file__).resolve().parents[2] / "models" / "digits-mlp.npz"
FAST = dict(iterations=2, retrain_epochs=1, progress=False)


def test_run_prune_returns_the_pruned_model_and_tables_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = PruneStudy(MLP, tmp_path / "p.npz", target_sparsity=0.7, retraining=Retraining(**FAST), sensitivity=True)
    lines = []
    report = run_prune(study, log=lines.append)
    assert list(tmp_path.iterdir()) == []  # the caller writes
    ws = [layer.params["W"] for layer in report.model.network.layers if layer.kind == "dense"]
    kept = sum(int(np.count_nonzero(w)) for w in ws) / sum(w.size for w in ws)
    assert kept == pytest.approx(0.3, abs=1e-3) and report.sparsity == pytest.approx(1 - kept)
    assert list(report.rounds["iteration"]) == [1, 2]
    assert [line[:16] for line in lines if line.startswith("prune round")] == ["prune round 1/2:", "prune round 2/2:"]
    assert report.model.metadata["pruned"]["rounds"] == report.rounds.to_dict("records")
    assert set(report.sensitivity["layer"]) == {"fc1", "fc2", "fc3"}
    assert report.title == "Iterative pruning of digits-mlp.npz -> p.npz"
    assert report.text.startswith("Test error 2.67 % -> ")


def test_the_cli_writes_exactly_the_study_tables(tmp_path):
    """`fxpsim prune` only writes: its CSVs are the library's tables of the same (seeded) study."""
    out = tmp_path / "cli.npz"
    assert main(["prune", str(MLP), "--target-sparsity", "fc1=0.8,fc2=0.5", "--iterations", "2",
                 "--retrain-epochs", "1", "--sensitivity", "--out", str(out), "--reports", str(tmp_path),
                 "--quiet"]) == 0
    report = run_prune(PruneStudy(MLP, out, target_sparsity={"fc1": 0.8, "fc2": 0.5},
                                  retraining=Retraining(**FAST), sensitivity=True))
    assert (tmp_path / "cli-prune.csv").read_text() == to_csv(report.rounds)
    assert (tmp_path / "digits-mlp-sensitivity.csv").read_text() == to_csv(report.sensitivity)
    assert report.text in (tmp_path / "cli-prune.md").read_text()


@pytest.mark.parametrize("kwargs, needle", [
    (dict(retraining=Retraining(iterations=1), target_sparsity=0.5, quality=1.0), "exactly one of"),
    (dict(retraining=Retraining(iterations=1)), "exactly one of"),
    (dict(target_sparsity=1.0), "outside [0, 1)"),
    (dict(target_sparsity={"fc1": -0.1}), "outside [0, 1)"),
    (dict(quality=0.0), "quality=0.0 must be > 0"),
])
def test_a_bad_study_is_one_line_naming_the_value(kwargs, needle, tmp_path):
    with pytest.raises(FxpsimError) as exc:
        PruneStudy(MLP, tmp_path / "p.npz", **kwargs)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(iterations=0), "iterations=0 must be a whole number >= 1"),
    (dict(retrain_epochs=-1), "retrain_epochs=-1"),
    (dict(final_epochs=-2), "final_epochs=-2"),
    (dict(lr_divisor=0.0), "lr_divisor=0.0 must be > 0"),
    (dict(weight_decay=-1.0), "weight_decay=-1.0 must be >= 0"),
    (dict(threads=0), "threads=0 must be a whole number >= 1"),
])
def test_bad_retraining_settings_fail_at_construction(kwargs, needle):
    with pytest.raises(FxpsimError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        Retraining(**kwargs)


def test_out_must_be_a_model_file_and_unknown_target_layers_are_named(tmp_path):
    with pytest.raises(FxpsimError, match="must end in .npz"):
        PruneStudy(MLP, tmp_path / "p.csv", target_sparsity=0.5)
    study = PruneStudy(MLP, tmp_path / "p.npz", target_sparsity={"fc9": 0.5}, retraining=Retraining(**FAST))
    with pytest.raises(FxpsimError, match="fc9 not pruned / not in the model: its layers are fc1, fc2, fc3"):
        run_prune(study)


def test_parse_sparsity_reads_one_fraction_or_one_per_layer():
    assert parse_sparsity(" 0.92 ") == 0.92
    assert parse_sparsity("FC1=0.9, fc2=0.5") == {"fc1": 0.9, "fc2": 0.5}
    for text, needle in (("x", "'x' is not a number"), ("fc1=", "is not LAYER=S"), ("fc1=2", "outside [0, 1)")):
        with pytest.raises(FxpsimError) as exc:
            parse_sparsity(text)
        assert needle in str(exc.value)


def test_the_rounds_table_is_a_dataframe_of_records():
    report = run_prune(PruneStudy(MLP, "x.npz", quality=1.0, retraining=Retraining(iterations=1, retrain_epochs=0,
                                                                                   layers=("fc2",), progress=False)))
    assert isinstance(report.rounds, pd.DataFrame) and report.sensitivity is None
    assert list(report.kept) == ["fc2"] and report.model.metadata["pruned"]["layers"] == ["fc2"]
