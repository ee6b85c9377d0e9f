"""DAG (residual) networks on the integer datapath: Add/Concat against their Python-int twin, whole
networks against the float model and the Python-int kernels, searches and the compiled plan."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim.errors import FxpsimError
from fxpsim.kernels import reference
from fxpsim.network import build_network
from fxpsim.qformat import Overflow, QFormat, Rounding, quantize
from fxpsim.search import accumulator_search
from fxpsim.simulate import Evaluator, Simulator, config_from_profile, profile
from fxpsim.simulate.merge import add_int, concat_int
from fxpsim.sweep import wide_config
from strategies import deterministic_rounding_st, overflow_st, qformat_st, raw_array_st

from .merge_reference import add_reference, concat_reference, convert_int


@st.composite
def merge_case_st(draw, max_inputs=3):
    n = draw(st.integers(2, max_inputs))
    fmt_y = draw(qformat_st(max_width=62 if n == 2 else 61))
    fmts = [draw(st.one_of(st.just(fmt_y), qformat_st())) for _ in range(n)]
    raws = [draw(raw_array_st(f, (2, 3))) for f in fmts]
    return raws, fmts, fmt_y


@given(merge_case_st(), deterministic_rounding_st, overflow_st)
def test_add_equals_python_int_twin(case, rounding, overflow):
    raws, fmts, fmt_y = case
    got = add_int(raws, fmts, fmt_y, rounding, overflow)
    assert got.dtype == np.int64
    assert got.reshape(-1).tolist() == add_reference(raws, fmts, fmt_y, rounding, overflow)


@given(merge_case_st(), deterministic_rounding_st)
def test_concat_equals_python_int_twin(case, rounding):
    raws, fmts, fmt_y = case
    assert concat_int(raws, fmts, fmt_y, rounding).reshape(-1).tolist() == concat_reference(raws, fmts, fmt_y,
                                                                                               rounding)


@pytest.mark.parametrize("width", [1, 2, 8, 62])
def test_add_saturates_and_wraps_at_the_most_negative_values(width):
    fmt = QFormat(width, 0)
    lo, hi = np.array([[fmt.raw_min]]), np.array([[fmt.raw_max]])
    assert add_int([lo, lo], [fmt, fmt], fmt, Rounding.NEAREST_EVEN, Overflow.CLIP)[0, 0] == fmt.raw_min
    assert add_int([hi, hi], [fmt, fmt], fmt, Rounding.NEAREST_EVEN, Overflow.CLIP)[0, 0] == fmt.raw_max
    assert add_int([lo, lo], [fmt, fmt], fmt, Rounding.NEAREST_EVEN, Overflow.WRAP)[0, 0] == 0  # -2^w wraps to 0
    assert add_int([lo, hi], [fmt, fmt], fmt, Rounding.NEAREST_EVEN, Overflow.WRAP)[0, 0] == -1
    wide = QFormat(min(width + 1, 62), -1 if width == 62 else 0)  # converted into fmt first: saturates, then the sum saturates again
    big = np.array([[wide.raw_min]])
    assert add_int([big, big], [wide, wide], fmt, Rounding.FLOOR, Overflow.CLIP)[0, 0] == fmt.raw_min
    assert convert_int(wide.raw_min, wide, fmt, Rounding.FLOOR) == fmt.raw_min


def test_add_refuses_sums_int64_cannot_hold():
    fmt = QFormat(62, 0)
    with pytest.raises(FxpsimError, match="exact sum of 3 inputs in Q62.0 needs 64 bits"):
        add_int([np.zeros((1, 1), np.int64)] * 3, [fmt] * 3, fmt, Rounding.FLOOR, Overflow.CLIP)


RES = "conv4x3p1-bn-relu-res[conv4x3p1-bn-relu-conv4x3p1g2-bn]-relu-maxpool2-conv6x1-relu6-concat@10,12-gap-fc10"


def _net(spec=RES, seed=0):
    net = build_network(spec, (1, 8, 8), 10, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for layer in net.layers:  # non-trivial BatchNorm statistics
        if layer.kind == "batchnorm":
            n = layer.params["gamma"].shape[0]
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, n)
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, n)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, n)
    return net


def _inputs(n=32, seed=3):
    return np.random.default_rng(seed).normal(0, 1, (n, 1, 8, 8))


def test_stages_of_a_dag():
    sim = Simulator(_net())
    assert sim.is_dag and sim.names == ["conv1", "conv2", "conv3", "conv4", "fc1"]
    assert [(s.source, s.kernel_node) for s in sim.stages] == [(-1, 2), (2, 5), (5, 7), (10, 11), (14, 15)]
    assert [[op[1] for op in s.ops] for s in sim.stages][2:4] == [["add", "relu", "maxpool2d"],
                                                                   ["clip", "concat", "globalavgpool"]]
    assert sim.stages[2].W.shape == (4, 4, 3, 3) and not sim.stages[2].W[:2, 2:].any()  # groups: zeros


def test_wide_formats_match_the_float_model():
    net = _net()
    x = _inputs()
    sim = Simulator(net)
    res = sim.simulate(x, wide_config(profile(sim, x), frac_bits=18))
    float_logits = net.forward(x.astype(np.float64))
    np.testing.assert_allclose(res.logits, float_logits, atol=1e-3)
    assert np.array_equal(res.predictions, float_logits.argmax(1))


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
def test_narrow_dag_equals_python_int_kernels_and_hand_composition(overflow):
    net = _net(seed=4)
    x = _inputs(4, seed=9)
    sim = Simulator(net)
    cfg = config_from_profile(profile(sim, x), weight_bits=5, data_bits=5, acc_bits=9, overflow=overflow)
    cfg = cfg.with_layer(2, output_overflow=overflow)
    fast = sim.simulate(x, cfg)
    slow = Simulator(net, backend=reference).simulate(x, cfg)
    np.testing.assert_array_equal(fast.logits, slow.logits)
    assert fast.layer_stats == slow.layer_stats
    assert sum(s.overflow_count for s in fast.layer_stats) > 0
    # the residual add by hand: conv3's kernel output plus conv1's output (node 2) converted to conv3's fmt_y
    xf = sim.prepare(x)
    params = [sim.stage_params(i, c) for i, c in enumerate(cfg)]
    hits = []
    for i in range(3):
        hits.append(sim.step(i, cfg, xf, hits, params[i]))
    fy = cfg[2].fmt_y
    want = add_reference([hits[2][0], hits[0][1]], [fy, cfg[0].fmt_y], fy, cfg[2].rounding, overflow)
    assert hits[2][3][8].reshape(-1).tolist() == want
    assert hits[2][3][8].min() >= fy.raw_min and hits[2][3][8].max() <= fy.raw_max


def test_skip_from_the_network_input_uses_the_first_input_format():
    net = build_network("conv1x3p1-add@in,0-fc10", (1, 8, 8), 10, seed=1)
    x = _inputs(8)
    sim = Simulator(net)
    cfg = wide_config(profile(sim, x), frac_bits=12)
    hits = [sim.step(0, cfg, sim.prepare(x), [], sim.stage_params(0, cfg[0]))]
    x0 = quantize(x, cfg[0].fmt_x, cfg[0].rounding, "clip", 0)
    want = add_reference([x0, hits[0][0]], [cfg[0].fmt_x, cfg[0].fmt_y], cfg[0].fmt_y, cfg[0].rounding,
                         cfg[0].output_overflow)
    assert hits[0][1].reshape(-1).tolist() == want


def test_compile_refuses_a_dag_and_search_and_evaluator_run_it():
    net = _net()
    x, y = _inputs(64), np.random.default_rng(0).integers(0, 10, 64)
    sim = Simulator(net)
    prof = profile(sim, x)
    cfg = config_from_profile(prof, 8, 8, 24, "clip")
    with pytest.raises(FxpsimError, match="Simulator.compile runs chains of layers only"):
        sim.compile(cfg)
    ev = Evaluator(sim, x, y)
    assert ev.accuracy(cfg) == sim.simulate(x, cfg, y).accuracy
    assert ev.accuracy(cfg.with_layer(3, acc_bits=12)) == sim.simulate(x, cfg.with_layer(3, acc_bits=12), y).accuracy
    found, choices = accumulator_search(ev, prof, 16)
    assert found.names == sim.names and all(c.acc_bits == 16 for c in found)
    assert sim.simulate(x, found, y).accuracy == ev.accuracy(found)


def test_shipped_residual_model_loads_saves_and_runs(tmp_path):
    from fxpsim.modelfile import load_model, save_model
    from fxpsim.train.data import load_dataset

    model = load_model("models/digits-resnet.npz")
    assert model.network.is_dag and model.network.spec().count("res[") == 1
    save_model(tmp_path / "again.npz", model)
    back = load_model(tmp_path / "again.npz")
    assert back.network.to_config() == model.network.to_config()
    digits = load_dataset("digits")
    x = model.preprocess.apply(digits.x_test[:100])
    np.testing.assert_array_equal(back.network.forward(x), model.network.forward(x))
    sim = Simulator(model)
    res = sim.simulate(digits.x_test, wide_config(profile(sim, digits.x_test), frac_bits=16), digits.y_test)
    assert res.accuracy == res.float_accuracy == pytest.approx(model.metadata["test_accuracy"], abs=1e-9)


@pytest.mark.parametrize("target, what", [(("--vectors", "2", "--out", "vec"), "export --vectors"),
                                          (("--hls4ml", "h.json"), "export --hls4ml")])
def test_chain_only_exports_refuse_a_dag_in_one_line(target, what, tmp_path, capsys, monkeypatch):
    from fxpsim.cli import main

    monkeypatch.chdir(tmp_path)
    import shutil
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "models" / "digits-resnet.npz", "m.npz")
    shutil.copy(root / "reports" / "digits-resnet_acc16_act-w_wrap_config.json", "c.json")
    assert main(["export", "m.npz", "--config", "c.json", "--force", *target]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{what} runs chains of layers only" in err
