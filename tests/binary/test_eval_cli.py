"""``fxpsim eval`` on a BNN model: engine xnor by default, ``--config`` with xnor layers, the packed
model file read by the one reader, and the same predictions as the stand-alone BnnSimulator."""

import re

import numpy as np
import pytest

from fxpsim.binary.netsim import BnnSimulator
from fxpsim.binary.stages import bnn_config
from fxpsim.cli import main
from fxpsim.modelfile import load_model, save_model
from fxpsim.simulate import Simulator
from fxpsim.train.data import load_dataset
from fxpsim.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def bnn_file(tmp_path_factory, digits):
    model, _ = train(digits, "fc32-bn-relu-fc32-bn-relu-fc10",
                     TrainConfig(epochs=2, lr=3e-3, method="bnn", preprocess="none", init="xavier-uniform"),
                     progress=False)
    path = save_model(tmp_path_factory.mktemp("bnn") / "digits-bnn.npz", model)
    return path, model


def _accuracy(out: str) -> float:
    return float(re.search(r"fixed-point accuracy ([0-9.]+) %", out).group(1))


def test_eval_bnn_model_runs_engine_xnor_by_default(bnn_file, digits, capsys):
    path, model = bnn_file
    assert main(["eval", str(path)]) == 0
    out = capsys.readouterr().out
    assert "engine xnor" in out and "xnor" in out.split("config:")[1]
    want = np.mean(BnnSimulator(model).predict(digits.x_test) == digits.y_test) * 100
    assert _accuracy(out) == pytest.approx(round(want, 2), abs=1e-9)
    loaded = load_model(path)  # the packed file gives the same integer run
    assert np.array_equal(BnnSimulator(loaded).predict(digits.x_test), BnnSimulator(model).predict(digits.x_test))


def test_eval_bnn_with_config_file(bnn_file, tmp_path, capsys):
    path, model = bnn_file
    cfg = bnn_config(Simulator(model).stages, acc_bits=8)
    cfg.save(tmp_path / "bnn.json")
    assert main(["eval", str(path), "--config", str(tmp_path / "bnn.json")]) == 0
    out = capsys.readouterr().out
    assert "bnn.json" in out and _accuracy(out) >= 0
    assert re.search(r"fc1\s.*\bxnor\b", out)


def test_eval_bnn_with_a_dense_config_is_one_line(bnn_file, tmp_path, capsys):
    path, model = bnn_file
    cfg = bnn_config(Simulator(model).stages).with_engine("dense")
    cfg.save(tmp_path / "dense.json")
    assert main(["eval", str(path), "--config", str(tmp_path / "dense.json")]) == 2
    err = capsys.readouterr().err
    assert "is a BNN stage" in err and "engine xnor" in err and err.count("\n") == 1
