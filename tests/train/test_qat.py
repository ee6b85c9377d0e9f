"""Quantization- and accumulator-aware fine-tuning (fxpsim.train.qat, fxpsim finetune).

The forward pass must be the simulator's integer run bit for bit; the backward is the clipped
straight-through estimator, checked against central differences of its surrogate (every
quantizer replaced by its saturation) and by hand on one layer; the A2Q projection must make
overflow impossible, analytically and on adversarial inputs.
"""

import numpy as np
import pytest
from gradcheck import numeric_grad
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import deterministic_rounding_st

from fxpsim.cli import main as cli_main
from fxpsim.cli.common import calibration_set
from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.datapath import reference
from fxpsim.experiments.prune import Retraining, load_for_retraining
from fxpsim.experiments.qat import QatStudy, finetune_model, run_qat_study
from fxpsim.experiments.reproduce import ROOT
from fxpsim.graph.build import build_network
from fxpsim.modelfile import DEFAULT_MODEL, load_model
from fxpsim.qformat import QFormat, dequantize, quantize
from fxpsim.search import accumulator_search
from fxpsim.simulate import Evaluator, Simulator, build_stages, profile
from fxpsim.train.qat import (
    FineTune,
    QATNetwork,
    a2q_bound,
    a2q_project,
    accumulator_bounds,
    fine_tune,
    x_max,
)

# ---------------------------------------------------------------- helpers


def net64(spec, shape, seed=0, n_classes=4):
    """A float64 network with random BatchNorm statistics and biases (so the fold matters)."""
    net = build_network(spec, shape, n_classes, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.kind == "batchnorm":
            n = layer.num_features
            layer.params["gamma"][...] = 1 + 0.3 * rng.standard_normal(n)
            layer.params["beta"][...] = 0.2 * rng.standard_normal(n)
            layer.buffers["running_mean"][...] = 0.1 * rng.standard_normal(n)
            layer.buffers["running_var"][...] = 0.5 + rng.random(n)
        if "W" in layer.params:
            layer.params["W"] *= 2.5  # some weights beyond Q1.6: the weight STE must cut them
            layer.params["b"][...] = 0.1 * rng.standard_normal(layer.params["b"].shape)
    return net


def uniform_config(net, fmt_w="Q1.6", fmt_x="Q2.5", fmt_y="Q2.4", acc_bits=12, **kw):
    return NetworkConfig(tuple(LayerConfig(s.name, fmt_w, fmt_x, fmt_y, acc_bits=acc_bits, **kw)
                               for s in build_stages(net)))


@pytest.fixture(scope="module")
def digits():
    """The shipped digits CNN with its splits, a calibration evaluator and its profile."""
    setup = load_for_retraining(DEFAULT_MODEL, Retraining(progress=False))
    sim = Simulator(setup.model)
    ev = Evaluator(sim, setup.splits[2], setup.splits[3], prepared=True)
    return setup, sim, ev, profile(sim, ev.x, prepared=True)


def searched(digits, bits, constraint="act-w", overflow="wrap"):
    _, _, ev, prof = digits
    return accumulator_search(ev, prof, bits, constraint, overflow)[0]


# ---------------------------------------------------------------- forward = the integer run


def committed_config(name: str) -> NetworkConfig:
    """A config ``fxpsim search --acc-bits 16 --all`` wrote for the digits CNN (reports/)."""
    return NetworkConfig.load(ROOT / "reports" / f"digits-cnn_acc16_{name}_config.json")


@pytest.mark.parametrize("name,acc_bits,rounding", [("act-w_wrap", 16, "nearest-even"),
                                                    ("act-y_clip", 12, "nearest-even"),
                                                    ("act-y_wrap", 12, "stochastic")])
def test_forward_is_the_simulators_integer_run(digits, name, acc_bits, rounding):
    setup, sim, _, _ = digits
    config = committed_config(name).with_all(acc_bits=acc_bits, rounding=rounding)
    x = setup.data.x_test[:200]
    expected = sim.simulate(x, config)
    if acc_bits < 16:
        assert sum(s.overflow_count for s in expected.layer_stats) > 0  # wrap/clip on the way is exercised
    logits = QATNetwork(setup.model, config).forward(sim.prepare(x))
    np.testing.assert_array_equal(logits, expected.logits)


def test_ideal_accumulators_in_training_only(digits):
    """``simulate_acc=False``: training forwards run unbounded accumulators, test mode the config's."""
    setup, sim, _, _ = digits
    config = committed_config("act-y_clip").with_all(acc_bits=12)
    x = sim.prepare(setup.data.x_test[:100])
    q = QATNetwork(setup.model, config, simulate_acc=False)
    ideal = sim.simulate(x, config.with_all(overflow="ideal"), prepared=True).logits
    np.testing.assert_array_equal(q.forward(x, training=True), ideal)
    np.testing.assert_array_equal(q.forward(x), sim.simulate(x, config, prepared=True).logits)
    assert not np.array_equal(ideal, q.forward(x))


def test_forward_with_batchnorm_on_the_python_int_twin():
    net = net64("conv3x3p1-bn-relu-maxpool2-fc5-bn-relu-fc4", (2, 6, 6))
    config = uniform_config(net, overflow="clip", acc_bits=10)
    x = np.random.default_rng(1).standard_normal((4, 2, 6, 6))
    expected = Simulator(net, backend=reference).simulate(x, config, prepared=True).logits
    np.testing.assert_array_equal(QATNetwork(net, config).forward(x), expected)
    np.testing.assert_array_equal(QATNetwork(net, config, backend=reference).forward(x), expected)


# ---------------------------------------------------------------- backward


@pytest.mark.parametrize("spec,shape,overflow", [
    ("conv3x3p1-bn-relu-maxpool2-fc5-bn-relu-fc4", (2, 6, 6), "wrap"),
    ("conv3x3p1-bn-relu-maxpool2-fc5-bn-relu-fc4", (2, 6, 6), "clip"),
    ("conv3x3-bn-tanh-avgpool2-fc5-sigmoid-fc4", (1, 8, 8), "clip"),
    ("fc6-bn-relu-fc4", (7,), "wrap"),
])
def test_ste_backward_is_the_gradient_of_its_surrogate(spec, shape, overflow):
    """Every new backward (fold, masks, post ops, chaining) against central differences."""
    net = net64(spec, shape)
    q = QATNetwork(net, uniform_config(net, overflow=overflow), quantize=False)
    rng = np.random.default_rng(5)
    x = 1.5 * rng.standard_normal((3, *shape))
    g = rng.standard_normal(q.forward(x, training=True).shape)

    def loss():
        return float(np.sum(q.forward(x) * g))

    q.forward(x, training=True)
    dx = q.backward(g)
    analytic = {k: grad.copy() for k, _, grad in net.params_and_grads()}
    masks = [m for t in q._tapes for m in (t.mask_x, t.mask_w, t.mask_k)]
    assert any(not m.all() for m in masks) and all(m.any() for m in masks)  # the STE cuts, but not all
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-8)
    for key, p, _ in net.params_and_grads():
        np.testing.assert_allclose(analytic[key], numeric_grad(loss, p), rtol=1e-5, atol=1e-8, err_msg=key)
    q.forward(x, training=True)
    assert q.backward(g, input_grad=False) is None


