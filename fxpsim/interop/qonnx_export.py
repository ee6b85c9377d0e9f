"""An fxpsim model under a config as QONNX or QCDQ ONNX (issue 15, item 4).

``fxpsim export MODEL --config CFG --qonnx OUT.onnx [--qcdq]``. The graph, per stage
(:func:`fxpsim.simulate.build_stages`: BatchNorm folded, as the simulator folds it):

- the input: ``Quant(fmt_x)`` of the first layer (QONNX ``Quant``, power-of-two scale
  ``2**-FL``, zero point 0, bit width ``W``, ``signed``, ``narrow``, the layer's rounding);
- ``Gemm``/``Conv`` on ``Quant(fmt_w)`` of the simulator's quantized weights (on the grid, so
  the Quant is exact) and ``Quant(fmt_bias_acc)`` of its raw bias;
- ``Quant(fmt_y)`` on the kernel's output, then the stage's ops (Relu, MaxPool, AveragePool,
  Flatten, Sigmoid, Tanh; ``Quant(fmt_y)`` again after the last three, where fxpsim rounds),
  then ``Quant(fmt_x)`` of the next layer when it differs.

What Quant nodes cannot carry (BW_acc, the accumulator's overflow mode, the knobs) is the
config itself, in the model's ``metadata_props`` under :data:`CONFIG_KEY` (the JSON of
:meth:`~fxpsim.config.NetworkConfig.to_json` without its model record); the preprocessing
under :data:`PREPROCESS_KEY` (the ONNX input is the preprocessed image). ``fxpsim import``
takes both back when the Quant formats agree, so the round trip gives the same config and the
same integer network. ``qcdq=True`` writes each quantizer as QuantizeLinear [Clip]
DequantizeLinear instead (int8/uint8 data, integer weights and int32 biases with
DequantizeLinear), which onnxruntime runs: formats up to 8 bits (biases 32), and nearest-even
rounding (QuantizeLinear's only rule). Refused, one line: DAG and binary models, stochastic
rounding, a bias whose raw value float32 cannot hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import NetworkConfig
from ..errors import check
from ..qformat import QFormat, Rounding, dequantize

__all__ = ["CONFIG_KEY", "PREPROCESS_KEY", "QONNX_ROUNDING", "qonnx_model", "write_qonnx"]

CONFIG_KEY = "fxpsim.config"
PREPROCESS_KEY = "fxpsim.preprocess"
QONNX_ROUNDING = {Rounding.NEAREST_EVEN: "ROUND", Rounding.NEAREST: "HALF_UP", Rounding.FLOOR: "FLOOR",
                  Rounding.TOWARD_ZERO: "ROUND_TO_ZERO"}
"""fxpsim rounding -> QONNX ``rounding_mode`` (the inverse of :data:`~fxpsim.interop.qonnx.ROUNDING_MODES`)."""
_QONNX = "qonnx.custom_op.general"
_POST_OPS = {"relu": "Relu", "maxpool2d": "MaxPool", "avgpool2d": "AveragePool", "flatten": "Flatten",
             "sigmoid": "Sigmoid", "tanh": "Tanh", "dropout": None}
_REQUANT = ("avgpool2d", "sigmoid", "tanh")
"""Ops fxpsim runs in fmt_y and rounds there: a Quant(fmt_y) follows them."""


class _Graph:
    """Nodes and initializers as they are made, with unique names."""

    def __init__(self, qcdq: bool):
        from onnx import helper, numpy_helper
        self.helper, self.nh, self.qcdq = helper, numpy_helper, qcdq
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def init(self, base: str, value) -> str:
        name = self.name(base)
        self.inits.append(self.nh.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, base: str, **attrs) -> str:
        out = self.name(base)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def quant(self, x: str, fmt: QFormat, rounding: Rounding, base: str, where: str) -> str:
        """``x`` through fmt's quantizer: a QONNX Quant, or QuantizeLinear [Clip] DequantizeLinear."""
        check(rounding in QONNX_ROUNDING, f"{where}: rounding={rounding.value!r} has no QONNX rounding_mode: "
                                          f"export with one of {', '.join(r.value for r in QONNX_ROUNDING)}")
        scale = np.float32(2.0 ** -fmt.frac_bits)
        if not self.qcdq:
            s, z, b = (self.init(f"{base}_{k}", np.float32(v)) for k, v in
                       (("scale", scale), ("zeropt", 0.0), ("bitwidth", fmt.width)))
            out = self.name(base)
            self.nodes.append(self.helper.make_node("Quant", [x, s, z, b], [out], name=out, domain=_QONNX,
                                                    signed=int(fmt.signed), narrow=int(fmt.narrow),
                                                    rounding_mode=QONNX_ROUNDING[rounding]))
            return out
        check(fmt.width <= 8 and rounding is Rounding.NEAREST_EVEN,
              f"{where}: {fmt} with {rounding.value} rounding has no QuantizeLinear (8 bits at most, nearest-even): "
              "export QONNX (without --qcdq), or use such formats")
        dtype = np.int8 if fmt.signed else np.uint8
        s, z = self.init(f"{base}_scale", scale), self.init(f"{base}_zp", dtype(0))
        q = self.node("QuantizeLinear", [x, s, z], f"{base}_q")
        q = self._clip(q, fmt, dtype, base)
        return self.node("DequantizeLinear", [q, s, z], f"{base}_dq")

    def _clip(self, q: str, fmt: QFormat, dtype, base: str) -> str:
        info = np.iinfo(dtype)
        if (fmt.raw_min, fmt.raw_max) == (info.min, info.max):
            return q
        lo, hi = self.init(f"{base}_lo", dtype(fmt.raw_min)), self.init(f"{base}_hi", dtype(fmt.raw_max))
        return self.node("Clip", [q, lo, hi], f"{base}_clip")

    def param(self, raw: np.ndarray, fmt: QFormat, rounding: Rounding, base: str, where: str) -> str:
        """A quantized parameter: float values on fmt's grid through Quant(fmt), or (QCDQ) the raw
        integers [Clip] DequantizeLinear."""
        values = dequantize(raw, fmt)
        check(np.array_equal(values.astype(np.float32).astype(np.float64), values),
              f"{where}: a raw {base} value needs more than float32's 24 bits ({fmt}): not exact in a float "
              "ONNX graph; use narrower formats")
        if not self.qcdq:
            return self.quant(self.init(base, values.astype(np.float32)), fmt, rounding, f"q_{base}", where)
        small = fmt.width <= 8 and fmt.signed  # int8 [Clip]; else the raw values as int32 (a bias)
        lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
        check(small or (fmt.signed and -2**31 <= lo and hi < 2**31),
              f"{where}: {base} in {fmt} (raw {lo} .. {hi}) has no QCDQ integer type (int8 weights, int32 "
              "biases): export QONNX (without --qcdq)")
        dtype = np.int8 if small else np.int32
        s, z = self.init(f"{base}_scale", np.float32(2.0 ** -fmt.frac_bits)), self.init(f"{base}_zp", dtype(0))
        q = self.init(f"{base}_int", raw.astype(dtype))
        q = self._clip(q, fmt, dtype, base) if small else q
        return self.node("DequantizeLinear", [q, s, z], f"{base}_dq")


