"""Small ONNX and QONNX models built with onnx.helper (no torch), and onnxruntime to run them.

Every builder takes a seed and returns a :class:`Built`: the ModelProto and the layout its
input has (``flat`` (N, 64), ``nchw`` (N, 1, 8, 8), ``nhwc`` (N, 8, 8, 1)), so
:func:`ort_input` can feed it the digits images. ``softmax=True`` ends the graph with a
Softmax (what fxpsim drops); without it the graph's output is the logits onnxruntime gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

QONNX = "qonnx.custom_op.general"
IR_VERSION = 8  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 reads up to 13


@dataclass(frozen=True)
class Built:
    model: onnx.ModelProto
    layout: str  # flat | nchw | nhwc


def tensor(name: str, value) -> onnx.TensorProto:
    arr = np.asarray(value)
    return numpy_helper.from_array(arr.astype(np.float32) if arr.dtype.kind == "f" else arr, name)


def node(op: str, inputs, outputs, name: str | None = None, **attrs) -> onnx.NodeProto:
    if op == "Quant":
        return helper.make_node("Quant", inputs, outputs, name=name, domain=QONNX, **attrs)
    return helper.make_node(op, inputs, outputs, name=name, **attrs)


def graph_model(nodes, inits, in_shape, *, opset: int = 13, batch="N", outputs=("y",),
                elem_type=TensorProto.FLOAT) -> onnx.ModelProto:
    """A model of ``nodes`` on input ``x`` of shape ``(batch, *in_shape)``; output(s) of unknown shape."""
    ins = [helper.make_tensor_value_info("x", elem_type, [batch, *in_shape])]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph(nodes, "g", ins, outs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    if any(n.domain == QONNX for n in nodes):
        opsets.append(helper.make_opsetid(QONNX, 1))
    m = helper.make_model(g, opset_imports=opsets, producer_name="fxpsim-tests")
    m.ir_version = IR_VERSION
    return m


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def ort_run(model: onnx.ModelProto, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    """onnxruntime's output on ``x``. ``optimize=False`` runs the graph as written: its default
    optimizer fuses QuantizeLinear/DequantizeLinear around Gemm into a QGemm whose
    requantization differs from the unfused graph (157 of 4500 logits of :func:`qonnx_mlp`'s
    twin by one lsb, measured with onnxruntime 1.31), so the QCDQ twins run unfused."""
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def ort_input(images: np.ndarray, layout: str, scale: float = 1.0) -> np.ndarray:
    """Digits images (N, 1, 8, 8) as the model's input (float32, times ``scale``)."""
    x = (images.astype(np.float32) * np.float32(scale)).astype(np.float32)
    if layout == "flat":
        return x.reshape(len(x), -1)
    if layout == "nhwc":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def _he(rng, shape, fan_in, gain=1.0):
    return rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), shape)


def _end(nodes, last: str, softmax: bool):
    if softmax:
        nodes.append(node("Softmax", [last], ["y"], name="softmax"))
    else:
        nodes[-1].output[0] = "y"
    return nodes


# --------------------------------------------------------------------------- float models

def mlp_gemm(seed=0, softmax=False) -> Built:
    """torch's nn.Linear: Gemm(transB=1); (N, 64) input, Relu, then a Tanh layer."""
    rng = np.random.default_rng(seed)
    inits = [tensor("W1", _he(rng, (32, 64), 64)), tensor("b1", rng.normal(0, 0.1, 32)),
             tensor("W2", _he(rng, (16, 32), 32)), tensor("b2", rng.normal(0, 0.1, 16)),
             tensor("W3", _he(rng, (10, 16), 16)), tensor("b3", rng.normal(0, 0.1, 10))]
    nodes = [node("Gemm", ["x", "W1", "b1"], ["h1"], name="fc1", transB=1), node("Relu", ["h1"], ["r1"], name="relu1"),
             node("Gemm", ["r1", "W2", "b2"], ["h2"], name="fc2", transB=1), node("Tanh", ["h2"], ["r2"], name="tanh"),
             node("Gemm", ["r2", "W3", "b3"], ["z"], name="fc3", transB=1, alpha=0.5, beta=2.0)]
    return Built(graph_model(_end(nodes, "z", softmax), inits, [64]), "flat")


