"""Issue 17, item 2: ``eval --config CFG --report`` writes the per-layer table for every engine."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pandas as pd
import pytest

from fxpsim.cli import main
from fxpsim.cli.evaluate import report_stem

ROOT = Path(__file__).resolve().parents[2]
CNN = str(ROOT / "models" / "digits-cnn.npz")
CONFIG = ROOT / "reports" / "digits-cnn_acc16_act-w_wrap_config.json"
LAYERS = ["conv1", "conv2", "fc1", "fc2"]
IMAGES = "40"


def _config_on(engine: str, tmp_path: Path) -> Path:
    """The committed act-w config with every layer on ``engine`` (written as ``cnn-<engine>_config.json``)."""
    doc = json.loads(CONFIG.read_text())
    for layer in doc["layers"]:
        layer["engine"] = engine
    path = tmp_path / f"cnn-{engine}_config.json"
    path.write_text(json.dumps(doc))
    return path


# Engines with a timing table of their own, and its file beside the per-layer one. An engine added to
# the datapath (the xnor engine) gets its row here once eval prints its table.
TIMING = {"dense": None, "sparse": "digits-cnn-64pe-sparse", "bitserial": "{stem}-bitserial"}


@pytest.mark.parametrize("engine", list(TIMING))
def test_report_writes_the_per_layer_table_for_every_engine(engine, tmp_path, capsys):
    config = _config_on(engine, tmp_path)
    out = tmp_path / "out"
    assert main(["eval", CNN, "--config", str(config), "--images", IMAGES, "--report", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    stem = f"digits-cnn_eval_cnn-{engine}_{IMAGES}images"
    table = pd.read_csv(out / f"{stem}.csv")
    assert table["layer"].tolist() == LAYERS
    assert {"weights", "data_in", "acc_bits", "overflow_count", "max_abs_acc_lsb"} <= set(table.columns)
    assert (table["engine"] == engine).all() if "engine" in table.columns else engine == "dense"
    md = (out / f"{stem}.md").read_text()
    assert md.startswith("# digits-cnn.npz: per-layer formats") and f"{IMAGES} test images" in md
    assert f"wrote {out / stem}.csv" in printed
    timing = TIMING[engine]
    files = {p.name for p in out.iterdir()}
    expected = {f"{stem}.csv", f"{stem}.md"}
    if timing is not None:
        timing = timing.format(stem=stem)
        expected |= {f"{timing}.csv", f"{timing}.md"}
        assert pd.read_csv(out / f"{timing}.csv")["layer"].tolist() == LAYERS
    assert files == expected


def test_the_report_matches_the_printed_accuracy(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", CNN, "--config", str(CONFIG), "--images", IMAGES, "--report", "--out", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("fixed-point accuracy"))
    md = (out / f"digits-cnn_eval_acc16_act-w_wrap_{IMAGES}images.md").read_text()
    assert ("F" + line[1:]) in md


def test_report_without_an_integer_run_is_one_line(tmp_path, capsys):
    assert main(["eval", CNN, "--report", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == ("fxpsim eval: error: --report writes the per-layer table of the integer simulation: "
                   "add --config CFG (or --sparse)\n")
    assert not (tmp_path / "out").exists()


def test_the_report_name_carries_what_varies():
    def stem(**kw):
        args = Namespace(**{"config": None, "sparse": False, "sparse_conv": False, "images": None, **kw})
        return report_stem(args, Path("models/m.npz"))

    assert stem(config="reports/m_acc16_wc_clip_config.json") == "m_eval_acc16_wc_clip"
    assert stem(config="x/other.json") == "m_eval_other"
    assert stem(sparse=True) == "m_eval_sparse"
    assert stem(config="m_config.json", sparse=True, sparse_conv=True, images=5) == "m_eval_config_sparse-conv_5images"
