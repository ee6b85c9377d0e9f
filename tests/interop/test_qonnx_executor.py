"""qonnx's own executor and hls4ml's QONNX front end as external references (issue 15, items 4-5).

- the committed Brevitas QONNX fixtures through ``qonnx.core.onnx_exec.execute_onnx`` (after
  qonnx's ``cleanup_model``; the QCDQ ones after qonnx's ``QCDQToQuant``) equal fxpsim's integer
  run of their import, every logit, and Brevitas' own outputs;
- fxpsim's QONNX export of the digits MLP and CNN, with ideal accumulators (what qonnx's float
  Gemm/Conv computes; BW_acc and overflow are only in the metadata), runs in qonnx's executor to
  fxpsim's logits bit for bit on all 450 digits test images, and the QCDQ export the same after
  qonnx's ``QCDQToQuant``;
- hls4ml's QONNX front end (``convert_from_onnx_model``, after qonnx's channels-last and
  Gemm-to-MatMul passes, as hls4ml's docs ask) converts the Brevitas fixtures and fxpsim's
  exports, and reads each layer's weight, bias and output formats as fxpsim's config has them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.interop.onnx_import import import_onnx
from fxpsim.interop.qonnx_export import qonnx_model
from fxpsim.modelfile import load_model
from fxpsim.simulate import Simulator
from fxpsim.train.data import load_dataset

from .test_qonnx_export import _config

pytest.importorskip("qonnx", reason="qonnx (the [test] extra) not installed")
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

FIXTURES = Path(__file__).with_name("fixtures")
MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _execute(model, x: np.ndarray) -> np.ndarray:
    """qonnx's executor on ``x`` (a batch): cleanup (shape inference, constant folding) at that batch size."""
    m = cleanup_model(ModelWrapper(model), override_inpsize=len(x))
    return execute_onnx(m, {m.graph.input[0].name: x})[m.graph.output[0].name]


def _ideal(config: NetworkConfig) -> NetworkConfig:
    """``config`` with ideal accumulators and exact products: the arithmetic of qonnx's float ops."""
    return NetworkConfig(tuple(LayerConfig(c.name, c.fmt_w, c.fmt_x, c.fmt_y, 62, "ideal", c.rounding.value)
                               for c in config))


