"""Search and fine-tuning alternated (fxpsim.experiments.qat.alternate, ``fxpsim search --finetune``)."""

import json

import numpy as np
import pytest

from fxpsim.cli import main
from fxpsim.cli.common import calibration_set
from fxpsim.config import NetworkConfig
from fxpsim.experiments.prune import Retraining, load_for_retraining
from fxpsim.experiments.qat import QatStudy, alternate, config_formats, run_qat_study, search_config
from fxpsim.modelfile import DEFAULT_MODEL, load_model
from fxpsim.simulate import Simulator
from fxpsim.train.qat import FineTune, fine_tune

RUN = FineTune(epochs=1, lr=1e-3)


@pytest.fixture(scope="module")
def setup():
    s = load_for_retraining(DEFAULT_MODEL, Retraining(progress=False))
    return s, calibration_set(s.model, s.data, 300, 0)


def test_one_round_is_search_then_fine_tune(setup):
    s, cal = setup
    alt = alternate(s, cal, 12, "act-w", "wrap", RUN, rounds=1)
    config = search_config(s.model, cal, 12, "act-w", "wrap")
    assert alt.config == config and len(alt.rounds) == 1 and list(alt.rounds["round"]) == [1]
    direct = fine_tune(s.model, config, s.splits[:4], s.base, RUN)
    for k, v in direct.model.network.state_dict().items():
        np.testing.assert_array_equal(alt.model.network.state_dict()[k], v)
    test = Simulator(alt.model).simulate(s.data.x_test, alt.config, s.data.y_test)
    assert alt.rounds["test_accuracy"].iloc[0] == test.accuracy
    assert alt.rounds["formats"].iloc[0] == config_formats(config) and " out Q" in config_formats(config)
    assert alt.converged == (search_config(alt.model, cal, 12, "act-w", "wrap") == config)


def test_rounds_stop_when_the_config_repeats_or_at_the_limit(setup):
    s, cal = setup
    alt = alternate(s, cal, 12, "act-w", "wrap", RUN, rounds=3)
    n = len(alt.rounds)
    assert 1 <= n <= 3 and list(alt.rounds["round"]) == list(range(1, n + 1))
    verdicts = list(alt.rounds["next_search"])
    assert all(v == "new config" for v in verdicts[:-1])  # it only goes on after a new config
    assert alt.converged == (verdicts[-1] == "same config: stop")
    assert alt.converged or n == 3
    if alt.converged:  # the final model is a fixed point of the search
        assert search_config(alt.model, cal, 12, "act-w", "wrap") == alt.config


def test_study_with_rounds_adds_the_alternating_row(setup):
    s, cal = setup
    study = QatStudy("digits-cnn", "test", bits=(12,), constraints=("a2q",), run=RUN, rounds=2)
    t = run_qat_study(study, s, cal).table
    assert list(t["method"]) == ["post-training", "fine-tuned", "acc-aware", "alternating"]
    alt = t.iloc[3]
    assert 1 <= alt["rounds"] <= 2 and alt["worst_case_safe"] and alt["overflow_count"] == 0  # acc-aware rounds
    with pytest.raises(Exception, match="rounds"):
        QatStudy("x", "y", rounds=-1)


def test_cli_search_finetune_writes_model_config_and_rounds(tmp_path, capsys):
    argv = ["search", str(DEFAULT_MODEL), "--acc-bits", "12", "--finetune", "1", "--rounds", "2", "--samples", "300",
            "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    name = "digits-cnn_acc12_act-w_wrap_finetune"
    model = load_model(tmp_path / f"{name}.npz")
    config = NetworkConfig.load(tmp_path / f"{name}_config.json")
    rounds = (tmp_path / f"{name}.csv").read_text().splitlines()
    assert rounds[0].startswith("round,formats") and 2 <= len(rounds) <= 3
    capsys.readouterr()
    assert main(["eval", str(tmp_path / f"{name}.npz"), "--config", str(tmp_path / f"{name}_config.json")]) == 0
    last = float(rounds[-1].split(",")[4])
    data = load_for_retraining(tmp_path / f"{name}.npz", Retraining()).data
    sim = Simulator(model).simulate(data.x_test, config, data.y_test)
    assert json.loads((tmp_path / f"{name}_config.json").read_text())["model"]["file"] == f"{name}.npz"
    assert abs(sim.accuracy - last) < 1e-4  # the last round's test accuracy is the saved model under its config
    capsys.readouterr()
    for extra, words in ((["--all"], "drop --all"), ([], "--acc-bits")):
        bad = [a for a in argv if a not in ("--acc-bits", "12")] + ["--tolerance", "0.01"] if not extra else argv + extra
        assert main(bad) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
