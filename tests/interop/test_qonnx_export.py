"""QONNX/QCDQ export (issue 15, item 4): fxpsim -> QONNX -> fxpsim gives the same config and the
same integer network bit for bit, and onnxruntime running the QCDQ form equals fxpsim's
integer run where the semantics agree (nearest-even requantization, saturation to int8/uint8,
an ideal accumulator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fxpsim import FxpsimError
from fxpsim.cli import main
from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.interop.onnx_import import import_onnx
from fxpsim.interop.qonnx_export import CONFIG_KEY, qonnx_model, write_qonnx
from fxpsim.modelfile import load_model
from fxpsim.simulate import Simulator
from fxpsim.train.data import load_dataset

MODELS = Path(__file__).resolve().parents[2] / "models"
NAMES = ("digits-mlp", "digits-cnn")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(sim, fmt_w=("Q1.7n", "Q1.7"), knobs=True) -> NetworkConfig:
    """8-bit formats (narrow and not), every layer's own BW_acc, overflow and knobs."""
    layers = []
    for i, n in enumerate(sim.names):
        last = i == len(sim.names) - 1
        kw = dict(frac_acc=12 + i, product="cast", order="strided:2") if knobs and i == 1 else {}
        layers.append(LayerConfig(n, fmt_w[i % 2], "UQ3.5" if i else "Q3.5", "Q6.2" if last else "UQ3.5",
                                  20 + i, ("clip", "wrap", "ideal")[i % 3], ("nearest-even", "floor")[i % 2], **kw))
    return NetworkConfig(tuple(layers))


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_gives_the_same_config_and_bits(name, tmp_path, digits):
    model = load_model(MODELS / f"{name}.npz")
    sim = Simulator(model)
    config = _config(sim)
    imp = import_onnx(write_qonnx(tmp_path / "m.onnx", model, config), dataset="digits")
    assert imp.config == config and imp.notes == ()
    assert [type(v).__name__ for v in imp.model.network.layers] == [type(v).__name__ for v in model.network.layers]
    np.testing.assert_array_equal(imp.model.preprocess.apply(digits.x_test), model.preprocess.apply(digits.x_test))
    got = Simulator(imp.model).simulate(digits.x_test, imp.config)
    want = sim.simulate(digits.x_test, config, digits.y_test)
    np.testing.assert_array_equal(got.logits, want.logits)
    assert len(np.unique(want.logits)) > 20
    again = qonnx_model(imp.model, imp.config)  # the imported network exports to the same graph
    first = onnx.load(str(tmp_path / "m.onnx"))
    assert [n.op_type for n in again.graph.node] == [n.op_type for n in first.graph.node]
    assert all(np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
               for a, b in zip(again.graph.initializer, first.graph.initializer))


@pytest.mark.parametrize("name", NAMES)
def test_qcdq_export_in_onnxruntime_equals_the_integer_run(name, tmp_path, digits):
    model = load_model(MODELS / f"{name}.npz")
    sim = Simulator(model)
    config = NetworkConfig(tuple(LayerConfig(c.name, c.fmt_w, c.fmt_x, c.fmt_y, 62, "ideal", "nearest-even")
                                 for c in _config(sim, knobs=False)))
    path = write_qonnx(tmp_path / "m.onnx", model, config, qcdq=True)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no QGemm fusion (see test_onnx_import)
    x = model.preprocess.apply(digits.x_test).astype(np.float32)
    got = ort.InferenceSession(str(path), opts).run(None, {"x": x})[0]
    want = sim.simulate(digits.x_test, config).logits
    np.testing.assert_array_equal(got.astype(np.float64), want)
    assert len(np.unique(want)) > 20
    imp = import_onnx(path, dataset="digits")  # and the QCDQ file imports back
    assert imp.config == config and imp.model.metadata["source"]["format"] == "qcdq"


def test_export_refusals_are_one_line(tmp_path):
    model = load_model(MODELS / "digits-mlp.npz")
    sim = Simulator(model)
    wide = NetworkConfig(tuple(LayerConfig(n, "Q4.12", "Q4.12", "Q8.8", 40) for n in sim.names))
    with pytest.raises(FxpsimError, match=r"layer fc1: Q4.12 with nearest-even rounding has no QuantizeLinear"):
        qonnx_model(model, wide, qcdq=True)
    sto = NetworkConfig(tuple(LayerConfig(n, "Q1.7", "Q3.5", "Q4.4", 20, rounding="stochastic") for n in sim.names))
    with pytest.raises(FxpsimError, match=r"rounding='stochastic' has no QONNX rounding_mode"):
        qonnx_model(model, sto)


def test_edited_metadata_is_refused(tmp_path):
    model = load_model(MODELS / "digits-mlp.npz")
    config = _config(Simulator(model))
    m = qonnx_model(model, config)
    other = NetworkConfig(tuple(LayerConfig(c.name, "Q2.6", c.fmt_x, c.fmt_y, 20) for c in config))
    onnx.helper.set_model_props(m, {CONFIG_KEY: other.to_json()})
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(FxpsimError, match=r"metadata fxpsim.config gives the layers .* the file was changed"):
        import_onnx(tmp_path / "m.onnx", dataset="digits")


def test_cli_export_qonnx_then_import(tmp_path, capsys):
    model = load_model(MODELS / "digits-mlp.npz")
    config = _config(Simulator(model))
    cfg_path = tmp_path / "cfg.json"
    config.save(cfg_path) if hasattr(config, "save") else cfg_path.write_text(config.to_json())
    out = tmp_path / "m.onnx"
    assert main(["export", str(MODELS / "digits-mlp.npz"), "--config", str(cfg_path), "--qonnx", str(out)]) == 0
    assert "qonnx: wrote 1 file" in capsys.readouterr().out
    assert main(["import", str(out), "--out", str(tmp_path / "m.npz")]) == 0
    back = NetworkConfig.load(tmp_path / "m_config.json")
    assert back == config
