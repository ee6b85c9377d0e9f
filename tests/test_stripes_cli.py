"""`fxpsim stripes`: trained models timed by their shapes, profiles searched/given/loaded, bad input."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxpsim.cli import main
from fxpsim.cli.common import calibration_set
from fxpsim.config import NetworkConfig
from fxpsim.errors import FxpsimError
from fxpsim.experiments.stripes import (StripesStudy, check_bit_serial, fold_input_scaling, nonnegative_inputs,
                                        run_study, unsigned_inputs)
from fxpsim.modelfile import Model, load_model, save_model
from fxpsim.network import build_network
from fxpsim.qformat import QFormat
from fxpsim.tables import format_csv_float
from fxpsim.simulate import Evaluator, Simulator, profile
from fxpsim.sweep import set_data_format, wide_config
from fxpsim.timing.stripes import (SHAPE_PRESETS, AcceleratorConfig, LayerShape, parse_shapes, profile_from_config,
                                   shapes_from_network, time_network)
from fxpsim.train.data import Preprocess, load_dataset
from fxpsim.train.trainer import TrainConfig, train

TINY = "conv4x3-relu-conv8x3-relu-maxpool2-fc10"  # 8x8 -> 6x6 -> 4x4 -> 2x2: trains in seconds


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data = load_dataset("digits")
    model, _ = train(data, TINY, TrainConfig(epochs=15, seed=0, lr=1e-2), progress=False)
    assert model.metadata["test_accuracy"] > 0.85
    path = tmp_path_factory.mktemp("models") / "tiny.npz"
    save_model(path, model)
    return path, model, data


def _run(capsys, *argv):
    rc = main(["stripes", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _bad(capsys, *argv):
    rc, out, err = _run(capsys, *argv)
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- shapes of trained networks

@pytest.mark.parametrize("arch, in_shape", [("lenet5-caffe", (1, 28, 28)), ("lenet5", (1, 28, 28)),
                                            ("cnn-small", (1, 8, 8)), (TINY, (1, 8, 8)),
                                            ("conv6x5s2p1-bn-relu-fc32-relu-fc10", (3, 15, 13))])
def test_shapes_from_network_match_the_datapath(arch, in_shape):
    """Names are the simulator's stages; MACs = fan-in x outputs of each kernel on a real input."""
    net = build_network(arch, in_shape, 10, seed=1)
    shapes = shapes_from_network(net)
    sim = Simulator(net)
    assert [s.name for s in shapes] == sim.names
    x = np.random.default_rng(0).normal(size=(1, *in_shape))
    for s, stage, (kernel_out, _) in zip(shapes, sim.stages, sim.float_trace(x)):
        assert s.kind == {"conv2d": "conv", "dense": "fc"}[stage.kind]
        assert s.macs == stage.fan_in * kernel_out[0].size
        assert s.macs == stage.macs
        if s.kind == "conv":
            assert (s.out_channels, s.out_h, s.out_w) == kernel_out.shape[1:]
            c, h, w = stage.in_shape  # the stage's shapes agree with the conv geometry of its layer
            assert s == LayerShape.conv(stage.name, c, stage.out_channels, stage.kernel_size, (h, w),
                                        stage.stride, stage.padding)


def test_caffe_lenet_model_times_as_the_preset_and_the_paper():
    """A Caffe-LeNet network's own shapes give Table I's ideal speedups (3-3 -> 5.33, 2-3 -> 7.33)."""
    from_model = shapes_from_network(build_network("lenet5-caffe", (1, 28, 28), 10))
    preset, _ = parse_shapes("lenet-caffe")
    assert from_model == preset
    conv = from_model[:2]
    assert round(time_network(conv, "3-3").ideal_speedup, 2) == 5.33
    assert round(time_network(conv, "2-3").ideal_speedup, 2) == 7.33
    spec_shapes, desc = parse_shapes("conv20x5-maxpool2-conv50x5-maxpool2-fc500-relu-fc10", "1x28x28")
    assert spec_shapes == preset and "1x28x28" in desc


