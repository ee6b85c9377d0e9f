"""``--jobs`` / ``--scheduler`` (issue 18 item 3): the same tables and report bytes as one process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxpsim.cli import main
from fxpsim.errors import FxpsimError
from fxpsim.experiments.acc_table import AccTableStudy, run_acc_table, sweep_grid, terminal_tables
from fxpsim.modelfile import load_model
from fxpsim.parallel import SERIAL, EvalSetup, Parallel, close
from fxpsim.search import acc_bits_sweep, accumulator_search
from fxpsim.search.sweeps import WHAT, sweep
from fxpsim.simulate import Evaluator, Simulator, profile
from fxpsim.train.data import load_dataset

CNN = Path(__file__).resolve().parents[2] / "models" / "digits-cnn.npz"
TWO = Parallel(2)


@pytest.fixture(scope="module")
def cnn():
    model = load_model(CNN)
    data = load_dataset("digits")
    sim = Simulator(model)
    ev = Evaluator(sim, data.x_train[:60], data.y_train[:60])
    yield model, data, ev, profile(sim, ev.x, prepared=True)
    close()


def test_acc_sweep_on_two_processes_equals_one(cnn):
    _, _, ev, prof = cnn
    bits = (6, 12, 16)  # 6: some constraints have no solution (empty cells) in both runs
    serial = acc_bits_sweep(ev, prof, bits=bits, constraints=("wc", "act-y", "a2q"))
    fresh = Evaluator(ev.sim, ev.x, ev.y, prepared=True)  # the parent's caches play no part
    par = acc_bits_sweep(fresh, prof, bits=bits, constraints=("wc", "act-y", "a2q"), parallel=TWO)
    assert par.to_csv() == serial.to_csv()
    assert serial["accuracy"].isna().any() and serial["accuracy"].notna().any()


def test_search_candidates_on_two_processes_equal_one(cnn):
    _, _, ev, prof = cnn
    for constraint, overflow in (("act-w", "wrap"), ("act-y", "clip")):
        a = accumulator_search(ev, prof, 14, constraint, overflow)
        b = accumulator_search(ev, prof, 14, constraint, overflow, parallel=TWO)
        assert a == b


def test_sweep_on_two_processes_equals_one(cnn):
    _, _, ev, prof = cnn
    serial = pd.concat([sweep(ev, prof, w, range(-1, 6)) for w in WHAT], ignore_index=True)
    assert sweep(ev, prof, WHAT, range(-1, 6), parallel=TWO).to_csv() == serial.to_csv()


def test_the_setup_ships_weights_not_the_float_trace(cnn):
    model, _, ev, prof = cnn
    setup = EvalSetup.of(ev, prof)
    assert setup is EvalSetup.of(ev, prof)  # one per evaluator and profile: the pool is reused
    assert setup.nbytes < 3 * len(CNN.read_bytes()) + 4 * ev.x.nbytes
    assert all(getattr(layer, "_cache", None) is None for layer in setup.model.network.layers)


@pytest.mark.parametrize("kwargs, needle", [({"jobs": 0}, "jobs=0"), ({"jobs": True}, "jobs=True"),
                                            ({"scheduler": "dask://x"}, "tcp://HOST:PORT")])
def test_bad_parallel_settings_are_one_line(kwargs, needle):
    with pytest.raises(FxpsimError) as err:
        Parallel(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_cli_jobs_two_writes_the_same_report_bytes(tmp_path, capsys):
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        assert main(["sweep", str(CNN), "--what", "data-frac", "--bits", "0:5", "--samples", "80",
                     "--jobs", jobs, "--out", str(out)]) == 0
        assert main(["search", str(CNN), "--acc-bits", "14", "--samples", "60", "--no-progress",
                     "--jobs", jobs, "--out", str(out)]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in (tmp_path / "1").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "2").iterdir()) and len(names) >= 5
    for name in names:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


def test_cli_bad_jobs_is_one_line(capsys):
    assert main(["sweep", str(CNN), "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--jobs" in err and "\n" not in err


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                    reason="needs Dask distributed: pip install -e '.[dist]' (the [test] extra has it)")
def test_dask_local_cluster_equals_one_process(cnn):
    _, _, ev, prof = cnn
    serial = sweep(ev, prof, "data-int", range(0, 6))
    try:
        assert sweep(ev, prof, "data-int", range(0, 6), parallel=Parallel(2, "local")).to_csv() == serial.to_csv()
    finally:
        close()


def test_acc_table_says_what_it_will_do_and_prints_flat_tables(cnn):
    model, data, ev, _ = cnn
    lines = []
    study = AccTableStudy("t", "test", sweep_bits=(10, 12, 14, 16, 18), case_search_bits=20, case_bits=(20, 12))
    report = run_acc_table(study, model, (data.x_train[:40], data.y_train[:40]), SERIAL, lines.append)
    assert "evaluations" in lines[0] and "40 samples" in lines[0]
    assert len(lines) == 2 and "of " in lines[1] and "s to go" in lines[1]
    for title, table in terminal_tables(report):
        assert title and all(isinstance(c, str) for c in table.columns)
    grid = sweep_grid(report.sweep)
    assert list(grid.columns[:3]) == ["acc_bits", "wc/wrap", "wc/clip"] and len(grid) == 5


def test_sweep_grid_leaves_widths_without_a_solution_blank():
    df = pd.DataFrame({"constraint": ["wc", "wc"], "overflow": ["wrap", "wrap"], "acc_bits": [8, 10],
                       "accuracy": [None, 0.5], "normalized_accuracy": [None, 0.6]})
    grid = sweep_grid(df)
    assert list(grid.columns) == ["acc_bits", "wc/wrap"] and np.isnan(grid["wc/wrap"][0])
    from fxpsim.tables import format_table

    assert "nan" not in format_table(grid)
