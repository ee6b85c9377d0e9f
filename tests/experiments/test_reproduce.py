"""Results that reproduce (issue 13 item 5): the committed reports regenerate byte for byte.

The QUICK entries of :mod:`fxpsim.experiments.reproduce` (the digits models)
run into a temporary folder and must equal the committed ``reports/`` files;
the FULL entries (MNIST, long trainings) are checked here only as command
lines that parse and name their report folder.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxpsim.cli import build_parser, main as cli_main
from fxpsim.cli.binary import recorded_command
from fxpsim.experiments import reproduce as rp
from fxpsim.tables import format_csv_float, model_provenance, to_csv

QUICK = [e for e in rp.all_entries() if e.quick]
TEXT_SUFFIXES = (".csv", ".md", ".json")


# ---------------------------------------------------------------- the inventory

def test_inventory_lists_every_committed_report_but_the_timings():
    committed = {p.name for p in rp.REFERENCE_DIR.iterdir() if p.is_file()}
    listed = {f for e in rp.all_entries() for f in e.files}
    timings = set(rp.timing_files())
    assert timings and all(f.startswith(("bench_", "hls4ml_parity.")) for f in timings)
    assert sorted(committed - timings - listed) == []  # every report has its command
    assert sorted({f for e in QUICK for f in e.files} - committed) == []  # quick ones are all committed


@pytest.mark.parametrize("entry", [e for e in rp.all_entries() if e.runner == "fxpsim"], ids=lambda e: e.name)
def test_every_fxpsim_entry_parses_and_writes_to_the_report_folder(entry, tmp_path):
    argv = entry.command(tmp_path / "out", tmp_path / "mnist", tmp_path / "models")
    args = build_parser().parse_args(argv)
    assert getattr(args, entry.out_flag.lstrip("-").replace("-", "_")) == str(tmp_path / "out")
    assert all("{" not in a for a in argv)
    assert (args.data_dir == str(tmp_path / "mnist")) == entry.needs_data


def test_list_prints_every_entry_and_runs_nothing(capsys, tmp_path):
    assert rp.main(["--list", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"{e.name} [" in out for e in rp.all_entries()) and "bench_datapath.csv" in out
    assert not any(tmp_path.iterdir())


def test_full_entries_are_skipped_with_a_message_without_mnist(tmp_path):
    run, skipped = rp.select(quick=False, data_dir=None)
    assert skipped and all(e.needs_data for e in skipped) and not any(e.needs_data for e in run)
    lines = []
    assert rp.reproduce(tmp_path, only="lenet5-eie", data_dir=None, log=lines.append) == []
    assert "skipping 1 FULL entries" in lines[0] and "--data-dir" in lines[0]
    assert rp.main(["--only", "no-such-entry", "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------- deterministic report text

def test_csv_floats_have_a_stated_precision():
    df = pd.DataFrame({"x": [127.84609634450821, np.nan, 1.0, -0.0, 12209421.0, 1e-7],
                       "mixed": [None, 0.9755555555555555, "Q2.7", 3, np.float32(0.1), 2.5],
                       "n": [1, 2, 3, 4, 5, 6]})
    assert to_csv(df).splitlines() == ["x,mixed,n", "127.846,,1", ",0.975556,2", "1,Q2.7,3", "0,3,4",
                                       "12209421,0.1,5", "1e-07,2.5,6"]
    # the last bits of a float sum, which move with summation order, do not reach the file
    assert format_csv_float(127.84609634450821) == format_csv_float(127.84609634450823)
    assert format_csv_float(math.inf) == "inf"


def test_model_provenance_names_the_file_and_its_digest_not_its_folder():
    path = rp.ROOT / "models" / "digits-cnn.npz"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    text = model_provenance(path)
    assert text == f"digits-cnn.npz (sha256 {digest[:16]})" and str(path.parent) not in text


def test_recorded_command_hides_where_data_and_outputs_live():
    argv = ["binary", "--data-dir", "/abs/mnist", "--arch", "fc8 x", "--out", "/tmp/r", "--model-dir=/tmp/m",
            "--quiet"]
    assert recorded_command(argv) == "fxpsim binary --data-dir DIR --arch 'fc8 x' --quiet"
    assert recorded_command(None) == ""


def test_binary_report_is_the_same_wherever_it_is_written(tmp_path):
    """No wall-clock column, no folder in the command column: two runs, two folders, same bytes."""
    reports = []
    for run in ("a", "b"):
        argv = ["binary", "--dataset", "digits", "--arch", "fc16-bn-relu-fc10", "--methods", "float",
                "--epochs", "1", "--quiet", "--report", "t", "--model-dir", str(tmp_path / run / "m"),
                "--out", str(tmp_path / run / "r")]
        assert cli_main(argv) == 0
        reports.append([(tmp_path / run / "r" / f"t{s}").read_bytes() for s in (".csv", ".md")])
    assert reports[0] == reports[1]
    df = pd.read_csv(tmp_path / "a" / "r" / "t.csv")
    assert "train_s" not in df.columns and str(tmp_path) not in reports[0][1].decode()
    assert df.loc[0, "command"].startswith("fxpsim binary --dataset digits")


# ---------------------------------------------------------------- the quick part, byte for byte

def _run_and_compare(entry, tmp_path):
    out = tmp_path / "reports"
    written = rp.run_entry(entry, out, models_dir=tmp_path / "models")
    assert sorted(p.name for p in out.iterdir()) == sorted(entry.files)  # nothing unlisted
    assert {p.name for p in written} == set(entry.files)
    for f in entry.files:
        if f.endswith(TEXT_SUFFIXES):
            text = (out / f).read_text()
            assert str(rp.ROOT) not in text and str(tmp_path) not in text, f"{f} names a folder"
    assert rp.compare(out, rp.REFERENCE_DIR, entry.compared) == [], (
        "regenerated reports differ from the committed ones: if the change is intended, run "
        "`python -m fxpsim.experiments.reproduce --quick` and commit reports/")


@pytest.mark.parametrize("entry", QUICK, ids=lambda e: e.name)
def test_quick_entry_reproduces_committed_reports(entry, tmp_path):
    _run_and_compare(entry, tmp_path)