def test_alexnet_preset_has_caffe_shapes():
    shapes = SHAPE_PRESETS["alexnet"][1]()
    conv = [s for s in shapes if s.kind == "conv"]
    assert [(s.out_h, s.groups) for s in conv] == [(55, 1), (27, 2), (13, 1), (13, 2), (13, 2)]
    assert sum(s.macs for s in shapes) == 724_406_816  # Caffe AlexNet's 724M MACs (Sze et al. 2017)


@pytest.mark.parametrize("text, in_shape, match", [
    ("resnet", None, "not a preset"),
    ("lenet-caffe", "1x28x28", "fixes its own input"),
    ("conv4x3-fc10", "1x2x2", "does not fit"),
    ("conv4x3-fc10", "1x-8", "bad input shape"),
    ("maxpool2-relu", "1x8x8", "no Conv2D or Dense"),
])
def test_bad_shapes(text, in_shape, match):
    with pytest.raises(FxpsimError, match=match):
        parse_shapes(text, in_shape)


# ---------------------------------------------------------------- profiles from a config / sign bits

def test_profile_from_config_takes_conv_input_widths(tiny):
    _, model, data = tiny
    sim = Simulator(model)
    cfg = wide_config(profile(sim, data.x_train[:50]))
    cfg = set_data_format(set_data_format(cfg, 1, QFormat(3, 2)), 2, QFormat(2, 1))
    shapes = shapes_from_network(model)
    assert profile_from_config(cfg, shapes) == (cfg[0].fmt_x.width, 5)  # fc1's 3 bits are not Stripes'
    with pytest.raises(FxpsimError, match="do not match"):
        profile_from_config(NetworkConfig(cfg.layers[:2]), shapes)


def test_dropping_sign_bits_of_relu_outputs_keeps_every_value(tiny):
    _, model, data = tiny
    sim = Simulator(model)
    ev = Evaluator(sim, data.x_train[:200], data.y_train[:200])
    flags = nonnegative_inputs(sim.stages, ev.x)
    assert flags == [False, True, True]  # standardized pixels are signed; the others follow ReLU+pool
    assert nonnegative_inputs(sim.stages, np.abs(ev.x))[0]
    cfg = wide_config(profile(sim, ev.x, prepared=True))
    for i, fmt in enumerate((QFormat(3, 3), QFormat(3, 2), QFormat(4, 1))):
        cfg = set_data_format(cfg, i, fmt)
    u = unsigned_inputs(cfg, flags)
    assert [str(c.fmt_x) for c in u] == ["Q3.3", "UQ2.2", "UQ3.1"]
    assert [c.fmt_x.width for c in u] == [6, 4, 4]
    for a, b in zip(ev.stage_outputs(cfg), ev.stage_outputs(u)):
        np.testing.assert_array_equal(a[1], b[1])  # every stage output identical, not just accuracy
    tanh_net = build_network("conv4x3-tanh-fc10", (1, 8, 8), 10)
    assert nonnegative_inputs(Simulator(tanh_net).stages) == [False, False]


# ---------------------------------------------------------------- the study, without argv