def qonnx_model(model, config: NetworkConfig, qcdq: bool = False):
    """The ONNX ModelProto of ``model`` under ``config`` (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    from ..simulate import Simulator
    sim = Simulator(model)
    sim.require_chain("QONNX export", "export a chain of layers")
    check(len(config) == len(sim.stages), f"the config has {len(config)} layers, the model {len(sim.stages)} "
                                          "compute layers: give the config made for this model")
    g = _Graph(qcdq)
    layers = model.network.layers
    x = g.quant("x", config[0].fmt_x, config[0].rounding, "q_x", f"layer {config[0].name}")
    first = next(j for j, layer in enumerate(layers) if layer.kind in ("dense", "conv2d"))
    for layer in layers[:first]:
        x = _post(g, x, layer)
    for i, (stage, cfg) in enumerate(zip(sim.stages, config)):
        where = f"layer {stage.name}"
        check(stage.binary is None and stage.kind in ("dense", "conv2d"),
              f"{where}: a binary (XNOR) stage has no QONNX export here: export the fixed-point model")
        w_raw, b_raw = sim.quantized_params(i, cfg)
        w = g.param(w_raw.T if stage.kind == "dense" else w_raw, cfg.fmt_w, cfg.rounding, f"{stage.name}_W", where)
        b = g.param(b_raw, cfg.fmt_bias_acc, cfg.rounding, f"{stage.name}_b", where)
        if stage.kind == "dense":
            y = g.node("Gemm", [x, w, b], stage.name, transB=1)
        else:
            p, k = stage.padding, stage.kernel_size
            y = g.node("Conv", [x, w, b], stage.name, kernel_shape=[k, k], strides=[stage.stride] * 2, pads=[p] * 4,
                       dilations=[1, 1], group=1)  # explicit: qonnx's channels-last Conv requires them
        y = g.quant(y, cfg.fmt_y, cfg.rounding, f"q_{stage.name}_y", where)
        if stage.relu:
            y = g.node("Relu", [y], f"{stage.name}_relu")
        for kind, layer in stage.post:
            y = _post(g, y, layer)
            if kind in _REQUANT:
                y = g.quant(y, cfg.fmt_y, cfg.rounding, f"q_{stage.name}_{kind}", where)
        nxt = config[i + 1] if i + 1 < len(config) else None
        if nxt is not None and nxt.fmt_x != cfg.fmt_y:
            y = g.quant(y, nxt.fmt_x, nxt.rounding, f"q_{nxt.name}_x", f"layer {nxt.name}")
        x = y
    g.nodes.append(helper.make_node("Identity", [x], ["y"], name="output"))
    shape = ["N", *model.network.input_shape]
    graph = helper.make_graph(g.nodes, "fxpsim", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *model.network.output_shape])],
                              g.inits)
    opsets = [helper.make_opsetid("", 13)] + ([] if qcdq else [helper.make_opsetid(_QONNX, 1)])
    out = helper.make_model(graph, opset_imports=opsets, producer_name="fxpsim")
    out.ir_version = 8  # what onnxruntime reads (onnx 1.23 writes 14)
    plain = NetworkConfig(tuple(config))
    prep = model.preprocess
    meta = {CONFIG_KEY: plain.to_json(),
            PREPROCESS_KEY: json.dumps({"mode": prep.mode, "mean": np.asarray(prep.mean).tolist(),
                                        "std": np.asarray(prep.std).tolist()})}
    onnx.helper.set_model_props(out, meta)
    return out


def _post(g: _Graph, x: str, layer) -> str:
    op = _POST_OPS.get(layer.kind, "?")
    check(op != "?", f"a {layer.kind} layer has no QONNX export here (fxpsim exports "
                     f"{', '.join(k for k in _POST_OPS)} between compute layers)")
    if op is None:
        return x
    if op in ("MaxPool", "AveragePool"):
        return g.node(op, [x], layer.kind, kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2,
                      pads=[0] * 4)  # explicit: qonnx's channels-last pooling requires them
    return g.node(op, [x], layer.kind, **({"axis": 1} if op == "Flatten" else {}))


def write_qonnx(path, model, config: NetworkConfig, qcdq: bool = False) -> Path:
    """Write :func:`qonnx_model` to ``path``; returns it."""
    import onnx
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(qonnx_model(model, config, qcdq), str(path))
    return path