def mlp_matmul(seed=0, softmax=False) -> Built:
    """tf2onnx's Dense: MatMul + Add; (N, 1, 8, 8) input flattened, Sigmoid, Dropout, Identity."""
    rng = np.random.default_rng(seed)
    inits = [tensor("W1", _he(rng, (64, 24), 64)), tensor("b1", rng.normal(0, 0.1, 24)),
             tensor("W2", _he(rng, (24, 10), 24, 2.0)), tensor("b2", rng.normal(0, 0.1, (1, 10)))]
    nodes = [node("Flatten", ["x"], ["f"], name="flatten"), node("MatMul", ["f", "W1"], ["m1"], name="matmul1"),
             node("Add", ["m1", "b1"], ["a1"], name="add1"), node("Sigmoid", ["a1"], ["s1"], name="sigmoid"),
             node("Dropout", ["s1"], ["d1"], name="dropout"), node("MatMul", ["d1", "W2"], ["m2"], name="matmul2"),
             node("Add", ["b2", "m2"], ["a2"], name="add2"), node("Identity", ["a2"], ["z"], name="identity")]
    return Built(graph_model(_end(nodes, "z", softmax), inits, [1, 8, 8]), "nchw")


def cnn_maxpool(seed=0, softmax=False) -> Built:
    """Conv(pads 1)-Relu-MaxPool-Flatten-Gemm, Clip(0, inf) as a second ReLU."""
    rng = np.random.default_rng(seed)
    inits = [tensor("Wc", _he(rng, (4, 1, 3, 3), 9)), tensor("bc", rng.normal(0, 0.1, 4)),
             tensor("Wf", _he(rng, (10, 64), 64)), tensor("bf", rng.normal(0, 0.1, 10)),
             tensor("zero", np.array(0.0, np.float32))]
    nodes = [node("Conv", ["x", "Wc", "bc"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("Relu", ["c"], ["r"], name="relu"),
             node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             node("Clip", ["p", "zero"], ["q"], name="clip"),
             node("Flatten", ["q"], ["f"], name="flatten"), node("Gemm", ["f", "Wf", "bf"], ["z"], name="fc", transB=1)]
    return Built(graph_model(_end(nodes, "z", softmax), inits, [1, 8, 8]), "nchw")


def cnn_batchnorm(seed=0, softmax=False) -> Built:
    """Conv(no bias)+Add-BatchNorm-Relu-AveragePool(count_include_pad=1)-Conv(SAME)-Tanh-Reshape(-1, n)-Gemm."""
    rng = np.random.default_rng(seed)
    inits = [tensor("W1", _he(rng, (6, 1, 3, 3), 9)), tensor("c1", rng.normal(0, 0.1, (1, 6, 1, 1))),
             tensor("gamma", rng.uniform(0.5, 1.5, 6)), tensor("beta", rng.normal(0, 0.2, 6)),
             tensor("mean", rng.normal(0, 0.3, 6)), tensor("var", rng.uniform(0.5, 2.0, 6)),
             tensor("W2", _he(rng, (5, 6, 3, 3), 54)), tensor("b2", rng.normal(0, 0.1, 5)),
             tensor("shape", np.array([-1, 5 * 3 * 3], np.int64)),
             tensor("Wf", _he(rng, (45, 10), 45)), tensor("bf", rng.normal(0, 0.1, 10))]
    nodes = [node("Conv", ["x", "W1"], ["c"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("Add", ["c", "c1"], ["cb"], name="bias1"),
             node("BatchNormalization", ["cb", "gamma", "beta", "mean", "var"], ["n"], name="bn", epsilon=1e-3),
             node("Relu", ["n"], ["r"], name="relu"),
             node("AveragePool", ["r"], ["p"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2], count_include_pad=1),
             node("Conv", ["p", "W2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], auto_pad="SAME_UPPER",
                  strides=[1, 1]),
             node("MaxPool", ["c2"], ["p2"], name="maxpool", kernel_shape=[2, 2], strides=[1, 1]),
             node("Tanh", ["p2"], ["t"], name="tanh"), node("Reshape", ["t", "shape"], ["f"], name="reshape"),
             node("Gemm", ["f", "Wf", "bf"], ["z"], name="fc")]
    return Built(graph_model(_end(nodes, "z", softmax), inits, [1, 8, 8]), "nchw")


def cnn_torch_view(seed=0, softmax=False) -> Built:
    """torch's ``x.view(x.size(0), -1)`` (Shape-Gather-Unsqueeze-Concat-Reshape) after a
    strided Conv and a GlobalAveragePool, then Gemm; Constant nodes for the shape pieces."""
    rng = np.random.default_rng(seed)
    inits = [tensor("W1", _he(rng, (8, 1, 3, 3), 9)), tensor("b1", rng.normal(0, 0.1, 8)),
             tensor("Wf", _he(rng, (10, 8), 8, 2.0)), tensor("bf", rng.normal(0, 0.1, 10))]
    const = lambda name, v: node("Constant", [], [name], name=f"const_{name}",
                                 value=numpy_helper.from_array(np.array(v, np.int64), name))
    nodes = [node("Conv", ["x", "W1", "b1"], ["c"], name="conv", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             node("Relu", ["c"], ["r"], name="relu"), node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             node("Shape", ["g"], ["sh"], name="shape"), const("i0", 0), const("axes", [0]), const("m1", [-1]),
             node("Gather", ["sh", "i0"], ["n"], name="gather", axis=0),
             node("Unsqueeze", ["n", "axes"], ["nu"], name="unsqueeze"),
             node("Concat", ["nu", "m1"], ["target"], name="concat", axis=0),
             node("Reshape", ["g", "target"], ["f"], name="view"),
             node("Gemm", ["f", "Wf", "bf"], ["z"], name="fc", transB=1)]
    return Built(graph_model(_end(nodes, "z", softmax), inits, [1, 8, 8]), "nchw")


def cnn_nhwc(seed=0, softmax=False) -> Built:
    """tf2onnx from Keras: NHWC input, Transpose to NCHW, Conv, Relu, Transpose back, Reshape, MatMul+Add."""
    rng = np.random.default_rng(seed)
    inits = [tensor("W1", _he(rng, (3, 1, 3, 3), 9)), tensor("b1", rng.normal(0, 0.1, 3)),
             tensor("shape", np.array([-1, 192], np.int64)),
             tensor("Wf", _he(rng, (192, 10), 192)), tensor("bf", rng.normal(0, 0.1, 10))]
    nodes = [node("Transpose", ["x"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
             node("Conv", ["t", "W1", "b1"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("Transpose", ["c"], ["ct"], name="to_nhwc", perm=[0, 2, 3, 1]),
             node("Relu", ["ct"], ["r"], name="relu"), node("Reshape", ["r", "shape"], ["f"], name="reshape"),
             node("MatMul", ["f", "Wf"], ["m"], name="matmul"), node("Add", ["m", "bf"], ["z"], name="add")]
    return Built(graph_model(_end(nodes, "z", softmax), inits, [8, 8, 1]), "nhwc")


FLOAT_MODELS = {"mlp_gemm": mlp_gemm, "mlp_matmul": mlp_matmul, "cnn_maxpool": cnn_maxpool,
                "cnn_batchnorm": cnn_batchnorm, "cnn_torch_view": cnn_torch_view, "cnn_nhwc": cnn_nhwc}


# --------------------------------------------------------------------------- QONNX and its QCDQ twin

def int_quant(x, frac: int, bits: int, signed: bool) -> np.ndarray:
    """QONNX's Quant in NumPy (its sample implementation): clamp(x / 2**-frac), round half even, rescale."""
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    y = np.clip(np.asarray(x, np.float64) * 2.0 ** frac, lo, hi)
    return (np.round(y) * 2.0 ** -frac).astype(np.float32)


def _quant_inits(name: str, frac: int, bits: int):
    return [tensor(f"{name}_s", np.array(2.0 ** -frac, np.float32)), tensor(f"{name}_z", np.array(0.0, np.float32)),
            tensor(f"{name}_b", np.array(float(bits), np.float32))]


def quant(name: str, src: str, dst: str, frac: int, bits: int, signed: bool, **attrs):
    """A QONNX Quant node and its scale/zero point/bit width initializers."""
    attrs = {"signed": int(signed), "narrow": 0, "rounding_mode": "ROUND", **attrs}
    return node("Quant", [src, f"{name}_s", f"{name}_z", f"{name}_b"], [dst], name=name, **attrs), \
        _quant_inits(name, frac, bits)


def qcdq(name: str, src: str, dst: str, frac: int, bits: int, signed: bool):
    """The same quantizer as QuantizeLinear (int8/uint8, round half even, saturating), a Clip in the
    integer domain for widths below 8, DequantizeLinear: what onnxruntime runs."""
    np_t = np.int8 if signed else np.uint8
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    inits = [tensor(f"{name}_s", np.array(2.0 ** -frac, np.float32)),
             numpy_helper.from_array(np.array(0, np_t), f"{name}_zp")]
    nodes = [node("QuantizeLinear", [src, f"{name}_s", f"{name}_zp"], [f"{name}_q"], name=f"{name}_ql")]
    q = f"{name}_q"
    if bits < 8:
        inits += [numpy_helper.from_array(np.array(lo, np_t), f"{name}_lo"),
                  numpy_helper.from_array(np.array(hi, np_t), f"{name}_hi")]
        nodes.append(node("Clip", [q, f"{name}_lo", f"{name}_hi"], [f"{name}_c"], name=f"{name}_clip"))
        q = f"{name}_c"
    nodes.append(node("DequantizeLinear", [q, f"{name}_s", f"{name}_zp"], [dst], name=f"{name}_dq"))
    return nodes, inits


def qonnx_mlp(seed=0, twin=False) -> Built:
    """Brevitas-style QAT MLP: input UQ1.7, fc1 weights Q1.7 (bias Quant 2**-14, 32 bits), ReLU then
    UQ2.4 (6 bits), fc2 weights Q-1.9 (bias 2**-13), output Q5.3. ``twin``: the same network as
    QCDQ with precomputed fake-quantized weights, for onnxruntime."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(0, 0.3, (32, 64)), rng.normal(0, 0.3, 32)
    w2, b2 = rng.normal(0, 0.08, (10, 32)), rng.normal(0, 0.3, 10)
    spec = [("q_in", "x", "xq", 7, 8, False), ("q_h", "r1", "hq", 4, 6, False), ("q_out", "h2", "y", 3, 8, True)]
    data = {s[0]: (qcdq if twin else quant)(*s) for s in spec}
    nodes, inits = [], []
    if twin:
        inits += [tensor("W1", int_quant(w1, 7, 8, True)), tensor("b1", int_quant(b1, 14, 32, True)),
                  tensor("W2", int_quant(w2, 9, 8, True)), tensor("b2", int_quant(b2, 13, 32, True))]
        wn = {"W1": "W1", "b1": "b1", "W2": "W2", "b2": "b2"}
    else:
        wn = {}
        for name, arr, frac, bits in (("W1", w1, 7, 8), ("b1", b1, 14, 32), ("W2", w2, 9, 8), ("b2", b2, 13, 32)):
            qn, qi = quant(f"q_{name}", f"{name}_f", f"{name}_q", frac, bits, True)
            nodes.append(qn)
            inits += [tensor(f"{name}_f", arr), *qi]
            wn[name] = f"{name}_q"

    def add(part):
        ns, ins = part
        nodes.extend(ns if isinstance(ns, list) else [ns])
        inits.extend(ins)

    add(data["q_in"])
    nodes += [node("Gemm", ["xq", wn["W1"], wn["b1"]], ["h1"], name="fc1", transB=1),
              node("Relu", ["h1"], ["r1"], name="relu1")]
    add(data["q_h"])
    nodes.append(node("Gemm", ["hq", wn["W2"], wn["b2"]], ["h2"], name="fc2", transB=1))
    add(data["q_out"])
    return Built(graph_model(nodes, inits, [64]), "flat")


def qonnx_cnn(seed=0, twin=False) -> Built:
    """Input UQ1.7, conv weights Q1.7 (float bias on the 2**-14 grid), ReLU, UQ3.5, AveragePool, UQ3.5
    again, Flatten, fc weights Q-1.9 and no output Quant (logits in the accumulator format)."""
    rng = np.random.default_rng(seed)
    wc, bc = rng.normal(0, 0.3, (4, 1, 3, 3)), np.round(rng.normal(0, 0.3, 4) * 2 ** 14) / 2 ** 14
    wf, bf = rng.normal(0, 0.08, (10, 64)), np.round(rng.normal(0, 0.3, 10) * 2 ** 14) / 2 ** 14
    nodes, inits = [], [tensor("bc", bc), tensor("bf", bf)]
    if twin:
        inits += [tensor("Wc", int_quant(wc, 7, 8, True)), tensor("Wf", int_quant(wf, 9, 8, True))]
        wn = {"Wc": "Wc", "Wf": "Wf"}
    else:
        wn = {}
        for name, arr, frac in (("Wc", wc, 7), ("Wf", wf, 9)):
            qn, qi = quant(f"q_{name}", f"{name}_f", f"{name}_q", frac, 8, True)
            nodes.append(qn)
            inits += [tensor(f"{name}_f", arr), *qi]
            wn[name] = f"{name}_q"
    make = qcdq if twin else quant

    def add(part):
        ns, ins = part
        nodes.extend(ns if isinstance(ns, list) else [ns])
        inits.extend(ins)

    add(make("q_in", "x", "xq", 7, 8, False))
    nodes += [node("Conv", ["xq", wn["Wc"], "bc"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
              node("Relu", ["c"], ["r"], name="relu")]
    add(make("q_r", "r", "rq", 5, 8, False))
    nodes.append(node("AveragePool", ["rq"], ["p"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]))
    add(make("q_p", "p", "pq", 5, 8, False))
    nodes += [node("Flatten", ["pq"], ["f"], name="flatten"),
              node("Gemm", ["f", wn["Wf"], "bf"], ["y"], name="fc", transB=1)]
    return Built(graph_model(nodes, inits, [1, 8, 8]), "nchw")