def test_study_of_a_profile_and_a_config(tiny):
    """run_study times a given profile and a config's input widths; names default from the source."""
    _, model, data = tiny
    shapes = shapes_from_network(model)
    accel = AcceleratorConfig(2, 4, 4)
    rep = run_study(StripesStudy(shapes, "model tiny", "tiny", accel, profile="5-4"), model)
    assert rep.name == "tiny_stripes_p5-4" and [r.profile for r in rep.runs] == [(5, 4)]
    want = time_network(shapes, (5, 4), accel)
    layers = rep.table[rep.table["kind"] != "total"]
    assert list(layers["stripes_cycles"]) == [t.stripes_cycles for t in want.layers]
    assert rep.summary.loc[0, "network_speedup"] == want.speedup
    assert rep.summary.loc[0, "conv_speedup"] == time_network(shapes[:2], (5, 4), accel).speedup
    assert "Stripes Table I" in rep.text and rep.comparison and not rep.configs
    cfg = set_data_format(wide_config(profile(Simulator(model), data.x_train[:50])), 1, QFormat(2, 1))
    rep = run_study(StripesStudy(shapes, "model tiny", "tiny", accel, config=cfg, config_label="c"))
    assert rep.name == "tiny_stripes_c" and rep.runs[0].profile == (cfg[0].fmt_x.width, 3)
    assert list(rep.table["input_format"][:2]) == [str(cfg[0].fmt_x), "Q2.1"]
    assert "Setup differences" not in rep.text  # no model given: shapes only
    with pytest.raises(FxpsimError, match="2 conv layer"):
        StripesStudy(shapes, "s", "tiny", profile="3-3-3")
    with pytest.raises(FxpsimError, match="not both"):
        StripesStudy(shapes, "s", "tiny", profile="3-3", config=cfg)
    with pytest.raises(FxpsimError, match="--raw-input"):
        StripesStudy(shapes, "s", "tiny", profile="3-3", raw_input=True)
    with pytest.raises(FxpsimError, match="needs the model"):
        run_study(StripesStudy(shapes, "s", "tiny"))


