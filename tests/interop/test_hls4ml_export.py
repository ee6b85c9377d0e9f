"""hls4ml export (fxpsim.interop.hls4ml, ``fxpsim export --hls4ml``): the precision strings of every
mode pair, Strategy/ReuseFactor per order (the ReuseFactors against hls4ml's own rule), one-line
refusals of what hls4ml computes otherwise, deterministic JSON, and hls4ml building the exported
MLP from a layer list (no torch, no compile) with exactly the exported types. The bit-for-bit
comparison with hls4ml's C simulation is benchmarks/hls4ml_parity.py (it needs torch and g++)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fxpsim.cli import main
from fxpsim.config import LayerConfig
from fxpsim.errors import FxpsimError
from fxpsim.interop import hls4ml as H
from fxpsim.modelfile import load_model
from fxpsim.network import build_network
from fxpsim.qformat import Overflow, QFormat, Rounding
from fxpsim.simulate import Simulator, config_from_profile, profile
from fxpsim.train.data import load_dataset

MODELS = Path(__file__).resolve().parents[2] / "models"

# docs/APFIXED.md, written out here so that a changed table fails
Q_MODES = {"nearest-even": "AP_RND_CONV", "nearest": "AP_RND_INF", "floor": "AP_TRN", "toward-zero": "AP_TRN_ZERO"}
O_MODES = {"wrap": "AP_WRAP", "clip": "AP_SAT"}


def _setup(name: str):
    model = load_model(MODELS / name)
    data = load_dataset("digits", **model.metadata["split"])
    sim = Simulator(model)
    config = config_from_profile(profile(sim, data.x_train[:100]), weight_bits=8, data_bits=8, acc_bits=32,
                                 overflow="wrap").with_all(product="cast")
    return model, sim, config


@pytest.fixture(scope="module")
def mlp():
    return _setup("digits-mlp.npz")


@pytest.fixture(scope="module")
def cnn():
    return _setup("digits-cnn.npz")


def _refused(model, config, *words) -> str:
    with pytest.raises(FxpsimError) as exc:
        H.hls4ml_config(model, config)
    msg = str(exc.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, msg
    return msg


# --------------------------------------------------------------------------- precision strings

@pytest.mark.parametrize("rounding", list(Q_MODES))
@pytest.mark.parametrize("overflow", list(O_MODES))
def test_precision_of_every_mode_pair(rounding, overflow):
    q, o = Q_MODES[rounding], O_MODES[overflow]
    assert H.ap_modes(Rounding(rounding), Overflow(overflow)) == (q, o)
    assert H.precision(QFormat(4, 12), Rounding(rounding), Overflow(overflow)) == f"ap_fixed<16,4,{q},{o}>"
    assert H.precision(QFormat(8, 0, signed=False), Rounding(rounding), Overflow(overflow)) \
        == f"ap_ufixed<8,8,{q},{o}>"
    assert H.precision(QFormat(-3, 11), Rounding(rounding), Overflow(overflow)) == f"ap_fixed<8,-3,{q},{o}>"
    assert H.precision(QFormat(12, -4), Rounding(rounding), Overflow(overflow)) == f"ap_fixed<8,12,{q},{o}>"


@pytest.mark.parametrize("rounding, overflow, word", [("stochastic", "clip", "ap_q_mode"),
                                                      ("floor", "ideal", "ap_o_mode")])
def test_modes_without_an_ap_fixed_name_are_refused(rounding, overflow, word):
    with pytest.raises(FxpsimError, match=word) as exc:
        H.ap_modes(Rounding(rounding), Overflow(overflow), "layer fc1")
    assert str(exc.value).startswith("layer fc1: ") and "\n" not in str(exc.value)


def test_layer_precision_follows_the_knobs(mlp):
    model, _, config = mlp
    fl = config[0].frac_acc - 3
    cfg = config.with_layer(0, acc_bits=14, frac_acc=fl, overflow="clip", product_rounding="nearest",
                            rounding="toward-zero", output_overflow="wrap")
    entry = H.hls4ml_config(model, cfg)["LayerName"]["fc1"]
    c = cfg[0]
    assert entry["Precision"] == {
        "weight": f"ap_fixed<{c.fmt_w.width},{c.fmt_w.int_bits},AP_TRN_ZERO,AP_SAT>",
        "bias": f"ap_fixed<14,{14 - fl},AP_TRN_ZERO,AP_SAT>",  # the accumulator format
        "accum": f"ap_fixed<14,{14 - fl},AP_RND_INF,AP_SAT>",  # product_rounding, overflow
        "result": f"ap_fixed<{c.fmt_y.width},{c.fmt_y.int_bits},AP_TRN_ZERO,AP_WRAP>"}


def test_input_relu_pool_and_flatten_layers(cnn):
    model, _, config = cnn
    export = H.hls4ml_config(model, config, MODELS / "digits-cnn.npz")
    names = export["LayerName"]
    assert export["fxpsim"]["layers"] == ["x", "conv1", "conv1_relu", "conv2", "conv2_relu", "conv2_maxpool2d",
                                          "conv2_flatten", "fc1", "fc1_relu", "fc2"]
    assert set(names) == set(export["fxpsim"]["layers"])
    assert names["x"]["Precision"] == {"result": H.precision(config[0].fmt_x, config[0].rounding, Overflow.CLIP)}
    y = names["conv2"]["Precision"]["result"]
    assert names["conv2_maxpool2d"]["Precision"] == {"result": y, "accum": y}
    assert names["conv2_relu"]["Precision"] == names["conv2_flatten"]["Precision"] == {"result": y}
    assert export["InputShape"] == [1, 8, 8] and export["fxpsim"]["model_file"] == "digits-cnn.npz"


# --------------------------------------------------------------------------- Strategy / ReuseFactor

@pytest.mark.parametrize("order, expected", [("sequential", ("Latency", 1)), ("strided:1", ("Resource", 1)),
                                             ("strided:2", ("Resource", 2)), ("strided:4", ("Resource", 4)),
                                             ("strided:64", ("Resource", 64)),
                                             ("strided:128", ("Resource", 128))])
def test_strategy_per_order(mlp, order, expected):
    model, _, config = mlp  # fc1: n_in 64, n_out 128
    entry = H.hls4ml_config(model, config.with_layer(0, order=order))["LayerName"]["fc1"]
    assert (entry["Strategy"], entry["ReuseFactor"]) == expected


def test_reuse_factors_hls4ml_would_replace_are_refused(mlp, cnn):
    model, _, config = mlp
    msg = _refused(model, config.with_layer(0, order="strided:3"), "layer fc1", "order=strided:3", "ReuseFactor")
    assert "1, 2, 4, 8, 16, 32, 64, 128" in msg
    model, _, config = cnn  # conv1: n_in 9, and a conv's Resource kernel needs RF <= n_in
    _refused(model, config.with_layer(0, order="strided:2"), "layer conv1", "1, 3, 9 for this conv2d")
    assert H.hls4ml_config(model, config.with_layer(0, order="strided:3"))["LayerName"]["conv1"]["ReuseFactor"] == 3


@pytest.mark.parametrize("n_in, n_out", [(64, 10), (9, 16), (144, 16), (12, 18), (7, 5), (256, 64)])
def test_valid_reuse_factors_are_hls4mls(n_in, n_out):
    backends = pytest.importorskip("hls4ml.backends", reason="hls4ml (the [hls] or [test] extra) not installed")
    vivado = backends.get_backend("Vivado")
    assert H.valid_reuse_factors(n_in, n_out) == vivado.get_valid_reuse_factors(n_in, n_out)
    assert H.valid_reuse_factors(n_in, n_out, conv=True) == [rf for rf in vivado.get_valid_reuse_factors(n_in, n_out)
                                                              if rf <= n_in]


def test_tree_order_is_refused(mlp):
    model, _, config = mlp
    _refused(model, config.with_layer(1, order="tree"), "layer fc2", "order='tree'", "adder")


# --------------------------------------------------------------------------- refusals

def test_what_hls4ml_has_no_form_for_is_refused(mlp):
    model, _, config = mlp
    _refused(model, config.with_engine("sparse", ["fc2"]), "layer fc2", "engine='sparse'")
    _refused(model, config.with_layer(0, a2q=True), "layer fc1", "a2q")
    _refused(model, config.with_layer(2, rounding="stochastic"), "layer fc3", "stochastic", "ap_q_mode")
    _refused(model, config.with_layer(2, overflow="ideal"), "layer fc3", "ideal", "ap_o_mode")


def test_exact_products_only_where_a_cast_changes_none(mlp):
    model, _, config = mlp
    wide = config.with_all(product="exact")  # 8 x 8-bit products in 32 bits: a cast changes nothing
    assert H.hls4ml_config(model, wide) == H.hls4ml_config(model, config)
    narrow = wide.with_layer(0, acc_bits=12)
    msg = _refused(model, narrow, "layer fc1", "product='exact'", "product='cast'", "acc_bits >= ")
    need = int(msg.rsplit("acc_bits >= ", 1)[1])
    H.hls4ml_config(model, wide.with_layer(0, acc_bits=need))  # exactly enough
    _refused(model, wide.with_layer(0, acc_bits=need - 1), "product='exact'")


def test_bias_formats_the_accumulator_cannot_hold_are_refused(mlp):
    model, _, config = mlp
    acc = config[0].fmt_acc
    inside = QFormat(acc.int_bits - 4, acc.frac_bits - 2)
    entry = H.hls4ml_config(model, config.with_layer(0, fmt_bias=inside))["LayerName"]["fc1"]
    assert entry["Precision"]["bias"] == H.precision(inside, config[0].rounding, Overflow.CLIP)
    _refused(model, config.with_layer(0, fmt_bias=QFormat(4, acc.frac_bits + 1)), "layer fc1", "fmt_bias=Q4.",
             "bias_t into accum_t")


def test_an_input_that_cannot_hold_the_previous_output_is_refused(mlp):
    model, _, config = mlp
    y = config[0].fmt_y
    wider = QFormat(y.int_bits + 1, y.frac_bits + 1)
    H.hls4ml_config(model, config.with_layer(1, fmt_x=wider))  # holds every fc1 output
    # fc1 ends in a ReLU: its outputs are >= 0 and an unsigned format of the same bits holds them
    H.hls4ml_config(model, config.with_layer(1, fmt_x=QFormat(y.int_bits, y.frac_bits, signed=False)))
    _refused(model, config.with_layer(1, fmt_x=QFormat(y.int_bits, y.frac_bits - 1)), "layer fc2", "fmt_x=",
             f"set fmt_x to {y}")


def test_tanh_and_average_pooling_are_refused():
    net = build_network("fc8-tanh-fc4", (6,), 4)
    config = config_from_profile(profile(Simulator(net), np.random.default_rng(0).normal(size=(20, 6))), overflow="wrap")
    _refused(net, config, "layer fc1", "tanh after the kernel")
    net = build_network("conv2x3p1-avgpool2-flatten-fc3", (1, 4, 4), 3)
    config = config_from_profile(profile(Simulator(net), np.random.default_rng(0).normal(size=(20, 1, 4, 4))),
                                 overflow="wrap")
    _refused(net, config, "layer conv1", "avgpool2d after the kernel")


def test_saturating_layers_in_another_order_need_saturation_free_accumulators(cnn):
    model, sim, config = cnn
    assert H.order_differs(sim.stages[0]) is None  # conv1: one input channel
    assert "conv" in H.order_differs(sim.stages[1], sim.stages[0])  # conv2: 16 channels, 3x3
    assert "flattened conv2" in H.order_differs(sim.stages[2], sim.stages[1])  # fc1 after flatten
    assert H.order_differs(sim.stages[3], sim.stages[2]) is None  # fc2 after fc1
    clip = config.with_all(overflow="clip")
    H.hls4ml_config(model, clip.with_layer(0, acc_bits=10).with_layer(3, acc_bits=10))  # same orders: free
    for i, word in ((1, "(kernel row, kernel column, channel)"), (2, "(row, column, channel)")):
        narrow = clip.with_layer(i, acc_bits=12)
        msg = _refused(model, narrow, f"layer {config[i].name}", "overflow='clip'", word, "overflow=wrap")
        need = int(msg.rsplit("acc_bits >= ", 1)[1].split(" ")[0])
        assert need == H.saturation_free_acc_bits(sim, i, narrow[i]) > 12
        fits = clip.with_layer(i, acc_bits=need)
        w, b = sim.quantized_params(i, fits[i])
        assert H.saturation_free_bits(sim.stages[i], fits[i], w, b) <= need
        H.hls4ml_config(model, fits)
        H.hls4ml_config(model, narrow.with_layer(i, overflow="wrap"))  # wrap is order-free
        assert f"set order=channels-last:16" in msg


def test_saturating_channels_last_layers_export_with_the_knob(cnn):
    """conv2 and fc1 (after conv2's flatten, 16 channels) in hls4ml's own order: exported
    saturating at any BW_acc, Latency for channels-last:16, Resource for +strided:RF; a wrong
    channel count, or the knob on a layer hls4ml adds in sequence, is refused naming the knob."""
    model, sim, config = cnn
    assert [H.hls4ml_channels(s, sim.stages[i - 1] if i else None) for i, s in enumerate(sim.stages)] == [
        None, 16, 16, None]
    clip = config.with_all(overflow="clip", acc_bits=12)
    cl = clip.with_layer(1, order="channels-last:16").with_layer(2, order="channels-last:16+strided:4")
    names = H.hls4ml_config(model, cl)["LayerName"]
    assert [(names[n]["Strategy"], names[n]["ReuseFactor"]) for n in ("conv2", "fc1")] == [
        ("Latency", 1), ("Resource", 4)]
    assert H.order_differs(sim.stages[1], sim.stages[0], cl[1]) is None
    _refused(model, cl.with_layer(2, order="channels-last:4"), "layer fc1", "order=channels-last:4",
             "set order=channels-last:16")
    _refused(model, cl.with_layer(3, order="channels-last:8"), "layer fc2", "order=channels-last:8",
             "adds this dense's inputs in sequence")
    H.hls4ml_config(model, cl.with_layer(3, order="channels-last:64"))  # one position: sequential
    H.hls4ml_config(model, cl.with_layer(0, order="channels-last:1"))  # conv1: one channel


def test_saturation_free_bits_bound_every_sum():
    """The bound by hand: |bias| + sum of ceil(|w| max|x| / 2**2) per channel (FL_acc two bits short)."""
    sim = Simulator(build_network("fc3", (4,), 3))
    cfg = LayerConfig("fc1", "Q2.2", "Q3.1", "Q6.0", acc_bits=20, overflow="clip", frac_acc=1, product="cast")
    w = np.array([[3, -1, 0], [-8, 2, 0], [7, 7, 0], [0, -5, 0]])  # (K, N) raw Q2.2
    b = np.array([5, -3, 0])  # raw at FL_acc = 1
    # x raw max 8 (Q3.1: -8..7), products at FL 3 shifted right 2 with floor: ceil(|w| * 8 / 4)
    bound = max(5 + 6 + 16 + 14 + 0, 3 + 2 + 4 + 14 + 10, 0)
    assert H.saturation_free_bits(sim.stages[0], cfg, w, b) == bound.bit_length() + 1


# --------------------------------------------------------------------------- JSON

def test_json_is_deterministic(cnn, tmp_path):
    model, _, config = cnn
    text = H.hls4ml_json(H.hls4ml_config(model, config, "digits-cnn.npz"))
    assert text == H.hls4ml_json(H.hls4ml_config(model, config, "digits-cnn.npz"))
    assert text.endswith("}\n") and json.loads(text) == H.hls4ml_config(model, config, "digits-cnn.npz")
    assert list(json.loads(text)) == sorted(json.loads(text))
    path = H.write_hls4ml_config(tmp_path / "a.json", model, config, "digits-cnn.npz")
    again = H.write_hls4ml_config(tmp_path / "b.json", model, config, "digits-cnn.npz")
    assert path.read_bytes() == again.read_bytes() == text.encode()
    other = H.hls4ml_json(H.hls4ml_config(model, config.with_layer(0, acc_bits=31), "digits-cnn.npz"))
    assert other != text


def test_weights_are_fxpsims_quantized_values(cnn):
    model, sim, config = cnn
    weights = H.hls4ml_weights(model, config)
    for i, cfg in enumerate(config):
        w, b = sim.quantized_params(i, cfg)
        wf, bf = weights[cfg.name]
        np.testing.assert_array_equal(wf * 2.0 ** cfg.fmt_w.frac_bits, w)
        np.testing.assert_array_equal(bf * 2.0 ** cfg.frac_acc, b)
        assert wf.dtype == bf.dtype == np.float64


def test_cli_writes_the_export_or_one_line(cnn, tmp_path, capsys):
    model, _, config = cnn
    ok, bad = config.save(tmp_path / "wrap.json"), config.with_all(overflow="clip", acc_bits=12).save(
        tmp_path / "clip.json")
    out = tmp_path / "hls" / "cnn.json"
    path = str(MODELS / "digits-cnn.npz")
    assert main(["export", path, "--config", str(ok), "--hls4ml", str(out)]) == 0
    assert out.read_text() == H.hls4ml_json(H.hls4ml_config(model, config, path))
    assert main(["export", path, "--config", str(bad), "--hls4ml", str(tmp_path / "no.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("fxpsim export: error: layer conv2: overflow='clip'") and "Traceback" not in err
    assert not (tmp_path / "no.json").exists()
    for folder in ("", str(tmp_path)):
        assert main(["export", path, "--config", str(ok), "--hls4ml", folder]) == 2
        err = capsys.readouterr().err.strip()
        assert "is a folder" in err and "\n" not in err


# --------------------------------------------------------------------------- hls4ml itself

def test_hls4ml_builds_the_export_with_its_types(mlp, tmp_path):
    """hls4ml's ModelGraph from a keras-style layer list (no torch, no g++) under the export holds
    every exported type, Strategy and ReuseFactor (check_hls4ml_model), and a mismatch shows."""
    hls4ml = pytest.importorskip("hls4ml", reason="hls4ml (the [hls] or [test] extra) not installed")
    from hls4ml.model import ModelGraph

    model, sim, config = mlp
    fl = config[1].frac_acc - 4
    config = config.with_layer(1, acc_bits=16, frac_acc=fl, overflow="clip", order="strided:4",
                               output_overflow="wrap")
    export = json.loads(H.hls4ml_json(H.hls4ml_config(model, config)))
    weights = H.hls4ml_weights(model, config)
    layers = [{"class_name": "InputLayer", "name": H.INPUT_NAME, "input_shape": export["InputShape"]}]
    prev = H.INPUT_NAME
    for stage in sim.stages:
        for name, kind in H.layer_names(stage):
            if kind == "dense":
                w, b = weights[name]
                layer = {"class_name": "Dense", "n_in": w.shape[0], "n_out": w.shape[1], "weight_data": w,
                         "bias_data": b, "use_bias": True}
            else:
                layer = {"class_name": "Activation", "activation": kind}
            layers.append({**layer, "name": name, "inputs": [prev]})
            prev = name
    hls_config = hls4ml.converters.create_config(output_dir=str(tmp_path / "prj"), backend="Vivado",
                                                 io_type="io_parallel")
    export["Model"]["ChannelsLastConversion"] = "off"  # a keras-style list: weights (K, N) already
    hls_config["HLSConfig"] = {"Model": export["Model"], "LayerName": export["LayerName"]}
    graph = ModelGraph.from_layer_list(hls_config, layers, inputs=[H.INPUT_NAME], outputs=[prev])
    assert [layer.name for layer in graph.get_layers()] == export["fxpsim"]["layers"]
    assert H.check_hls4ml_model(graph, export) == []
    fc2 = graph.graph["fc2"]
    assert (fc2.get_attr("strategy"), fc2.get_attr("reuse_factor")) == ("resource", 4)
    assert str(fc2.get_attr("accum_t").precision) == f"fixed<16,{16 - fl},TRN,SAT,0>"
    export["LayerName"]["fc1"]["Precision"]["accum"] = "ap_fixed<20,8,AP_TRN,AP_WRAP>"
    assert any(d.startswith("fc1: accum") for d in H.check_hls4ml_model(graph, export))