def test_ste_of_one_layer_by_hand():
    """Integer mode: dW = x_q^T (g * 1[y in range]) * 1[W in fmt_w], dx = (g * mask) W_q^T * 1[x in fmt_x]."""
    rng = np.random.default_rng(3)
    net = build_network("fc3", (5,), 3, seed=0, dtype=np.float64)
    w = net.layers[0].params["W"]
    w[...] = rng.uniform(-1.5, 1.5, w.shape)  # Q1.4 holds [-1, 0.9375]: some weights saturate
    net.layers[0].params["b"][...] = [0.3, -0.2, 0.1]
    cfg = LayerConfig("fc1", "Q1.4", "Q2.3", "Q2.2", acc_bits=16)
    x = rng.uniform(-3, 3, (6, 5))
    g = rng.standard_normal((6, 3))
    q = QATNetwork(net, NetworkConfig((cfg,)))
    q.forward(x, training=True)
    dx = q.backward(g)
    xq = dequantize(quantize(x, cfg.fmt_x), cfg.fmt_x)
    wq = dequantize(quantize(w, cfg.fmt_w), cfg.fmt_w)
    acc = xq @ wq + dequantize(quantize(net.layers[0].params["b"], cfg.fmt_bias), cfg.fmt_bias)
    gy = g * ((acc >= cfg.fmt_y.min_value) & (acc <= cfg.fmt_y.max_value))
    w_in = (w >= cfg.fmt_w.min_value) & (w <= cfg.fmt_w.max_value)
    x_in = (x >= cfg.fmt_x.min_value) & (x <= cfg.fmt_x.max_value)
    assert not w_in.all() and not x_in.all() and not (gy == g).all()
    np.testing.assert_allclose(net.layers[0].grads["W"], (xq.T @ gy) * w_in, rtol=1e-12)
    np.testing.assert_allclose(net.layers[0].grads["b"], gy.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(dx, (gy @ wq.T) * x_in, rtol=1e-12)
    assert np.all(net.layers[0].grads["W"][~w_in] == 0)  # zero outside the clip range


# ---------------------------------------------------------------- accumulator-aware


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31), acc_bits=st.integers(6, 16), bw_x=st.integers(2, 8), signed=st.booleans(),
       rounding=deterministic_rounding_st)
