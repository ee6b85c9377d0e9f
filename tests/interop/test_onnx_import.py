"""ONNX/QONNX import checked against onnxruntime itself (issue 15, items 3 and 5 for chains).

- float models (MLPs, CNNs with BatchNorm, average pooling, sigmoid/tanh, torch's view, tf2onnx's
  NHWC layout): the imported float network gives onnxruntime's outputs within float tolerance
  and its argmax on every digits test image; in wide ideal formats the integer simulation gives
  onnxruntime's argmax on every test image with logits within one output lsb;
- onnxruntime's integer ops: MatMulInteger/ConvInteger = fxpsim's ideal raw accumulator;
  MatMulInteger beyond int32 = ``acc_bits=32, wrap``; QLinearMatMul/QLinearConv with
  power-of-two scales = nearest-even requantization with int8 saturation;
- QONNX: Quant nodes become the expected formats, and the integer network equals onnxruntime
  running the same quantizers as QCDQ, bit for bit, on every test image; `eval --config` runs;
- every class of bad file is one line naming the node (or the file), its op and why.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from fxpsim import FxpsimError
from fxpsim.cli import main
from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.datapath import dense as dp
from fxpsim.datapath import reference
from fxpsim.interop.onnx_import import config_path, import_onnx, load_onnx
from fxpsim.modelfile import load_model
from fxpsim.qformat import QFormat
from fxpsim.simulate import Simulator, build_stages
from fxpsim.train.data import load_dataset

from .onnx_models import (FLOAT_MODELS, graph_model, node, ort_input, ort_run, qonnx_cnn, qonnx_mlp, quant,
                          save, tensor)

SCALE = 1 / 16  # digits pixels 0..16 -> [0, 1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _import(tmp_path, built, **kw):
    return import_onnx(save(built.model, tmp_path / "m.onnx"), **kw)


# --------------------------------------------------------------------------- float import

@pytest.mark.parametrize("name", sorted(FLOAT_MODELS))
def test_float_import_equals_onnxruntime(name, tmp_path, digits):
    """The imported float network = onnxruntime within float32 tolerance (random inputs and the
    digits test split), the same argmax on every test image; the final Softmax is dropped."""
    build = FLOAT_MODELS[name]
    imp = _import(tmp_path, build(seed=1, softmax=True), input_scale=SCALE)
    assert imp.config is None and imp.model.metadata["dataset"] == "digits"
    logits = build(seed=1).model
    net, prep = imp.model.network, imp.model.preprocess
    layout = build(seed=1).layout
    rng = np.random.default_rng(2)
    for images in (rng.uniform(0, 16, (64, 1, 8, 8)), digits.x_test):
        ref = ort_run(logits, ort_input(images, layout, SCALE))
        got = net.forward(prep.apply(images))
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert np.array_equal(got.argmax(axis=1), ref.argmax(axis=1))
    assert len(np.unique(ref.argmax(axis=1))) >= 2  # the argmax is not a constant


def _wide_config(sim) -> NetworkConfig:
    """Wide ideal formats: data Q8.20, weights Q4.24 (56-bit products: K < 512 fits int64),
    ideal accumulators, logits Q16.16."""
    layers = []
    for i, s in enumerate(sim.stages):
        last = i == len(sim.stages) - 1
        layers.append(LayerConfig(s.name, "Q4.24", "Q8.20", "Q16.16" if last else "Q8.20", acc_bits=62,
                                  overflow="ideal"))
    return NetworkConfig(tuple(layers))


@pytest.mark.parametrize("name", sorted(FLOAT_MODELS))
def test_wide_fixed_point_matches_onnxruntime(name, tmp_path, digits):
    """Q8.20 data, Q4.24 weights, ideal accumulators: argmax equal to onnxruntime's on all 450
    digits test images, every logit within one output lsb (2**-16), nothing saturated."""
    build = FLOAT_MODELS[name]
    imp = _import(tmp_path, build(seed=1), input_scale=SCALE)
    sim = Simulator(imp.model)
    res = sim.simulate(digits.x_test, _wide_config(sim), digits.y_test)
    ref = ort_run(build(seed=1).model, ort_input(digits.x_test, build(seed=1).layout, SCALE))
    assert np.array_equal(res.predictions, ref.argmax(axis=1))
    assert np.abs(res.logits - ref).max() <= 2.0 ** -16
    assert sum(s.outputs_out_of_format for s in res.layer_stats) == 0


def test_torch_fixed_batch_and_flat_squeezed_inputs(tmp_path, digits):
    """A fixed batch of 1 (torch.onnx.export without dynamic axes) and an (N, 8, 8) input: both import."""
    b = FLOAT_MODELS["cnn_maxpool"](seed=3)
    m = b.model
    m.graph.input[0].type.tensor_type.shape.dim[0].ClearField("dim_param")
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    net = _import(tmp_path, b, input_scale=SCALE).model.network
    x = digits.x_test[:5]
    ref = np.concatenate([ort_run(m, ort_input(x[i:i + 1], "nchw", SCALE)) for i in range(5)])
    np.testing.assert_allclose(net.forward(x * np.float32(SCALE)), ref, rtol=1e-4, atol=1e-5)
    rng = np.random.default_rng(0)
    w = tensor("W", rng.normal(0, 0.3, (64, 10)))
    sq = graph_model([node("Flatten", ["x"], ["f"]), node("MatMul", ["f", "W"], ["y"])], [w], [8, 8])
    net = import_onnx(save(sq, tmp_path / "sq.onnx")).model.network
    assert [layer.kind for layer in net.layers] == ["flatten", "dense"] and net.input_shape == (1, 8, 8)
    np.testing.assert_allclose(net.forward(x), ort_run(sq, x.reshape(5, 8, 8).astype(np.float32)), rtol=1e-5)


def test_metadata_batchnorm_kept_for_the_stage_fold_and_dataset_inferred(tmp_path):
    imp = _import(tmp_path, FLOAT_MODELS["cnn_batchnorm"](seed=0))
    meta = imp.model.metadata
    src = meta["source"]
    assert meta["dataset"] == "digits" and meta["preprocess"] == "identity"
    assert src["file"] == "m.onnx" and len(src["sha256"]) == 64 and src["opset"] == 13
    assert src["producer"] == "fxpsim-tests" and src["input_layout"] == "NCHW"
    net = imp.model.network
    assert [layer.kind for layer in net.layers][:3] == ["conv2d", "batchnorm", "relu"]
    stages = build_stages(net)
    assert [s.name for s in stages] == ["conv1", "conv2", "fc1"] and stages[0].relu
    assert _import(tmp_path, FLOAT_MODELS["cnn_nhwc"](seed=0)).model.metadata["source"]["input_layout"] == "NHWC"


# --------------------------------------------------------------------------- onnxruntime's integer ops

def _int_graph(op, a_type, b_type, a_shape, b_shape, out_type=TensorProto.INT32, inits=(), extra=(), **attrs):
    ins = [helper.make_tensor_value_info("a", a_type, a_shape)]
    if b_type is not None:
        ins.append(helper.make_tensor_value_info("b", b_type, b_shape))
    g = helper.make_graph([helper.make_node(op, ["a", "b", *extra] if b_type is not None else ["a", *extra],
                                            ["y"], **attrs)], "g", ins,
                          [helper.make_tensor_value_info("y", out_type, None)], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


_NP = {TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8}
_FMT = {TensorProto.UINT8: QFormat(8, 0, signed=False), TensorProto.INT8: QFormat(8, 0)}


def _run_ints(m, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("a_type,b_type", [(TensorProto.UINT8, TensorProto.INT8), (TensorProto.INT8, TensorProto.INT8),
                                           (TensorProto.UINT8, TensorProto.UINT8)])
def test_matmulinteger_and_convinteger_equal_the_ideal_accumulator(a_type, b_type):
    rng = np.random.default_rng(a_type * 10 + b_type)
    info_a, info_b = np.iinfo(_NP[a_type]), np.iinfo(_NP[b_type])
    a = rng.integers(info_a.min, info_a.max + 1, (7, 300)).astype(_NP[a_type])
    b = rng.integers(info_b.min, info_b.max + 1, (300, 5)).astype(_NP[b_type])
    got = _run_ints(_int_graph("MatMulInteger", a_type, b_type, [7, 300], [300, 5]), {"a": a, "b": b})
    kw = dict(fmt_x=_FMT[a_type], fmt_w=_FMT[b_type], fmt_y="Q62.0", acc_bits=62, overflow="ideal")
    res = dp.dense(a.astype(np.int64), b.astype(np.int64), **kw)
    np.testing.assert_array_equal(res.acc, got)
    np.testing.assert_array_equal(reference.dense(a[:2].astype(np.int64), b.astype(np.int64), **kw).acc, got[:2])
    x = rng.integers(info_a.min, info_a.max + 1, (2, 3, 9, 9)).astype(_NP[a_type])
    w = rng.integers(info_b.min, info_b.max + 1, (4, 3, 3, 3)).astype(_NP[b_type])
    for stride, pad in ((1, 1), (2, 0)):
        m = _int_graph("ConvInteger", a_type, b_type, list(x.shape), list(w.shape), pads=[pad] * 4,
                       strides=[stride, stride])
        got = _run_ints(m, {"a": x, "b": w})
        res = dp.conv2d(x.astype(np.int64), w.astype(np.int64), stride=stride, padding=pad, **kw)
        np.testing.assert_array_equal(res.acc, got)


def test_matmulinteger_beyond_int32_wraps_as_acc_bits_32():
    """K = 140000 int8 x int8: onnxruntime's int32 accumulator wraps (two's complement) exactly as
    fxpsim's 32-bit wrapping accumulator; the exact sums do leave int32."""
    k = 140_000
    rng = np.random.default_rng(7)
    a = rng.integers(125, 128, (3, k)).astype(np.int8)
    b = np.stack([rng.integers(125, 128, k), -rng.integers(125, 129, k), rng.integers(-128, 128, k)], 1)
    b = b.astype(np.int8)
    got = _run_ints(_int_graph("MatMulInteger", TensorProto.INT8, TensorProto.INT8, [3, k], [k, 3]), {"a": a, "b": b})
    exact = a.astype(np.int64) @ b.astype(np.int64)
    assert np.abs(exact[:, :2]).min() > 2 ** 31  # outside int32: the wrap is exercised
    res = dp.dense(a.astype(np.int64), b.astype(np.int64), fmt_x="Q8.0", fmt_w="Q8.0", fmt_y="Q32.0", acc_bits=32,
                   overflow="wrap")
    np.testing.assert_array_equal(res.acc, got)
    np.testing.assert_array_equal(got, ((exact + 2 ** 31) % 2 ** 32) - 2 ** 31)
    assert res.stats.overflow_count > 0


