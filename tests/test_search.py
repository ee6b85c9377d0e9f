"""Judd's sweeps and tolerance search, de Bruin's accumulator search, and their CLI."""

import numpy as np
import pytest

from fxpsim.cli import main
from fxpsim.config import NetworkConfig
from fxpsim.errors import FxpsimError
from fxpsim.modelfile import save_model
from fxpsim.search import (accumulator_search, check_acc_bits, layer_ranges, overflow_case_study,
                           required_accumulator_table, tolerance_search, traffic_ratio, layer_shapes)
from fxpsim.simulate import Evaluator, Simulator, profile
from fxpsim.sweep import sweep, wide_config
from fxpsim.train.data import load_dataset
from fxpsim.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def digits_mlp():
    data = load_dataset("digits")
    model, _ = train(data, "mlp-small", TrainConfig(epochs=12, seed=0, lr=3e-3), progress=False)
    return model, data


@pytest.fixture(scope="module")
def setup(digits_mlp):
    model, data = digits_mlp
    sim = Simulator(model)
    ev = Evaluator(sim, data.x_train[:300], data.y_train[:300])
    return model, data, sim, ev, profile(sim, ev.x, prepared=True)


def test_wide_integer_simulation_matches_float_accuracy(digits_mlp):
    model, data = digits_mlp
    sim = Simulator(model)
    prof = profile(sim, data.x_train[:300])
    res = sim.simulate(data.x_test, wide_config(prof, acc_bits=48, overflow="clip"), data.y_test)
    assert res.float_accuracy > 0.9
    assert abs(res.accuracy - res.float_accuracy) <= 0.001


def test_uniform_sweep_falls_with_fewer_bits(setup):
    model, data, sim, ev, prof = setup
    df = sweep(ev, prof, "data-frac", range(-2, 9))
    acc = df.set_index("bits")["relative_accuracy"]
    assert acc[8] >= 0.99 and acc[-1] < 0.5  # wide is lossless; a 2.0 lsb is not
    assert -2 not in acc.index  # no format of width >= 1 for the input layer: no point
    with pytest.raises(FxpsimError, match="unknown sweep"):
        sweep(ev, prof, "weights", range(4))


def test_tolerance_search_meets_tolerance_and_saves_traffic(setup):
    model, data, sim, ev, prof = setup
    shapes = layer_shapes(ev)
    r5 = tolerance_search(ev, prof, 0.05)
    r1 = tolerance_search(ev, prof, 0.01)
    assert r1.val_accuracy >= 0.99 * ev.float_accuracy and r5.val_accuracy >= 0.95 * ev.float_accuracy
    assert r5.traffic_ratio <= r1.traffic_ratio < traffic_ratio(wide_config(prof), shapes) < 1
    with pytest.raises(FxpsimError, match=r"in \[0, 1\)"):
        tolerance_search(ev, prof, 1.5)


@pytest.mark.parametrize("constraint", ["wc", "act-w", "act-y", "a2q"])
def test_accumulator_search_fits_the_accumulator(setup, constraint):
    model, data, sim, ev, prof = setup
    config, choices = accumulator_search(ev, prof, 16, constraint, "clip")
    assert all(c.acc_bits == 16 for c in config)
    assert [c.layer for c in choices] == sim.names
    if constraint != "act-y":  # provably overflow-free
        assert all(st.overflow_count == 0 for _, _, st in ev.stage_outputs(config))
        assert all(ch.candidate.worst_case_acc <= 2**15 - 1 for ch in choices)
    assert ev.accuracy(config) >= 0.9 * ev.float_accuracy


def test_too_narrow_accumulator_names_the_layer(setup):
    model, data, sim, ev, prof = setup
    with pytest.raises(FxpsimError, match=r"layer fc1 .*needs at least \d+ bits"):
        check_acc_bits("wc", layer_ranges(ev, prof), 4)


def test_wrap_collapses_where_clip_degrades(setup):
    model, data, sim, ev, prof = setup
    config, _ = accumulator_search(ev, prof, 24, "act-y", "wrap")
    df = overflow_case_study(ev, config, range(24, 15, -1))
    acc = df.pivot(index="acc_bits", columns="overflow", values="normalized_accuracy")
    assert df.set_index(["acc_bits", "overflow"]).loc[(24, "wrap"), "overflow_count"] == 0
    assert (acc["clip"] >= acc["wrap"] - 0.02).all()  # saturation never loses much against wrapping
    assert ((acc["clip"] >= 0.9) & (acc["wrap"] <= 0.5)).any()  # a width where wrap collapses, clip holds


def test_required_accumulator_table_orders_the_constraints(setup):
    model, data, sim, ev, prof = setup
    df = required_accumulator_table(ev, prof)
    assert (df["il_wc"] >= df["il_act_w"]).all() and (df["il_act_w"] >= df["il_act_y"] - 1).all()
    assert (df["lb_clip"] <= df["il_act_w"]).all()


def test_cli_search_writes_reports_and_a_loadable_config(digits_mlp, tmp_path, capsys):
    model, _ = digits_mlp
    path = save_model(tmp_path / "m.npz", model)
    out = tmp_path / "rep"
    assert main(["search", str(path), "--acc-bits", "16", "--out", str(out), "--no-progress",
                 "--samples", "100"]) == 0
    text = capsys.readouterr().out
    assert "normalized" in text and "fc1" in text
    cfg = NetworkConfig.load(out / "m_acc16_act-w_wrap_config.json")
    assert len(cfg) == 3 and (out / "m_acc16_act-w_wrap.md").exists()
    assert main(["search", str(path), "--acc-bits", "70", "--out", str(out)]) == 2
    assert main(["search", str(path), "--acc-bits", "3", "--constraint", "wc", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "must be in 1..62" in err and "needs at least" in err and err.count("\n") == 2


def test_cli_eval_runs_a_saved_config(digits_mlp, tmp_path, capsys):
    model, _ = digits_mlp
    path = save_model(tmp_path / "m.npz", model)
    out = tmp_path / "rep"
    assert main(["search", str(path), "--acc-bits", "16", "--constraint", "act-y", "--out", str(out),
                 "--no-progress", "--samples", "100"]) == 0
    capsys.readouterr()
    assert main(["eval", str(path), "--config", str(out / "m_acc16_act-y_wrap_config.json")]) == 0
    text = capsys.readouterr().out
    assert "fixed-point accuracy" in text and "overflow_count" in text
    (tmp_path / "bad.json").write_text("not json")
    assert main(["eval", str(path), "--config", str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