def test_a2q_projection_makes_overflow_impossible(seed, acc_bits, bw_x, signed, rounding):
    """After the projection no input of fmt_x overflows: the analytic bound, and the Python-int
    twin on the adversarial inputs x_i = -x_max sign(w_ic) (wrap and clip alike)."""
    rng = np.random.default_rng(seed)
    net = build_network("fc4", (12,), 4, seed=seed % 1000, dtype=np.float64)
    net.layers[0].params["W"] *= 4
    net.layers[0].params["b"][...] = rng.uniform(-0.5, 0.5, 4)
    fmt_x = QFormat(2, bw_x - 2, signed)
    cfg = LayerConfig("fc1", "Q1.5", fmt_x, "Q6.4", acc_bits=acc_bits, overflow="clip", rounding=rounding)
    config = NetworkConfig((cfg,))
    a2q_project(net, config)
    assert all(row["safe"] for row in accumulator_bounds(net, config))
    w_raw, b_raw = Simulator(net).quantized_params(0, cfg)
    assert np.all(np.abs(w_raw).sum(axis=0) <= a2q_bound(b_raw, cfg))
    lo, hi = fmt_x.raw_min, fmt_x.raw_max
    x = np.where(w_raw.T > 0, lo if signed else hi, hi if signed else lo)  # one adversary per channel
    for overflow in ("wrap", "clip", "ideal"):
        res = reference.dense(x, w_raw, b_raw, LayerConfig("fc1", "Q1.5", fmt_x, "Q6.4", acc_bits=acc_bits,
                                                           overflow=overflow, rounding=rounding))
        assert res.stats.overflow_count == 0
        assert cfg.acc_min <= res.acc.min() and res.acc.max() <= cfg.acc_max


def test_acc_aware_fine_tune_cannot_overflow(digits):
    """act-y formats (found for 16 bits) overflow a 12-bit accumulator post-training; accumulator-aware fine-tuning removes it by
    construction: analytic bound, and max |acc| / max |prefix| of the test run within BW_acc."""
    setup, sim, _, _ = digits
    config = committed_config("act-y_clip").with_all(acc_bits=12)
    x_test, y_test = setup.data.x_test, setup.data.y_test
    before = sim.simulate(x_test, config, y_test)
    assert sum(s.overflow_count for s in before.layer_stats) > 0
    run = FineTune(epochs=1, lr=1e-3, acc_aware=True)
    res = fine_tune(setup.model, config, setup.splits[:4], setup.base, run)
    assert res.rescaled_channels > 0
    assert all(row["safe"] for row in accumulator_bounds(res.model, config))
    after = Simulator(res.model).simulate(x_test, config, y_test, prefix_stats=True)
    for stats, cfg in zip(after.layer_stats, config):
        assert stats.overflow_count == 0
        assert stats.max_abs_acc <= -cfg.acc_min and stats.max_abs_prefix <= -cfg.acc_min
    assert res.model.metadata["seed"] == setup.model.metadata["seed"]  # the split (calibration) is unchanged


def test_x_max_of_signed_and_unsigned_formats():
    assert x_max(QFormat(2, 3)) == 16 and x_max(QFormat(2, 3, signed=False)) == 31


# ---------------------------------------------------------------- fine-tuning


def test_fine_tuning_improves_the_integer_run_and_repeats(digits):
    """act-w at BW_acc 10: the post-training config loses a third of the accuracy; 2 epochs recover
    most of it (never worse than post-training minus 1 point); the same seed gives the same weights."""
    setup, sim, _, _ = digits
    config = searched(digits, 10)
    x_test, y_test = setup.data.x_test, setup.data.y_test
    ptq = sim.simulate(x_test, config, y_test).accuracy
    run = FineTune(epochs=2, lr=1e-3, seed=1)
    first = fine_tune(setup.model, config, setup.splits[:4], setup.base, run)
    tuned = Simulator(first.model).simulate(x_test, config, y_test).accuracy
    assert tuned >= ptq - 0.01 and tuned > ptq + 0.1, (ptq, tuned)
    assert first.kept_epoch >= 1 and first.val_accuracy > first.start_val_accuracy
    again = fine_tune(setup.model, config, setup.splits[:4], setup.base, run)
    other = fine_tune(setup.model, config, setup.splits[:4], setup.base, FineTune(epochs=2, lr=1e-3, seed=2))
    state, same, diff = (r.model.network.state_dict() for r in (first, again, other))
    assert all(np.array_equal(state[k], same[k]) for k in state)
    assert any(not np.array_equal(state[k], diff[k]) for k in state)
    assert setup.model.network.state_dict().keys() == state.keys()  # the input model is left alone
    np.testing.assert_array_equal(setup.model.network.layers[0].params["W"],
                                  load_model(DEFAULT_MODEL).network.layers[0].params["W"])