def _to_quant(model):
    """qonnx's own QCDQ -> QONNX conversion (``QCDQToQuant``; it reads the shapes cleanup infers)."""
    from qonnx.transformation.qcdq_to_qonnx import QCDQToQuant

    out = cleanup_model(ModelWrapper(model)).transform(QCDQToQuant()).model
    assert not {n.op_type for n in out.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    return out


@pytest.mark.parametrize("kind", ["qonnx", "qcdq"])
@pytest.mark.parametrize("name", ["brevitas_mlp", "brevitas_cnn"])
def test_brevitas_fixtures_in_qonnx_equal_fxpsim(name, kind):
    path = FIXTURES / f"{name}_{kind}.onnx"
    x = np.load(FIXTURES / f"{name}_in.npy", allow_pickle=False)
    got = _execute(str(path) if kind == "qonnx" else _to_quant(str(path)), x)
    imp = import_onnx(path, dataset="digits", input_scale=1 / 16)
    images = (x.astype(np.float64) * 16).reshape(-1, 1, 8, 8)  # the digits pixels the model read / 16
    want = Simulator(imp.model).simulate(images, imp.config).logits
    np.testing.assert_array_equal(got.astype(np.float64), want)
    np.testing.assert_array_equal(got, np.load(FIXTURES / f"{name}_out.npy", allow_pickle=False))
    assert len(np.unique(want)) > 20


@pytest.mark.parametrize("qcdq", [False, True])
@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_fxpsim_export_in_qonnx_equals_fxpsim(name, qcdq, digits):
    model = load_model(MODELS / f"{name}.npz")
    sim = Simulator(model)
    config = _ideal(_config(sim, knobs=False))
    if qcdq:  # QuantizeLinear rounds nearest-even only
        config = config.with_all(rounding="nearest-even")
    exported = qonnx_model(model, config, qcdq=qcdq)
    if qcdq:
        exported = _to_quant(exported)
    images = digits.x_test  # all 450
    got = _execute(exported, model.preprocess.apply(images).astype(np.float32))
    want = sim.simulate(images, config).logits
    np.testing.assert_array_equal(got.astype(np.float64), want)
    assert len(np.unique(want)) > 20


def test_a_narrow_accumulator_is_what_qonnx_cannot_carry(digits):
    """qonnx's executor is ideal: a wrapping 12-bit accumulator changes fxpsim's logits, not its."""
    model = load_model(MODELS / "digits-mlp.npz")
    sim = Simulator(model)
    config = _ideal(_config(sim, knobs=False))
    narrow = config.with_layer(0, acc_bits=12, overflow="wrap")
    images = digits.x_test
    got = _execute(qonnx_model(model, narrow), model.preprocess.apply(images).astype(np.float32))
    np.testing.assert_array_equal(got.astype(np.float64), sim.simulate(images, config).logits)
    assert not np.array_equal(got.astype(np.float64), sim.simulate(images, narrow).logits)


# --------------------------------------------------------------------------- hls4ml's QONNX front end

def _hls4ml(model, tmp_path):
    """hls4ml's ModelGraph of a QONNX model (no compile), prepared as hls4ml's QONNX docs say."""
    hls4ml = pytest.importorskip("hls4ml", reason="hls4ml (the [test] extra) not installed")
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul

    m = cleanup_model(ModelWrapper(model))
    m = cleanup_model(m.transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul()))
    cfg = hls4ml.utils.config.config_from_onnx_model(m, granularity="name", backend="Vitis")
    return hls4ml.converters.convert_from_onnx_model(m, output_dir=str(tmp_path / "hls"), backend="Vitis",
                                                     hls_config=cfg)


def _compute_formats(graph) -> list[tuple]:
    """(weight, bias, output) of each Dense/Conv2D hls4ml made, in order, as (signed, width, int bits, symmetric)."""
    def fmt(p) -> tuple:
        return bool(p.signed), int(p.width), int(p.integer), "SAT_SYM" in str(p.saturation_mode)

    return [tuple(fmt(t.type.precision) for t in (v.weights["weight"], v.weights["bias"], v.get_output_variable()))
            for v in graph.get_layers() if v.class_name in ("Dense", "Conv2D")]


def _want(config: NetworkConfig) -> list[tuple]:
    def fmt(f) -> tuple:
        return f.signed, f.width, f.int_bits, f.narrow

    return [(fmt(c.fmt_w), fmt(c.fmt_bias_acc), fmt(c.fmt_y)) for c in config]


_GEMM_WARNING = "ignore:The GemmToMatMul transformation only offers explicit support:UserWarning"
"""qonnx warns that it knows Gemm opset 9 only; the Gemms here (alpha = beta = 1, transB) convert exactly."""


@pytest.mark.filterwarnings(_GEMM_WARNING)
@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_hls4ml_qonnx_front_end_reads_fxpsims_formats(name, tmp_path):
    model = load_model(MODELS / f"{name}.npz")
    config = _config(Simulator(model))
    got = _compute_formats(_hls4ml(qonnx_model(model, config), tmp_path))
    assert got == _want(config) and any(w[3] for w, _, _ in got)  # narrow weights as AP_SAT_SYM


@pytest.mark.filterwarnings(_GEMM_WARNING)
@pytest.mark.parametrize("name", ["brevitas_mlp", "brevitas_cnn"])
def test_hls4ml_qonnx_front_end_converts_the_brevitas_fixtures(name, tmp_path):
    path = FIXTURES / f"{name}_qonnx.onnx"
    imp = import_onnx(path, dataset="digits", input_scale=1 / 16)
    got = _compute_formats(_hls4ml(str(path), tmp_path))
    assert [w for w, _, _ in got] == [w for w, _, _ in _want(imp.config)]
