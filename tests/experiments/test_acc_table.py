"""de Bruin's accumulator study without argv: :func:`fxpsim.experiments.acc_table.run_acc_table`.

The full default study on the digits CNN is what ``tests/experiments/test_reproduce.py``
regenerates byte for byte (``reports/digits-cnn_acc_*``); here a short one
on the digits MLP.
"""

import functools
from pathlib import Path

import pytest

from fxpsim.cli import main
from fxpsim.cli import search as cli_search
from fxpsim.cli.common import calibration_set
from fxpsim.errors import FxpsimError
from fxpsim.experiments.acc_table import AccTableStudy, run_acc_table
from fxpsim.modelfile import load_model
from fxpsim.tables import to_csv
from fxpsim.train.data import load_dataset

MLP = Path(__file__).resolve().parents[2] / "models" / "digits-mlp.npz"
SHORT = dict(space_bits=12, sweep_bits=(12, 20), case_bits=(16, 10))


@pytest.fixture(scope="module")
def mlp_and_calibration():
    model = load_model(MLP)
    split = model.metadata.get("split") or {}
    data = load_dataset(model.metadata["dataset"], None,
                        **{k: split[k] for k in ("test_fraction", "split_seed") if k in split})
    return model, calibration_set(model, data, 60, 0)


def test_run_acc_table_makes_the_four_tables(mlp_and_calibration, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, cal = mlp_and_calibration
    report = run_acc_table(AccTableStudy("digits-mlp", "digits-mlp.npz (sha256 x)", **SHORT), model, cal)
    assert list(tmp_path.iterdir()) == []  # the caller writes
    names = [name for name, *_ in report.tables()]
    assert names == ["digits-mlp_acc_required", "digits-mlp_solution_space", "digits-mlp_acc_sweep",
                     "digits-mlp_overflow_case"]
    assert list(report.required["layer"]) == ["fc1", "fc2", "fc3"]
    assert (report.required["lb_clip"] <= report.required["il_act_w"]).all()  # clip never needs more than ACT_w
    assert "on 60 calibration samples" in report.required_text and report.samples == 60
    assert report.space_title == "Solution space at BW_acc = 12 (de Bruin Fig. 4)"
    assert sorted(set(report.sweep["acc_bits"])) == [12, 20] and len(report.sweep) == 4 * 2 * 2
    assert list(report.case["acc_bits"]) == [16, 16, 10, 10] and list(report.case["overflow"][:2]) == ["wrap", "clip"]
    assert "act-y at 32 bits" in report.case_title


def test_the_cli_writes_exactly_the_study_tables(mlp_and_calibration, tmp_path, monkeypatch):
    """`fxpsim search --acc-table` only writes (and plots) the tables of the library's study."""
    monkeypatch.setattr(cli_search, "AccTableStudy", functools.partial(AccTableStudy, **SHORT))
    assert main(["search", str(MLP), "--acc-table", "--samples", "60", "--no-progress", "--out", str(tmp_path)]) == 0
    model, cal = mlp_and_calibration
    report = run_acc_table(AccTableStudy("digits-mlp", "x", progress=False, **SHORT), model, cal)
    for name, table, title, _ in report.tables():
        assert (tmp_path / f"{name}.csv").read_text() == to_csv(table)
        assert title in (tmp_path / f"{name}.md").read_text()
    for png in ("digits-mlp_solution_space.png", "digits-mlp_acc_sweep.png"):
        assert (tmp_path / png).stat().st_size > 1000


@pytest.mark.parametrize("kwargs, needle", [
    (dict(sweep_bits=()), "sweep_bits=() must be accumulator widths"),
    (dict(case_bits=(16, 0)), "case_bits=(16, 0)"),
    (dict(space_bits=True), "space_bits, case_search_bits"),
])
def test_a_bad_study_is_one_line_naming_the_value(kwargs, needle):
    with pytest.raises(FxpsimError) as exc:
        AccTableStudy("m", "m.npz", **kwargs)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