def test_finetune_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="epochs=0 must be a whole number >= 1"):
        FineTune(epochs=0)
    with pytest.raises(ValueError, match="lr=2"):
        FineTune(lr=2)


# ---------------------------------------------------------------- CLI and study


def test_cli_finetune_writes_a_model_that_eval_reproduces(digits, tmp_path, capsys):
    setup, sim, _, _ = digits
    cfg_path = tmp_path / "cfg.json"
    searched(digits, 10).save(cfg_path)
    out = tmp_path / "ft.npz"
    argv = ["finetune", str(DEFAULT_MODEL), "--config", str(cfg_path), "--epochs", "1", "--lr", "0.001",
            "--out", str(out), "--quiet"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    model = load_model(out)
    acc = Simulator(model).simulate(setup.data.x_test, NetworkConfig.load(cfg_path), setup.data.y_test).accuracy
    assert model.metadata["finetune"]["test_accuracy_fixed_point"] == acc
    assert f"{acc:.4f}" in printed and "accumulator extremes" in printed
    assert cli_main(["eval", str(out), "--config", str(cfg_path)]) == 0
    assert f"fixed-point accuracy {acc * 100:.2f} %" in capsys.readouterr().out
    bound = NetworkConfig.load(tmp_path / "ft_config.json")  # the same formats, made for the fine-tuned model
    assert bound.layers == NetworkConfig.load(cfg_path).layers and bound.model.file == "ft.npz"
    assert cli_main(["eval", str(out), "--config", str(tmp_path / "ft_config.json")]) == 0
    assert f"fixed-point accuracy {acc * 100:.2f} %" in capsys.readouterr().out
    assert cli_main(["eval", str(DEFAULT_MODEL), "--config", str(tmp_path / "ft_config.json")]) == 2
    assert "ft.npz" in capsys.readouterr().err  # made for the fine-tuned weights, not the start's


@pytest.mark.parametrize("change,needle", [
    ({"--epochs": "0"}, "--epochs '0' is not a whole number >= 1"),
    ({"--config": "reports/lenet5-mnist_acc16_act-w_wrap_config.json"}, "was made for the model lenet5-mnist.npz"),
    ({"--out": "{tmp}/no/such/dir/m.npz"}, "does not exist"),
    ({"--out": "{tmp}/m.txt"}, "must end in .npz"),
])
def test_cli_finetune_refusals_are_one_line(change, needle, tmp_path, capsys):
    args = {"--config": str(ROOT / "reports/digits-cnn_acc16_act-w_wrap_config.json"), "--epochs": "1",
            "--out": str(tmp_path / "m.npz")}
    args.update({k: v.format(tmp=tmp_path) if "{tmp}" in v else (str(ROOT / v) if v.startswith("reports/") else v)
                 for k, v in change.items()})
    argv = ["finetune", str(DEFAULT_MODEL)] + [a for kv in args.items() for a in kv]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_study_rows_on_two_widths(digits):
    """The study's table: three methods per width, the acc-aware rows safe by construction."""
    setup, _, _, _ = digits
    study = QatStudy("digits-cnn", "test", bits=(4, 10), constraints=("act-w",), run=FineTune(epochs=1, lr=1e-3))
    report = run_qat_study(study, setup, calibration_set(setup.model, setup.data, 500, 0))
    t = report.table
    assert list(t["method"]) == ["post-training", "fine-tuned", "acc-aware"] * 2
    assert t["accuracy"].iloc[:3].isna().all()  # no act-w solution with a 4-bit accumulator (conv2 needs 5): empty rows
    done = t.iloc[3:]
    assert done["worst_case_safe"].iloc[[0, 2]].all()  # act-w post-training, and acc-aware: safe
    assert (done["accuracy"] > 0).all() and (done["overflow_count"] == 0).all()
    assert set(report.pivot().columns) == {"acc_bits", "act-w post-training", "act-w fine-tuned", "act-w acc-aware"}


def test_finetune_model_reports_before_and_after(digits):
    setup, _, _, _ = digits
    outcome = finetune_model(setup, searched(digits, 11), FineTune(epochs=1, lr=1e-3))
    df = outcome.summary()
    assert list(df["model"]) == ["before", "after"]
    assert df["fixed_point_accuracy"].iloc[1] == outcome.after.accuracy
    assert df["normalized_accuracy"].iloc[0] == outcome.before.accuracy / outcome.float_before