def test_study_search_returns_its_configs_and_logs_each_tolerance(tiny):
    _, model, data = tiny
    calib = calibration_set(model, data, 80, 0)
    lines = []
    study = StripesStudy(shapes_from_network(model), "model tiny", "tiny", tolerances=(0.02,), name="t")
    rep = run_study(study, model, data, calib, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("tolerance 2 %")
    (stem, cfg), = rep.configs
    assert stem == "t_tol2_config" and [c.fmt_w.width for c in cfg] == [16, 16, 16]
    signed, nosign = rep.runs
    assert signed.profile == tuple(c.fmt_x.width for c in cfg.layers[:2])
    assert nosign.label == "98 %, no sign bit" and nosign.profile == (signed.profile[0], signed.profile[1] - 1)
    ev = Evaluator(Simulator(model), *calib)
    assert signed.accuracies.val_accuracy == ev.accuracy(cfg) >= 0.98 * ev.float_accuracy
    assert nosign.accuracies.test_accuracy == signed.accuracies.test_accuracy
    row = rep.summary.set_index("profile").loc["98 %"]
    assert row["relative_test_accuracy"] == signed.accuracies.test_accuracy / signed.accuracies.float_test_accuracy


# ---------------------------------------------------------------- the command

def _csv(out, name):
    return pd.read_csv(out / f"{name}.csv")


def _as_written(value) -> float:
    """A float as a CSV report holds it (fxpsim.tables' stated precision)."""
    return float(format_csv_float(value))


def test_cli_profile_on_a_trained_model(tiny, tmp_path, capsys):
    path, model, _ = tiny
    rc, out, _ = _run(capsys, path, "--profile", "5-4", "--tiles", 2, "--filters", 4, "--lanes", 4,
                      "--out", tmp_path)
    assert rc == 0 and "conv2" in out
    df = _csv(tmp_path, "tiny_stripes_p5-4")
    assert list(df.columns) == ["profile", "layer", "kind", "macs", "input_format", "precision",
                                "baseline_cycles", "stripes_cycles", "speedup", "ideal_speedup"]
    accel = AcceleratorConfig(2, 4, 4)
    want = time_network(shapes_from_network(model), "5-4", accel)
    layers = df[df["kind"] != "total"]
    assert list(layers["layer"]) == ["conv1", "conv2", "fc1"]
    assert list(layers["stripes_cycles"]) == [t.stripes_cycles for t in want.layers]
    assert list(layers["precision"].fillna(0)) == [5, 4, 0]
    totals = df[df["kind"] == "total"].set_index("layer")
    assert totals.loc["total (network)", "speedup"] == _as_written(want.speedup)
    conv = time_network(shapes_from_network(model)[:2], "5-4", accel)
    assert totals.loc["total (conv layers)", "baseline_cycles"] == conv.baseline_cycles
    assert (tmp_path / "tiny_stripes_p5-4.png").stat().st_size > 1000
    assert "Stripes Table I" in (tmp_path / "tiny_stripes_p5-4.md").read_text()


def test_cli_shapes_reproduce_paper_lenet(tmp_path, capsys):
    rc, out, _ = _run(capsys, "--shapes", "lenet-caffe", "--profile", "2-3", "--out", tmp_path)
    assert rc == 0
    summ = _csv(tmp_path, "lenet-caffe_stripes_p2-3_summary")
    assert round(float(summ["conv_ideal_speedup"][0]), 2) == 7.33
    assert float(summ["conv_speedup"][0]) == pytest.approx(22 / 3)  # windows 576 and 64: no padding loss


def test_cli_config_file(tiny, tmp_path, capsys):
    path, model, data = tiny
    cfg = wide_config(profile(Simulator(model), data.x_train[:50]))
    cfg = set_data_format(set_data_format(cfg, 0, QFormat(3, 4)), 1, QFormat(2, 1))
    cfg_path = cfg.save(tmp_path / "my_config.json")
    rc, _, _ = _run(capsys, path, "--config", cfg_path, "--out", tmp_path)
    assert rc == 0
    df = _csv(tmp_path, "tiny_stripes_my_config")
    conv = df[df["kind"] == "conv"]
    assert list(conv["precision"]) == [7, 3] and list(conv["input_format"]) == ["Q3.4", "Q2.1"]


def test_cli_search_profiles_are_the_searched_input_widths(tiny, tmp_path, capsys):
    """Default mode: search, time the searched widths; the saved config meets the tolerance."""
    path, model, data = tiny
    rc, out, _ = _run(capsys, path, "--tolerance", "0.02", "--samples", 80, "--out", tmp_path)
    assert rc == 0
    cfg = NetworkConfig.load(tmp_path / "tiny_stripes_tol2_config.json")
    summ = _csv(tmp_path, "tiny_stripes_summary").set_index("profile")
    p = "-".join(str(c.fmt_x.width) for c in cfg.layers[:2])
    assert summ.loc["98 %", "precisions"] == p
    assert [c.fmt_w.width for c in cfg] == [16, 16, 16]  # Stripes' weights stay 16-bit: data searched only
    # the same calibration sample the command used: its validation accuracy is met and reported
    x, y = calibration_set(model, data, 80, 0)
    ev = Evaluator(Simulator(model), x, y)
    assert ev.accuracy(cfg) >= 0.98 * ev.float_accuracy
    assert summ.loc["98 %", "val_accuracy"] == _as_written(ev.accuracy(cfg))
    assert summ.loc["98 %", "test_accuracy"] == _as_written(Simulator(model).simulate(
        data.x_test, cfg, data.y_test).accuracy)
    # conv2's input follows ReLU + pooling: one bit less, the same accuracy
    nosign = summ.loc["98 %, no sign bit"]
    assert nosign["precisions"] == f"{cfg[0].fmt_x.width}-{cfg[1].fmt_x.width - 1}"
    assert nosign["test_accuracy"] == summ.loc["98 %", "test_accuracy"]
    df = _csv(tmp_path, "tiny_stripes")
    assert set(df["profile"]) == {"98 %", "98 %, no sign bit"}
    md = (tmp_path / "tiny_stripes.md").read_text()
    assert "3-3" in md and "2-3" in md and "validation samples" in md


def test_cli_bad_input_is_one_line(tiny, tmp_path, capsys):
    path = tiny[0]
    out = ["--out", tmp_path]
    assert "2 conv layer" in _bad(capsys, path, "--profile", "3-3-3", *out)
    assert "outside 1..16" in _bad(capsys, path, "--profile", "0-3", *out)
    assert "outside 1..16" in _bad(capsys, path, "--profile", "17-3", *out)
    assert "bad precision profile" in _bad(capsys, path, "--profile", "3.5-3", *out)
    for flag, value in (("--tiles", 0), ("--filters", -2), ("--lanes", 0)):
        assert "positive integer" in _bad(capsys, path, "--profile", "3-3", flag, value, *out)
    assert "is not a whole number" in _bad(capsys, path, "--profile", "3-3", "--lanes", "x", *out)
    assert "in [0, 1)" in _bad(capsys, path, "--tolerance", "1.5", *out)
    assert "not both" in _bad(capsys, path, "--shapes", "lenet-caffe", "--profile", "3-3", *out)
    assert "no weights to search" in _bad(capsys, "--shapes", "lenet-caffe", *out)
    assert "not a preset" in _bad(capsys, "--shapes", "vgg", "--profile", "3", *out)
    assert "1 conv layer" in _bad(capsys, "--shapes", "conv4x3-fc10", "--input-shape", "1x8x8",
                                  "--profile", "3-3", *out)
    assert "not allowed with" in _bad(capsys, path, "--profile", "3-3", "--tolerance", "0", *out)
    assert "1..62" in _bad(capsys, path, "--weight-bits", "0", *out)
    bad_cfg = tmp_path / "c.json"
    bad_cfg.write_text(json.dumps({"format": "fxpsim-config", "version": 1, "layers": [
        {"name": "fc1", "fmt_w": "Q1.7", "fmt_x": "Q2.6", "fmt_y": "Q4.4", "acc_bits": 32}]}))
    assert "do not match" in _bad(capsys, path, "--config", bad_cfg, *out)
    assert "missing.json" in _bad(capsys, path, "--config", tmp_path / "missing.json", *out)
    assert not list(tmp_path.glob("*.csv"))  # nothing written on bad input


# ---------------------------------------------------------------- input scaling folded (Caffe-like input)

@pytest.mark.parametrize("arch", ["conv4x3-relu-maxpool2-conv8x3-relu-fc10", "mlp-small"])
def test_fold_input_scaling_keeps_the_float_network(arch):
    data = load_dataset("digits")
    model = Model(build_network(arch, (1, 8, 8), 10, seed=3), Preprocess.fit(data.x_train, "standardize"),
                  {"dataset": "digits"})
    before = model.network.state_dict()
    folded = fold_input_scaling(model, scale=16.0)
    x = data.x_test[:100]
    xf = folded.preprocess.apply(x)
    assert xf.min() >= 0 and xf.max() <= 1  # digits pixels are 0..16
    np.testing.assert_allclose(folded.network.predict(xf), model.network.predict(model.preprocess.apply(x)),
                               rtol=1e-4, atol=1e-4)
    for key, value in model.network.state_dict().items():  # the original is untouched
        np.testing.assert_array_equal(value, before[key])
    padded = Model(build_network("cnn-small", (1, 8, 8), 10), model.preprocess, {})
    with pytest.raises(FxpsimError, match="pads with zeros"):
        fold_input_scaling(padded)


def test_cli_raw_input_search_drops_the_first_sign_bit(tiny, tmp_path, capsys):
    path = tiny[0]
    rc, out, _ = _run(capsys, path, "--raw-input", "--tolerance", "0.02", "--samples", 60, "--out", tmp_path)
    assert rc == 0
    summ = _csv(tmp_path, "tiny_stripes_raw_summary").set_index("profile")
    cfg = NetworkConfig.load(tmp_path / "tiny_stripes_raw_tol2_config.json")
    assert summ.loc["98 %", "precisions"] == f"{cfg[0].fmt_x.width}-{cfg[1].fmt_x.width}"
    nosign = f"{cfg[0].fmt_x.width - 1}-{cfg[1].fmt_x.width - 1}"  # pixels >= 0 now, and ReLU outputs
    assert summ.loc["98 %, no sign bit", "precisions"] == nosign
    assert "pixels / 256" in (tmp_path / "tiny_stripes_raw.md").read_text()
    assert "--raw-input" in _bad(capsys, path, "--raw-input", "--profile", "3", "--out", tmp_path)


# ---------------------------------------------------------------- --simulate: the whole network bit-serially

DIGITS_CNN = Path(__file__).resolve().parents[1] / "models" / "digits-cnn.npz"


def test_cli_simulate_runs_every_layer_bit_serially_next_to_the_timing(tmp_path, capsys):
    """The digits CNN under a given config (wide formats, ideal accumulators): every layer on the
    bit-serial engine, logits bit-identical to the bit-parallel run, per layer all outputs equal;
    the timing columns are those of the run without --simulate."""
    model = load_model(DIGITS_CNN)
    sim = Simulator(model)
    data = load_dataset("digits")
    cfg = wide_config(profile(sim, data.x_train[:100]), frac_bits=6)
    cfg_path = cfg.save(tmp_path / "wide.json")
    rc, out, _ = _run(capsys, DIGITS_CNN, "--config", cfg_path, "--out", tmp_path / "plain")
    assert rc == 0
    rc, out, _ = _run(capsys, DIGITS_CNN, "--config", cfg_path, "--simulate", "--out", tmp_path / "sim")
    assert rc == 0 and "Simulated (--simulate)" in out
    plain = _csv(tmp_path / "plain", "digits-cnn_stripes_wide")
    df = _csv(tmp_path / "sim", "digits-cnn_stripes_wide")
    assert "outputs_equal" not in plain.columns
    pd.testing.assert_frame_equal(df[plain.columns], plain)
    layers = df[df["kind"] != "total"]
    assert list(layers["layer"]) == sim.names and (layers["outputs"] > 0).all()
    assert (df["outputs_equal"] == df["outputs"]).all()
    totals = df[df["kind"] == "total"].set_index("layer")
    assert totals.loc["total (network)", "outputs"] == layers["outputs"].sum()
    summ = _csv(tmp_path / "sim", "digits-cnn_stripes_wide_summary")
    want = sim.simulate(data.x_test, cfg, data.y_test).accuracy
    assert bool(summ.loc[0, "logits_identical"]) and summ.loc[0, "images_differing"] == 0
    assert summ.loc[0, "bitserial_test_accuracy"] == summ.loc[0, "bitparallel_test_accuracy"] == _as_written(want)
    assert "bit-identical in every run" in (tmp_path / "sim" / "digits-cnn_stripes_wide.md").read_text()
    # the library call behind it: every layer bit-serial, Stripes' bricks of the given lanes
    check = check_bit_serial(sim, cfg, data.x_test[:50], data.y_test[:50], lanes=4)
    assert [a.engine for a in check.stages] == ["bitserial"] * 4 and check.lanes == 4
    assert check.logits_identical and check.bitserial_accuracy == check.bitparallel_accuracy


def test_cli_simulate_bad_input_is_one_line(tmp_path, capsys):
    out = ["--out", tmp_path]
    assert "--simulate runs the network under its data formats" in _bad(
        capsys, DIGITS_CNN, "--profile", "3-3", "--simulate", *out)
    assert "--simulate runs a trained network: give a MODEL" in _bad(
        capsys, "--shapes", "lenet-caffe", "--profile", "2-3", "--simulate", *out)
    with pytest.raises(FxpsimError, match="a --profile does not give"):
        StripesStudy(shapes_from_network(load_model(DIGITS_CNN)), "s", "d", profile="3-3", simulate=True)
    assert not list(tmp_path.glob("*.csv"))