def _qlinear(op, x, w, fx, fw, fy, **attrs):
    """QLinearMatMul/QLinearConv with scales 2**-f, zero points 0, int8 everywhere."""
    s = lambda n, f: tensor(n, np.array(2.0 ** -f, np.float32))
    z = lambda n: helper.make_tensor(n, TensorProto.INT8, [], [0])
    inits = [s("xs", fx), z("xz"), helper.make_tensor("w", TensorProto.INT8, list(w.shape), w.reshape(-1).tolist()),
             s("ws", fw), z("wz"), s("ys", fy), z("yz")]
    g = helper.make_graph([helper.make_node(op, ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], **attrs)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.INT8, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return _run_ints(m, {"x": x})


def test_qlinear_ops_with_power_of_two_scales_equal_nearest_even_and_int8_saturation():
    """y = sat_int8(round_half_even(acc * 2**-(fx + fw - fy))): ties and saturation both occur."""
    rng = np.random.default_rng(11)
    fx, fw, fy = 4, 6, 3
    cfg = dict(fmt_x=QFormat(8 - fx, fx), fmt_w=QFormat(8 - fw, fw), fmt_y=QFormat(8 - fy, fy), acc_bits=32,
               overflow="ideal", rounding="nearest-even")
    x = rng.integers(-128, 128, (50, 40)).astype(np.int8)
    w = rng.integers(-128, 128, (40, 6)).astype(np.int8)
    got = _qlinear("QLinearMatMul", x, w, fx, fw, fy)
    res = dp.dense(x.astype(np.int64), w.astype(np.int64), **cfg)
    np.testing.assert_array_equal(res.y, got)
    shift = fx + fw - fy
    assert np.any(res.acc % (1 << shift) == 1 << (shift - 1))  # ties to even exercised
    assert np.any(np.abs(got.astype(int)) >= 127)  # saturation exercised
    xc = rng.integers(-128, 128, (2, 3, 7, 7)).astype(np.int8)
    wc = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    got = _qlinear("QLinearConv", xc, wc, fx, fw, fy, pads=[1, 1, 1, 1])
    np.testing.assert_array_equal(dp.conv2d(xc.astype(np.int64), wc.astype(np.int64), padding=1, **cfg).y, got)


# --------------------------------------------------------------------------- QONNX

def test_qonnx_mlp_formats_and_bit_identical_to_onnxruntime_qcdq(tmp_path, digits):
    """Quant nodes -> formats; the integer network = onnxruntime on the QCDQ twin, every logit."""
    imp = _import(tmp_path, qonnx_mlp(seed=0), input_scale=SCALE)
    cfg = imp.config
    assert [(str(c.fmt_x), str(c.fmt_w), str(c.fmt_y)) for c in cfg] == [("UQ1.7", "Q1.7", "UQ2.4"),
                                                                         ("UQ2.4", "Q-1.9", "Q5.3")]
    assert {c.overflow.value for c in cfg} == {"ideal"} and {c.rounding.value for c in cfg} == {"nearest-even"}
    assert imp.notes == () and imp.model.metadata["source"]["format"] == "qonnx"
    res = Simulator(imp.model).simulate(digits.x_test, cfg, digits.y_test)
    ref = ort_run(qonnx_mlp(seed=0, twin=True).model, ort_input(digits.x_test, "flat", SCALE), optimize=False)
    np.testing.assert_array_equal(res.logits, ref)
    assert res.accuracy > 0.1 and len(np.unique(ref)) > 20


def test_qonnx_cnn_avgpool_between_quants_and_logits_in_the_accumulator_format(tmp_path, digits):
    imp = _import(tmp_path, qonnx_cnn(seed=0), input_scale=SCALE)
    cfg = imp.config
    assert [(str(c.fmt_x), str(c.fmt_w), str(c.fmt_y)) for c in cfg] == [("UQ1.7", "Q1.7", "UQ3.5"),
                                                                         ("UQ3.5", "Q-1.9", "Q48.14")]
    assert any("accumulator format Q48.14" in n for n in imp.notes)
    res = Simulator(imp.model).simulate(digits.x_test, cfg)
    ref = ort_run(qonnx_cnn(seed=0, twin=True).model, ort_input(digits.x_test, "nchw", SCALE), optimize=False)
    np.testing.assert_array_equal(res.logits, ref.astype(np.float64))


def test_import_cli_writes_model_and_config_and_eval_runs_it(tmp_path, capsys, digits):
    src = save(qonnx_mlp(seed=0).model, tmp_path / "q.onnx")
    out = tmp_path / "q.npz"
    assert main(["import", src, "--out", str(out), "--input-scale", "0.0625"]) == 0
    printed = capsys.readouterr().out
    cfg_file = config_path(out)
    assert cfg_file.name == "q_config.json" and str(cfg_file) in printed
    assert json.loads(cfg_file.read_text())["layers"][1]["fmt_w"] == "Q-1.9"
    model = load_model(out)
    direct = load_onnx(src, input_scale=0.0625)
    x = digits.x_test[:20]
    np.testing.assert_array_equal(model.network.forward(model.preprocess.apply(x)),
                                  direct.network.forward(direct.preprocess.apply(x)))
    assert main(["eval", str(out), "--config", str(cfg_file), "--images", "100"]) == 0
    assert "fixed-point accuracy" in capsys.readouterr().out
    # the .onnx file itself as MODEL: imported on the fly, the same numbers as its imported .npz
    raw = tmp_path / "q_raw.npz"
    assert main(["import", src, "--out", str(raw)]) == 0
    capsys.readouterr()
    runs = []
    for model_arg in (str(raw), src):
        assert main(["eval", model_arg, "--config", str(config_path(raw)), "--images", "100"]) == 0
        runs.append([ln for ln in capsys.readouterr().out.splitlines() if "accuracy" in ln])
    assert runs[0] and runs[0] == runs[1]


# --------------------------------------------------------------------------- refusals

def _refused(tmp_path, model_or_bytes, match, cli=True, **kw):
    path = tmp_path / "bad.onnx"
    if isinstance(model_or_bytes, bytes):
        path.write_bytes(model_or_bytes)
    else:
        save(model_or_bytes, path)
    with pytest.raises(FxpsimError, match=match) as exc:
        import_onnx(path, **kw)
    assert "\n" not in str(exc.value)
    if cli:
        assert main(["import", str(path), "--out", str(tmp_path / "bad.npz")]) == 2
    return str(exc.value)


def _mlp_with(nodes_before, inits=(), in_shape=(64,), **kw):
    """x -> <nodes> -> 'h' -> MatMul to 10 classes -> y."""
    k = int(np.prod(kw.pop("k_shape", in_shape)))
    w = tensor("Wout", np.random.default_rng(0).normal(0, 0.3, (k, 10)))
    return graph_model([*nodes_before, node("MatMul", ["h", "Wout"], ["y"], name="out")], [*inits, w],
                       list(in_shape), **kw)


def test_bad_files_truncated_foreign_empty(tmp_path, capsys):
    good = FLOAT_MODELS["cnn_maxpool"](seed=0).model.SerializeToString()
    _refused(tmp_path, good[: len(good) // 2], r"bad\.onnx (is not an ONNX model or is truncated|has no graph)")
    _refused(tmp_path, b"hello, this is not onnx\n" * 10, r"bad\.onnx (is not an ONNX model|has no graph)")
    _refused(tmp_path, b"", r"bad\.onnx is empty")
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("fxpsim import: error: ") for line in err)


def test_refused_graph_shapes(tmp_path):
    relu = [node("Relu", ["x"], ["h"], name="relu")]
    _refused(tmp_path, _mlp_with(relu, opset=11), r"uses opset 11, older than 13")
    dyn = _mlp_with([node("Flatten", ["x"], ["h"], name="flat")], in_shape=(1, "H", 8), k_shape=(64,))
    _refused(tmp_path, dyn, r"dynamic shape \(dimension 2 is 'H'\)")
    two = _mlp_with(relu, outputs=("y", "h"))
    _refused(tmp_path, two, r"the graph has 2 outputs \(y, h\)")
    # branches and joins are imported (tests/simulate/test_dag_onnx.py), but not before the first
    # Conv/Gemm/MatMul, where the integer datapath has nothing to run them on
    branch = _mlp_with([*relu, node("Sigmoid", ["x"], ["s"], name="side")])
    _refused(tmp_path, branch, r"relu stands before the first Conv/Gemm/MatMul")
    _refused(tmp_path, _mlp_with(relu, elem_type=TensorProto.UINT8), r"input 'x' is not a float32 tensor")
    _refused(tmp_path, _mlp_with(relu, in_shape=(3, 8, 8)), r"matches no dataset's images", cli=False)
    _refused(tmp_path, _mlp_with(relu, in_shape=(784,)), r"has shape \(784,\) per image but the dataset's "
                                                           r"images are \(1, 8, 8\)", dataset="digits")


def test_refused_ops(tmp_path):
    nan = graph_model([node("MatMul", ["x", "Wn"], ["y"], name="fc")], [tensor("Wn", np.full((64, 10), np.nan))], [64])
    _refused(tmp_path, nan, r"node fc \(MatMul\): a weight or statistic holds NaN/inf")
    _refused(tmp_path, _mlp_with([node("Erf", ["x"], ["h"], name="erf_1")]),
             r"node erf_1 \(Erf\): op Erf has no fxpsim layer")
    zero, six = tensor("lo", np.array(0.0)), tensor("hi", np.array(6.0))
    _refused(tmp_path, _mlp_with([node("Clip", ["x", "lo", "hi"], ["h"], name="relu6")], [zero, six]),
             r"clip stands before the first Conv/Gemm/MatMul")
    w1 = tensor("W1", np.random.default_rng(1).normal(0, 0.3, (64, 64)))
    for lo_hi, shown in (([tensor("lo1", np.array(1.0))], r"Clip\(1, inf\)"), ([six, zero], r"Clip\(6, 0\)")):
        names = [t.name for t in lo_hi]
        half_open = _mlp_with([node("MatMul", ["x", "W1"], ["m"], name="fc1"),
                               node("Clip", ["m", *names], ["h"], name="clip_2")], [w1, *lo_hi])
        _refused(tmp_path, half_open, r"node clip_2 \(Clip\): " + shown + r" is not a finite range lo < hi")
    _refused(tmp_path, _mlp_with([node("Softmax", ["x"], ["h"], name="sm")]), r"node sm \(Softmax\): is not the last")
    w = tensor("W", np.zeros((4, 1, 3, 3)))
    conv = lambda **a: _mlp_with([node("Conv", ["x", "W"], ["c"], name="conv", **a),
                                  node("Flatten", ["c"], ["h"])], [w], in_shape=(1, 8, 8), k_shape=(4, 8, 8))
    _refused(tmp_path, conv(kernel_shape=[3, 3], pads=[1, 1, 1, 1], dilations=[2, 2]), r"conv \(Conv\): dilations")
    _refused(tmp_path, conv(kernel_shape=[3, 3], pads=[1, 0, 1, 2]), r"pads=\[1, 0, 1, 2\] are not one symmetric")
    wg = tensor("Wg", np.zeros((4, 2, 3, 3)))
    grouped = _mlp_with([node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                         node("Conv", ["c", "Wg"], ["g"], name="gconv", group=2, kernel_shape=[3, 3]),
                         node("Flatten", ["g"], ["h"])], [w, wg], in_shape=(1, 8, 8), k_shape=(4, 6, 6))
    assert import_onnx(save(grouped, tmp_path / "grouped.onnx")).model.network.layers[1].groups == 2
    wg3 = tensor("Wg", np.zeros((4, 4, 3, 3)))
    bad_group = _mlp_with([node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                           node("Conv", ["c", "Wg"], ["g"], name="gconv", group=3, kernel_shape=[3, 3]),
                           node("Flatten", ["g"], ["h"])], [w, wg3], in_shape=(1, 8, 8), k_shape=(4, 6, 6))
    _refused(tmp_path, bad_group, r"node gconv \(Conv\): group=3 does not divide its 4 filters")
    _refused(tmp_path, _mlp_with([node("MaxPool", ["x"], ["p"], name="mp", kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
                                  node("Flatten", ["p"], ["h"])], in_shape=(1, 8, 8), k_shape=(1, 5, 5)),
             r"mp \(MaxPool\): padded pooling")


def _quant_mlp(**attrs):
    """x -> Quant(attrs) -> MatMul (weights quantized) -> y."""
    scale = attrs.pop("scale", 2.0 ** -7)
    zp = attrs.pop("zp", 0.0)
    qn, qi = quant("Quant_3", "x", "h", 7, 8, False, **attrs)
    qi[0] = tensor("Quant_3_s", np.asarray(scale, np.float32))
    qi[1] = tensor("Quant_3_z", np.asarray(zp, np.float32))
    wq, wi = quant("q_w", "W", "Wq", 7, 8, True)
    w = tensor("W", np.random.default_rng(0).normal(0, 0.3, (64, 10)))
    return graph_model([qn, wq, node("MatMul", ["h", "Wq"], ["y"], name="fc")], [*qi, *wi, w], [64])


def test_refused_quant_nodes(tmp_path):
    msg = _refused(tmp_path, _quant_mlp(scale=0.0173), r"node Quant_3 \(Quant\): scale 0\.0173 is not a power of two")
    assert "not a Q-format; requantize with a power-of-two scale" in msg
    _refused(tmp_path, _quant_mlp(zp=3.0), r"Quant_3 \(Quant\): zero point 3 is not 0")
    narrow = import_onnx(save(_quant_mlp(narrow=1), tmp_path / "narrow.onnx")).config
    assert str(narrow[0].fmt_x) == "UQ1.7n" and narrow[0].fmt_x.raw_max == 254  # QONNX's unsigned narrow max_int
    _refused(tmp_path, _quant_mlp(scale=np.array([2.0 ** -7, 2.0 ** -6], np.float32)), r"per-channel scales differ")
    _refused(tmp_path, _quant_mlp(rounding_mode="CEIL"), r"rounding_mode 'CEIL' has no fxpsim rounding")
    assert import_onnx(save(_quant_mlp(scale=np.full(3, 2.0 ** -7, np.float32)), tmp_path / "ok.onnx")).config
    # a quantized layer feeding another with no Quant between them
    m = qonnx_mlp(seed=0).model
    q_h = next(n for n in m.graph.node if n.name == "q_h")
    m.graph.node.remove(q_h)
    next(n for n in m.graph.node if n.name == "fc2").input[0] = "r1"
    _refused(tmp_path, m, r"layer fc1 \(node fc1 \(Gemm\)\): no Quant between it and node fc2 \(Gemm\)")


def test_1m_parameter_import_time_and_memory(tmp_path):
    """A 784-1024-256-10 MLP (1.07 M float32 parameters, 4.3 MB): imported in under 5 s (issue 15's
    target; ~0.05 s measured), traced Python allocations below 4x the file: its bytes, their
    arrays, the parameters and their gradients at most (a regression guard; resident memory
    against the 3x target is measured by benchmarks/onnx_import.py)."""
    import time
    import tracemalloc

    rng = np.random.default_rng(0)
    sizes = (784, 1024, 256, 10)
    inits, nodes, prev = [], [], "x"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        inits += [tensor(f"W{i}", rng.normal(0, 0.05, (n, k))), tensor(f"b{i}", np.zeros(n))]
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(node("Gemm", [prev, f"W{i}", f"b{i}"], [f"g{i}" if out != "y" else "y"], transB=1))
        if out != "y":
            nodes.append(node("Relu", [f"g{i}"], [out]))
        prev = out
    path = save(graph_model(nodes, inits, [784]), tmp_path / "big.onnx")
    size = (tmp_path / "big.onnx").stat().st_size
    tracemalloc.start()
    t0 = time.perf_counter()
    model = load_onnx(path)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    params = sum(p.size for layer in model.network.layers for p in layer.params.values())
    assert params > 1_000_000 and model.metadata["dataset"] == "mnist"
    assert seconds < 5, seconds
    assert peak < 4 * size, (peak, size)


def _qchain(middle, inits=(), input_quant=True, conv_quant=True, rounding="ROUND"):
    """x -> [Quant] -> Conv (weights [Quant]) -> <middle: 'c' to 'm'> -> Flatten -> MatMul (Quant) -> y."""
    rng = np.random.default_rng(0)
    nodes, all_inits = [], [*inits, tensor("Wc_f", rng.normal(0, 0.3, (2, 1, 3, 3))),
                            tensor("Wf_f", rng.normal(0, 0.05, (128, 10)))]
    for name, src, dst, frac, signed, on in (("q_in", "x", "xq", 7, False, input_quant),
                                             ("q_wc", "Wc_f", "Wc", 7, True, conv_quant),
                                             ("q_wf", "Wf_f", "Wf", 9, True, True)):
        if on:
            qn, qi = quant(name, src, dst, frac, 8, signed)
            nodes.append(qn)
            all_inits += qi
        else:
            nodes.append(node("Identity", [src], [dst], name=f"{name}_off"))
    nodes += [node("Conv", ["xq", "Wc"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]), *middle,
              node("Flatten", ["m"], ["f"], name="flatten"), node("MatMul", ["f", "Wf"], ["y"], name="fc")]
    return graph_model(nodes, all_inits, [1, 8, 8])


def _requant(src, dst, rounding="ROUND"):
    qn, qi = quant("q_out", src, dst, 5, 8, False, rounding_mode=rounding)
    return qn, qi


def test_refused_quant_placements(tmp_path):
    """A Quant fxpsim cannot reproduce where it stands is refused, naming the layer and the node."""
    relu = node("Relu", ["c"], ["r"], name="relu")
    q, qi = _requant("r", "m")
    assert import_onnx(save(_qchain([relu, q], qi), tmp_path / "ok.onnx")).config is not None
    bn_inits = [tensor(n, v) for n, v in (("g", np.ones(2)), ("b", np.zeros(2)), ("mu", np.zeros(2)),
                                          ("var", np.ones(2)))]
    bn = node("BatchNormalization", ["c", "g", "b", "mu", "var"], ["n"], name="bn")
    q_n, qi_n = _requant("n", "m")
    _refused(tmp_path, _qchain([bn, q_n], [*bn_inits, *qi_n]), r"layer conv1 \(node conv \(Conv\)\): a "
                                                               r"BatchNormalization follows quantized weights")
    tanh = node("Tanh", ["c"], ["t"], name="tanh")
    q_t, qi_t = _requant("t", "m")
    _refused(tmp_path, _qchain([tanh, q_t], qi_t), r"layer conv1: its tanh stands before the first Quant of "
                                                   r"its output \(node conv \(Conv\)\)")
    q_f, qi_f = _requant("r", "m", rounding="FLOOR")
    _refused(tmp_path, _qchain([relu, q_f], qi_f), r"layer conv1: node q_in \(Quant\) rounds nearest-even and "
                                                   r"node q_out \(Quant\) rounds floor: fxpsim has one rounding")
    _refused(tmp_path, _qchain([relu, q], qi, input_quant=False), r"no Quant on the network input before "
                                                                  r"node conv \(Conv\)")
    _refused(tmp_path, _qchain([relu, q], qi, conv_quant=False), r"layer conv1 \(node conv \(Conv\)\) has float "
                                                                 r"weights \(no Quant on them\)")


def test_corrupted_files_are_one_line_errors_never_tracebacks(tmp_path):
    """Seeded random byte changes in float and QONNX files: each either imports or is one FxpsimError
    line (protobuf, NumPy and the graph checks all end there)."""
    rng = np.random.default_rng(5)
    sources = [FLOAT_MODELS["cnn_batchnorm"](seed=0).model.SerializeToString(),
               FLOAT_MODELS["cnn_torch_view"](seed=0).model.SerializeToString(),
               qonnx_mlp(seed=0).model.SerializeToString()]
    path = tmp_path / "fuzz.onnx"
    refused = 0
    for i in range(240):
        data = bytearray(sources[i % len(sources)])
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        try:
            import_onnx(path)
        except FxpsimError as exc:
            assert "\n" not in str(exc)
            refused += 1
    assert refused > 50  # 85 of 240 with this seed: the checks are exercised
