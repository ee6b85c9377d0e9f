"""Judd's sweeps and tolerance search, de Bruin's accumulator search, and their CLI."""

import copy
from pathlib import Path

import numpy as np
import pytest

from fxpsim.cli import main
from fxpsim.cli import search as cli_search
from fxpsim.config import NetworkConfig
from fxpsim.constraints import CONSTRAINTS
from fxpsim.errors import FxpsimError
from fxpsim.modelfile import load_model, save_model
from fxpsim.qformat import MAX_WIDTH
from fxpsim.search import (acc_bits_sweep, accumulator_search, check_acc_bits, layer_ranges,
                           overflow_case_study, required_accumulator_table, tolerance_search,
                           traffic_ratio, layer_shapes)
from fxpsim.simulate import Evaluator, Simulator, profile
from fxpsim.search.sweeps import WHAT, sweep, wide_config

MODELS = Path(__file__).resolve().parents[1] / "models"
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
    with pytest.raises(FxpsimError, match=r"layer fc1 .*needs at least \d+ bits") as bad:
        check_acc_bits("wc", layer_ranges(ev, prof), 4)
    assert "--" not in str(bad.value)  # a library message names no CLI flag


@pytest.mark.parametrize("acc_bits", [0, MAX_WIDTH + 1, True, 16.0])
def test_acc_bits_outside_the_datapath_is_refused_once_without_cli_flags(setup, acc_bits):
    """Issue 13: acc_bits was range-checked in several places, one library message naming --acc-bits."""
    model, data, sim, ev, prof = setup
    want = rf"acc_bits={acc_bits!r} must be a whole number of bits in 1\.\.{MAX_WIDTH}"
    with pytest.raises(FxpsimError, match=want) as bad:
        check_acc_bits("act-w", layer_ranges(ev, prof), acc_bits)
    assert "--" not in str(bad.value)


def test_cli_acc_bits_bound_is_max_width(monkeypatch):
    """The CLI's --acc-bits type checks against qformat.MAX_WIDTH, not a literal 62."""
    monkeypatch.setattr(cli_search, "MAX_WIDTH", 40)
    with pytest.raises(FxpsimError, match=r"--acc-bits 41 must be in 1\.\.40"):
        cli_search._acc_bits("41")
    assert cli_search._acc_bits("40") == 40


def test_layer_shapes_and_ranges_are_the_stages(setup):
    """Traffic counts and constraint ranges derive from the stages (no copies of their fields)."""
    model, data, sim, ev, prof = setup
    shapes, ranges = layer_shapes(ev), layer_ranges(ev, prof)
    n_in = ev.x[0].size
    for stage, shape, r, p, (_, stage_out) in zip(sim.stages, shapes, ranges, prof, ev.trace):
        assert shape is stage and r.stage is stage
        assert (shape.weights, shape.inputs, shape.outputs) == (stage.W.size, n_in, stage_out[0].size)
        assert (r.name, r.fan_in, r.max_abs_x, r.max_abs_acc) == (stage.name, stage.fan_in, p.max_abs_x,
                                                                  p.max_abs_acc)
        n_in = stage_out[0].size


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


class _RecordingEvaluator(Evaluator):
    """An Evaluator that records every (config, layer or None, value) a search asks it for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def accuracy(self, config):
        value = super().accuracy(config)
        self.calls.append((config, None, value))
        return value

    def layer_error(self, config, i):
        value = super().layer_error(config, i)
        self.calls.append((config, i, value))
        return value


def test_a_shared_evaluator_equals_a_fresh_one_on_every_config_a_search_visits():
    """Issue 13 item 4: no cache may carry one config's state into another config's answer.

    Every search runs through ONE evaluator, as ``search --all`` and ``--acc-table`` do (a2q
    after the plain constraints of the same formats, tolerances chained); then every config
    it visited runs on a fresh Evaluator of its own: the same accuracy and layer errors as
    the search saw, the same raw stage outputs and statistics as the shared one gives.
    """
    model = load_model(MODELS / "digits-cnn.npz")
    data = load_dataset("digits")
    sim = Simulator(model)
    pristine = Evaluator(sim, data.x_train[:100], data.y_train[:100])  # never used: a template
    shared = _RecordingEvaluator(sim, pristine.x, pristine.y, prepared=True)
    prof = profile(sim, shared.x, prepared=True)
    found = {}
    for constraint in CONSTRAINTS:  # search --acc-bits 16 --all
        for overflow in ("wrap", "clip"):
            found[constraint, overflow] = accumulator_search(shared, prof, 16, constraint, overflow)[0]
    acc_bits_sweep(shared, prof, bits=(16,))  # the same configs again, now from the caches
    start = tolerance_search(shared, prof, 0.01).config  # search --tolerance: chained
    tolerance_search(shared, prof, 0.05, start=start, max_steps=3)
    for what in WHAT:
        sweep(shared, prof, what, range(-1, 10, 2))
    required_accumulator_table(shared, prof)
    overflow_case_study(shared, found["act-y", "wrap"], (16, 13, 10))
    asked: dict = {}  # config -> {layer (None: accuracy) -> values the search got}
    for config, i, value in shared.calls:
        asked.setdefault(config, {}).setdefault(i, set()).add(value)
    assert {c.a2q for cfg in asked for c in cfg} == {False, True}
    for config, values in asked.items():
        # a deep copy of the never-used template is a fresh Evaluator (empty caches, its own
        # Simulator) without recomputing the float trace; the backend module is shared
        fresh = copy.deepcopy(pristine, {id(sim.backend): sim.backend})
        upto = len(config) if None in values else max(values) + 1
        for (s_k, s_y, s_st), (f_k, f_y, f_st) in zip(shared.stage_outputs(config, upto),
                                                      fresh.stage_outputs(config, upto)):
            np.testing.assert_array_equal(s_k, f_k)
            np.testing.assert_array_equal(s_y, f_y)
            assert s_st == f_st
        for i, seen in values.items():
            assert seen == {fresh.accuracy(config) if i is None else fresh.layer_error(config, i)}


def test_all_zero_weights_are_named_not_an_impossible_accumulator(tmp_path, capsys):
    """A model whose weights are all 0 used to read "no accumulator up to 62 bits admits a solution" (issue 14)."""
    m = load_model(Path(__file__).resolve().parents[1] / "models" / "digits-cnn.npz")
    for layer in m.network.layers:
        if "W" in getattr(layer, "params", {}):
            layer.params["W"][...] = 0
    save_model(tmp_path / "zero.npz", m)
    assert main(["search", str(tmp_path / "zero.npz"), "--acc-bits", "16", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "every weight is 0" in err and "trained model" in err
