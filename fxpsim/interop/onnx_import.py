"""A float or QONNX ONNX chain (or float DAG) as an fxpsim :class:`~fxpsim.modelfile.Model` (issue 15, import).

:func:`~fxpsim.interop.onnx_graph.read_graph` checks the file and yields its chain of nodes;
each node becomes fxpsim layers (or nothing), every other op is refused naming the node:

===========================  ==================================================================
ONNX op                      fxpsim
===========================  ==================================================================
Conv                         Conv2D: square kernel, equal strides, one symmetric padding
                             (explicit or SAME), dilation 1, any group (grouped, depthwise)
Gemm; MatMul (+ Add)         Dense ``W = alpha B`` (``B^T`` when ``transB``), ``b = beta C``;
                             MatMul's following Add of a constant is its bias
Add of a constant            added to the bias of the Conv/Gemm/MatMul right before it
BatchNormalization           BatchNorm right after its Conv/Dense: the simulator folds it there
                             (:func:`fxpsim.simulate.build_stages`, float64), as for a model
                             fxpsim trained
Relu, Clip(0, inf)           ReLU; Clip(lo, hi) with both bounds finite (ReLU6): Clip
Add, Concat of two tensors   a DAG (float models only): Add / Concat (axis 1) naming the layers
                             that computed their inputs; a tensor read twice is a branch
Sigmoid, Tanh                Sigmoid, Tanh
MaxPool, AveragePool         MaxPool2D, AvgPool2D: square window, no padding (so
                             ``count_include_pad`` changes nothing), floor mode (ceil mode only
                             where it is the same)
GlobalAveragePool/MaxPool    AvgPool2D/MaxPool2D over the whole (square) map; GlobalAvgPool (average,
                             non-square map)
Flatten (axis 1), Reshape    Flatten (a Reshape must give ``(batch, C*H*W)``; computed target
                             shapes, torch's ``x.view(x.size(0), -1)``, are evaluated)
Transpose                    tf2onnx's NHWC layout: ``(0, 3, 1, 2)`` on the input (the model
                             reads NHWC images; fxpsim feeds NCHW), ``(0, 2, 3, 1)`` before the
                             flatten (the next Dense's rows are permuted to NCHW order)
Dropout, Identity            dropped (inference)
Softmax, LogSoftmax          dropped when last (the argmax is unchanged)
Quant (QONNX), QCDQ          (QuantizeLinear [Clip] DequantizeLinear: :mod:`~fxpsim.interop.qcdq`)
                             on a weight: folded (the weight is fake-quantized, its format
                             kept); on data: dropped from the float network, its format goes
                             into the :class:`~fxpsim.config.NetworkConfig` (:func:`import_onnx`)
===========================  ==================================================================

The network's input is the dataset's image ``(C, H, W)``: an ONNX input of that shape is used
as it is, a flat or squeezed one of the same size (``(64,)``, ``(8, 8)``, ``(8, 8, 1)``)
gets a leading Flatten. Preprocessing is the identity, or ``x * input_scale``. The model's
metadata names the dataset, the source file (name and sha256), its producer and opset.

QONNX (:func:`qonnx_config`): each compute layer's ``fmt_w`` is its weight Quant's format,
``fmt_x`` the last Quant before it, ``fmt_y`` the first Quant after it (or, after the last
layer without one, the accumulator format itself: exact logits); accumulators ``ideal``, as
QONNX's executor computes, ``acc_bits`` :data:`~fxpsim.qformat.MAX_WIDTH` (the search sizes
real ones). Biases stay float in the model: the simulator quantizes them into the accumulator
format (FL_acc = FL_w + FL_x), exactly when the bias is on that grid (Brevitas'
``Int32Bias`` is); a bias off the grid is rounded there and named in :attr:`OnnxImport.notes`.
Refused, naming the node: ``Trunc`` and ``BipolarQuant`` (with the Quant-based form that does
import, or the binary path, as the fix), a quantized DAG (float DAGs import), a Quant whose
value fxpsim cannot reproduce where it stands (after
a BatchNorm folded into quantized weights; tanh, sigmoid or average pooling before the first
Quant of a layer's output, or between two Quants of different formats; no Quant between two
layers or on the input; one layer rounding two ways).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import LayerConfig, NetworkConfig
from ..errors import FxpsimError, check
from ..graph import AvgPool2D, BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, Network, ReLU, Sigmoid, Tanh
from ..graph.layers import Add, Clip, Concat, GlobalAvgPool
from ..modelfile import Model
from ..qformat import MAX_WIDTH, QFormat, Rounding
from ..simulate import build_stages
from ..train.data import DATASET_SHAPES, DERIVED_DATASETS, Preprocess, parse_dataset
from .onnx_graph import ChainNode, OnnxGraph, malformed, quant_node_spec, read_graph, reshape_target
from .qonnx_export import CONFIG_KEY, PREPROCESS_KEY
from .qonnx import QuantSpec

__all__ = ["SUPPORTED_OPS", "OnnxImport", "config_path", "import_onnx", "load_onnx", "qonnx_config"]

SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "Add", "Concat", "BatchNormalization", "Relu", "Clip", "Sigmoid", "Tanh",
                 "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
                 "Transpose", "Dropout", "Identity", "Softmax", "LogSoftmax", "Quant")
"""The ops of a chain :func:`import_onnx` maps (see the module docstring)."""

_LATER = {
    "Trunc": "QONNX Trunc (Brevitas' TruncAvgPool2d: a sum pool truncated to fewer bits) is not imported: "
             "export a plain AveragePool with a Quant after it (Brevitas: nn.AvgPool2d then QuantIdentity), "
             "which imports as fxpsim's average pooling in fmt_y",
    "BipolarQuant": "BipolarQuant (binary layers) is not imported: binary networks run with `fxpsim binary`",
}
_ELEMENTWISE = ("Relu", "Clip", "Sigmoid", "Tanh", "Identity", "Dropout", "Quant")
_GRID_KEEPING = ("relu", "maxpool2d", "flatten", "dropout")
"""Layers that commute with a Q-format's rounding and saturation (monotone, or a reshape)."""


@dataclass(frozen=True, eq=False)
class OnnxImport:
    """What :func:`import_onnx` made of a file: the model, the config of a QONNX graph (else
    None), and notes on what the config cannot make exact."""

    model: Model
    config: NetworkConfig | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class _Compute:
    """A compute layer as imported: its network index, node, and the Quant formats of its weight and bias."""

    index: int
    label: str
    w_spec: QuantSpec | None
    b_spec: QuantSpec | None


def _ints(node: ChainNode, name: str, default, n: int = 2) -> list[int]:
    value = node.attr(name)
    return [int(v) for v in (value if value is not None else [default] * n)]


def _square(node: ChainNode, name: str, values: list[int], what: str) -> int:
    check(len(values) == 2, f"{node.label}: {name}={values} is not 2-D: fxpsim runs 2-D images (N, C, H, W)")
    check(values[0] == values[1], f"{node.label}: {name}={values}: fxpsim's layers have one {what} for "
                                  "rows and columns; export with a square one")
    return values[0]


def _per_channel(node: ChainNode, c: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """The per-output-channel vector a constant added to a layer's ``out_shape`` output is."""
    try:
        full = np.broadcast_to(np.asarray(c, np.float32), (1, *out_shape))[0]
    except ValueError:
        raise FxpsimError(f"{node.label}: adds a constant of shape {np.shape(c)} to an output of shape "
                          f"{out_shape}: not a per-channel bias") from None
    ch = full[(slice(None),) + (0,) * (len(out_shape) - 1)]
    check(np.array_equal(full, np.broadcast_to(ch.reshape((-1,) + (1,) * (len(out_shape) - 1)), out_shape)),
          f"{node.label}: adds a constant that varies over positions, not a per-channel bias: fxpsim "
          "layers have one bias per output channel")
    return np.ascontiguousarray(ch)


class _Builder:
    """Walks the chain, appending layers; keeps the shapes and what the config needs."""

    def __init__(self, g: OnnxGraph, image_shape: tuple[int, ...]):
        self.g = g
        self.layers: list = []
        self.shape = tuple(image_shape)  # fxpsim's per-image shape of the current tensor
        self.onnx_shape = tuple(g.input_shape)  # the same tensor as the ONNX graph has it
        self.shapes = {g.input_name: self.onnx_shape}  # per-image ONNX shapes, for Shape nodes
        self.nhwc = False  # the tensor is channels-last (after tf2onnx's Transpose), until the flatten
        self.perm: np.ndarray | None = None  # NCHW <- NHWC flatten order, for the next Dense
        self.input_layout = "NCHW"
        self.quants: list[tuple[int, QuantSpec]] = []  # (position: before network layer i, format)
        self.computes: list[_Compute] = []
        self.used: set[int] = set()  # data addresses of the arrays already a layer's parameter
        self.readers: dict[str, int] = {}  # constant -> nodes still to read it
        for n in [*g.chain, *(node for _, node in g.shape_nodes.values())]:
            for name in n.inputs if isinstance(n, ChainNode) else n.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        # a DAG (residual Add, Concat, a tensor read twice): each tensor's producer layer and shapes
        self.dag = any(n.data_inputs for n in g.chain) or any(
            self.readers.get(n.data, 0) > 1 for n in g.chain)
        self.src = -1  # the layer whose output the current node reads (-1: the network input)
        self.tensors: dict[str, tuple[int, tuple, tuple]] = {}

    # --- helpers ----------------------------------------------------------------------------
    def const(self, node: ChainNode, i: int, what: str) -> np.ndarray | None:
        """Input ``i`` of ``node`` as a constant (:meth:`OnnxGraph.const`), dropped from the graph
        after its last reader: the file's copy of a weight is freed as soon as the layer has its own."""
        arr = self.g.const(node, i, what)
        if arr is not None:
            name = node.inputs[i]
            self.readers[name] -= 1
            if self.readers[name] <= 0:
                self.g.consts.pop(name, None)
        return arr

    def param(self, node: ChainNode, arr: np.ndarray) -> np.ndarray:
        """A float32 parameter array of its own: ``arr`` itself when it is a fresh array (a
        transposed or scaled weight), a copy when it is read-only (the file's constants are) or
        its memory is already a parameter. NaN/inf (or beyond float32) is refused, as
        :func:`fxpsim.modelfile.load_model` would refuse the model."""
        out = np.ascontiguousarray(arr, dtype=np.float32)
        finite = out.size == 0 or bool(np.isfinite(out.min()) and np.isfinite(out.max()))  # NaN propagates
        check(finite, f"{node.label}: a weight or statistic holds NaN/inf (or exceeds float32): fix the model "
                      "before export")
        address = out.__array_interface__["data"][0]
        if address in self.used or not out.flags.writeable:
            out = out.copy()
            address = out.__array_interface__["data"][0]
        self.used.add(address)
        return out

    def emit(self, layer, onnx_shape=None) -> None:
        if self.dag and self.src != len(self.layers) - 1:
            layer.inputs = (self.src,)  # reads an earlier tensor than the last layer's
        self.layers.append(layer)
        self.src = len(self.layers) - 1
        self.shape = tuple(layer.output_shape(self.shape))
        self.onnx_shape = self.shape if onnx_shape is None else tuple(onnx_shape)

    def join(self, node: ChainNode, layer) -> None:
        """A DAG's Add/Concat of the tensors ``node`` reads: a merge layer naming their producers."""
        got = [self.tensors[node.inputs[j]] for j in node.data_inputs]
        layer.inputs = tuple(src for src, _, _ in got)
        self.layers.append(layer)
        self.src = len(self.layers) - 1
        self.shape = tuple(layer.output_shape([shape for _, shape, _ in got]))
        self.onnx_shape = self.shape

    def need_image(self, node: ChainNode) -> None:
        check(len(self.shape) == 3, f"{node.label}: its input has shape {self.onnx_shape}, not (C, H, W): "
                                    "fxpsim runs it on images")

    def need_flat(self, node: ChainNode, k: int) -> None:
        check(self.shape == (k,), f"{node.label}: its input has shape {self.onnx_shape}, not ({k},): flatten "
                                  "before it (the weight has that many rows)")

    def last_compute(self, node: ChainNode) -> object:
        """The Conv2D/Dense this node acts on: the last layer, with no Quant after it."""
        last = self.layers[-1] if self.layers else None
        if self.dag:  # the layer right before must be this node's producer, and feed only it
            last = last if self.src == len(self.layers) - 1 and self.readers.get(node.data, 0) == 1 else None
        check(isinstance(last, (Conv2D, Dense)) and not (self.quants and self.quants[-1][0] == len(self.layers)),
              f"{node.label}: acts on the output of a layer that is not a Conv/Gemm/MatMul right before it "
              "(or after its output Quant): fxpsim adds biases and folds BatchNorm only there")
        return last

    def first_compute(self, node: ChainNode) -> None:
        """Before the first compute layer only a Flatten may stand (:func:`fxpsim.simulate.build_stages`'s
        rule: the integer datapath starts at the first Conv/Dense), checked here on the layer kinds so
        that the import never copies the weights to float64 stages."""
        other = [layer.kind for layer in self.layers if layer.kind != "flatten"]
        check(self.computes or not other, f"{node.label}: {other[0] if other else ''} stands before the first "
                                          "Conv/Gemm/MatMul, where the integer datapath has no mapping for it: "
                                          "fold it into the preprocessing (--input-scale) or remove it")

    # --- the walk -----------------------------------------------------------------------------
    def run(self) -> None:
        chain = list(self.g.chain)
        i = self._input(chain)
        while i < len(chain):
            node = chain[i]
            later = node.op.rsplit(".", 1)[-1]
            check(later not in _LATER, f"{node.label}: {_LATER.get(later)}")
            handler = getattr(self, f"_{node.op}", None) if node.op in SUPPORTED_OPS else None
            check(handler is not None, f"{node.label}: op {node.op} has no fxpsim layer (fxpsim imports "
                                       f"{', '.join(SUPPORTED_OPS)}): replace it before export")
            check(not self.nhwc or node.op in _ELEMENTWISE + ("Flatten", "Reshape", "Transpose"),
                  f"{node.label}: runs on channels-last (NHWC) data after a Transpose: fxpsim runs NCHW; "
                  "export the model channels-first or move the Transpose after it")
            if self.dag:
                check(not self.nhwc, f"{node.label}: a DAG with channels-last (NHWC) data: export it NCHW")
                self.src, self.shape, self.onnx_shape = self.tensors[node.data]
            with malformed(node.label):
                used = handler(node, chain, i) or 1
            self.shapes[chain[i + used - 1].output] = self.onnx_shape
            if self.dag:
                check(used == 1, f"{node.label}: fused with the nodes after it, which a DAG import does not do")
                self.tensors[node.output] = (self.src, self.shape, self.onnx_shape)
            i += used

    def _input(self, chain: list[ChainNode]) -> int:
        """Match the ONNX input to the dataset's image; returns the chain nodes consumed."""
        s, ds = self.onnx_shape, self.shape
        first = chain[0]
        self.tensors[self.g.input_name] = (-1, ds, s)
        if s == ds:
            return 0
        if (len(s) == 3 and first.op == "Transpose" and list(first.attr("perm") or []) == [0, 3, 1, 2]
                and (s[2], s[0], s[1]) == ds):
            self.input_layout = "NHWC"
            self.onnx_shape = ds
            self.shapes[first.output] = ds
            return 1
        squeeze = tuple(d for d in s if d != 1) == tuple(d for d in ds if d != 1)
        check(math.prod(s) == math.prod(ds) and (len(s) == 1 or squeeze),
              f"{self.g.path.name}: input {self.g.input_name!r} has shape {s} per image but the dataset's "
              f"images are {ds}: import with the --dataset the model was trained on")
        self.input_layout = "flat" if len(s) == 1 else "x".join(map(str, s))
        self.layers.append(Flatten())
        self.shape = (math.prod(ds),)
        self.tensors[self.g.input_name] = (0, self.shape, self.onnx_shape)
        return 0

    # --- compute layers -----------------------------------------------------------------------
    def _Conv(self, node, chain, i):
        self.need_image(node)
        W = self.const(node, 1, "weight")
        check(W is not None and W.ndim == 4, f"{node.label}: its weight has shape {np.shape(W)}, not (F, C, k, k): "
                                             "fxpsim runs 2-D convolutions")
        group = int(node.attr("group", 1))
        f, c, kh, kw = W.shape
        check(group >= 1 and f % group == 0, f"{node.label}: group={group} does not divide its {f} filters")
        check(c * group == self.shape[0], f"{node.label}: weight for {c} channels x group {group}, input has "
                                          f"{self.shape[0]}")
        c *= group
        self.first_compute(node)
        k = _square(node, "kernel_shape", [kh, kw], "kernel size")
        check(_ints(node, "dilations", 1) == [1, 1], f"{node.label}: dilations={node.attr('dilations')}: "
                                                     "fxpsim's conv2d has no dilation")
        s = _square(node, "strides", _ints(node, "strides", 1), "stride")
        p = self._padding(node, k, s)
        layer = Conv2D(c, f, k, s, p, group)
        layer.params["W"] = self.param(node, W)
        b = self.const(node, 2, "bias")
        if b is not None:
            check(b.size == f, f"{node.label}: its bias has {b.size} values for {f} filters")
            layer.params["b"] = self.param(node, b.reshape(f))
        self.computes.append(_Compute(len(self.layers), node.label, self.g.quant.get(node.inputs[1]),
                                      self.g.quant.get(node.inputs[2]) if len(node.inputs) > 2 else None))
        self.emit(layer)

    def _padding(self, node: ChainNode, k: int, s: int) -> int:
        auto = node.attr("auto_pad", "NOTSET")
        if auto == "VALID":
            return 0
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            totals = [max((-(-n // s) - 1) * s + k - n, 0) for n in self.shape[1:]]
            check(totals[0] == totals[1] and totals[0] % 2 == 0,
                  f"{node.label}: auto_pad={auto} pads {totals} in total, not one symmetric padding: fxpsim "
                  "pads every side alike; export with explicit symmetric pads")
            return totals[0] // 2
        pads = _ints(node, "pads", 0, 4)
        check(len(pads) == 4 and len(set(pads)) == 1,
              f"{node.label}: pads={pads} are not one symmetric padding: fxpsim pads every side alike")
        return pads[0]

    def _dense(self, node: ChainNode, W: np.ndarray, b: np.ndarray | None, w_spec, b_spec) -> None:
        k, n = W.shape
        self.need_flat(node, k)
        self.first_compute(node)
        if self.perm is not None:  # tf2onnx flattened NHWC: rows to fxpsim's NCHW order
            W, self.perm = W[self.perm], None
        layer = Dense(k, n)
        layer.params["W"] = self.param(node, W)
        if b is not None:
            layer.params["b"] = self.param(node, b)
        self.computes.append(_Compute(len(self.layers), node.label, w_spec, b_spec))
        self.emit(layer)

    def _Gemm(self, node, chain, i):
        check(node.data_input == 0 and not node.attr("transA", 0),
              f"{node.label}: the activation is not Gemm's untransposed A: fxpsim's Dense computes x W + b")
        B = self.const(node, 1, "weight B")
        check(B is not None and B.ndim == 2, f"{node.label}: its weight has shape {np.shape(B)}, not 2-D")
        alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
        W = B.T if node.attr("transB", 0) else B
        if alpha != 1.0:
            W = W * np.float32(alpha)
        C = self.const(node, 2, "bias C")
        b = None if C is None else _per_channel(node, C, (W.shape[1],)) * np.float32(beta)
        w_spec = self.g.quant.get(node.inputs[1]) if alpha == 1.0 else None
        b_spec = self.g.quant.get(node.inputs[2]) if C is not None and beta == 1.0 else None
        self._dense(node, W, b, w_spec, b_spec)

    def _MatMul(self, node, chain, i):
        check(node.data_input == 0, f"{node.label}: the activation is MatMul's second input: fxpsim's Dense "
                                    "computes x W")
        W = self.const(node, 1, "weight")
        check(W is not None and W.ndim == 2, f"{node.label}: its weight has shape {np.shape(W)}, not 2-D: "
                                             "fxpsim's Dense multiplies a flat input by a matrix")
        nxt = chain[i + 1] if i + 1 < len(chain) else None
        if nxt is not None and nxt.op == "Add" and nxt.data == node.output:
            c_name = nxt.inputs[1 - nxt.data_input]
            b = _per_channel(nxt, self.const(nxt, 1 - nxt.data_input, "bias"), (W.shape[1],))
            self._dense(node, W, b, self.g.quant.get(node.inputs[1]), self.g.quant.get(c_name))
            return 2
        self._dense(node, W, None, self.g.quant.get(node.inputs[1]), None)
        return 1

    def _Add(self, node, chain, i):
        if node.data_inputs:  # a residual Add of two computed tensors
            check(len(node.data_inputs) == 2, f"{node.label}: Add of {len(node.data_inputs)} inputs")
            self.join(node, Add())
            return
        layer = self.last_compute(node)
        c = self.const(node, 1 - node.data_input, "addend")
        layer.params["b"] = self.param(node, layer.params["b"] + _per_channel(node, c, self.shape))

    def _BatchNormalization(self, node, chain, i):
        self.last_compute(node)
        check(node.data_input == 0, f"{node.label}: the data is not BatchNormalization's input X")
        check(not node.attr("training_mode", 0), f"{node.label}: training_mode=1: export the model in eval mode")
        n = self.shape[0]
        gamma, beta, mean, var = (self.const(node, j, what) for j, what in
                                  enumerate(("scale", "bias", "mean", "variance"), start=1))
        check(all(a is not None and a.size == n for a in (gamma, beta, mean, var)),
              f"{node.label}: scale, bias, mean and variance must each hold {n} values (one per channel)")
        eps = float(node.attr("epsilon", 1e-5))
        layer = BatchNorm(n, eps=eps)
        layer.params["gamma"], layer.params["beta"] = self.param(node, gamma.reshape(n)), self.param(node, beta.reshape(n))
        layer.buffers["running_mean"] = self.param(node, mean.reshape(n))
        layer.buffers["running_var"] = self.param(node, var.reshape(n))
        self.emit(layer)

    # --- elementwise, pooling, reshapes ----------------------------------------------------------
    def _Relu(self, node, chain, i):
        self.emit(ReLU(), self.onnx_shape)

    def _Clip(self, node, chain, i):
        lo, hi = self.const(node, 1, "min"), self.const(node, 2, "max")
        check(all(v is None or v.size == 1 for v in (lo, hi)), f"{node.label}: its min and max are not scalars")
        lo_v = -math.inf if lo is None else float(lo.reshape(-1)[0])
        hi_v = math.inf if hi is None else float(hi.reshape(-1)[0])
        if lo_v == 0 and hi_v == math.inf:
            self.emit(ReLU(), self.onnx_shape)
            return
        check(math.isfinite(lo_v) and math.isfinite(hi_v) and lo_v < hi_v,
              f"{node.label}: Clip({lo_v:g}, {hi_v:g}) is not a finite range lo < hi: fxpsim clips to [lo, hi] "
              "(ReLU6: Clip(0, 6)) or is a ReLU (Clip(0, inf))")
        self.emit(Clip(lo_v, hi_v), self.onnx_shape)

    def _Concat(self, node, chain, i):
        check(len(node.data_inputs) >= 2 and len(node.data_inputs) == len([n for n in node.inputs if n]),
              f"{node.label}: Concat of a constant: fxpsim joins computed tensors only")
        rank = len(self.onnx_shape) + 1
        axis = int(node.attr("axis", 1))
        check(axis in (1, 1 - rank), f"{node.label}: Concat(axis={axis}): fxpsim joins along channels (axis=1)")
        self.join(node, Concat(len(node.data_inputs)))

    def _Sigmoid(self, node, chain, i):
        self.emit(Sigmoid(), self.onnx_shape)

    def _Tanh(self, node, chain, i):
        self.emit(Tanh(), self.onnx_shape)

    def _pool(self, node: ChainNode, cls) -> None:
        self.need_image(node)
        k = _square(node, "kernel_shape", _ints(node, "kernel_shape", 0), "window size")
        s = _square(node, "strides", _ints(node, "strides", 1), "stride")
        check(node.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID") and set(_ints(node, "pads", 0, 4)) == {0},
              f"{node.label}: padded pooling (pads={node.attr('pads')}, auto_pad={node.attr('auto_pad', 'NOTSET')}): "
              "fxpsim's pooling layers do not pad; export without padding")
        check(_ints(node, "dilations", 1) == [1, 1], f"{node.label}: dilated pooling is not in fxpsim")
        if node.attr("ceil_mode", 0):
            check(all((n - k) % s == 0 for n in self.shape[1:]),
                  f"{node.label}: ceil_mode=1 keeps partial windows on a {self.shape[1]}x{self.shape[2]} map: "
                  "fxpsim pools in floor mode; export with ceil_mode=0")
        self.emit(cls(k, s))

    def _MaxPool(self, node, chain, i):
        check(not node.attr("storage_order", 0), f"{node.label}: storage_order=1 is not supported")
        self._pool(node, MaxPool2D)

    def _AveragePool(self, node, chain, i):
        self._pool(node, AvgPool2D)

    def _global(self, node: ChainNode, cls) -> None:
        self.need_image(node)
        c, h, w = self.shape
        if h != w and cls is AvgPool2D:  # a non-square map: the global average layer, (C, 1, 1) in ONNX
            self.emit(GlobalAvgPool(), (c, 1, 1))
            return
        check(h == w, f"{node.label}: a global pool over a {h}x{w} map (not square) has no fxpsim layer: "
                      "fxpsim's pooling windows are square")
        if h > 1:
            self.emit(cls(h, h))

    def _GlobalAveragePool(self, node, chain, i):
        self._global(node, AvgPool2D)

    def _GlobalMaxPool(self, node, chain, i):
        self._global(node, MaxPool2D)

    def _flatten(self, node: ChainNode) -> None:
        if self.nhwc:
            h, w, c = self.onnx_shape
            self.perm = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
            self.nhwc = False
        if len(self.shape) > 1:
            self.emit(Flatten())
        self.onnx_shape = self.shape

    def _Flatten(self, node, chain, i):
        rank = len(self.onnx_shape) + 1
        axis = int(node.attr("axis", 1))
        check(axis in (1, 1 - rank), f"{node.label}: Flatten(axis={axis}) keeps more than the batch axis: "
                                     "fxpsim flattens (batch, C, H, W) to (batch, C*H*W) (axis=1)")
        self._flatten(node)

    def _Reshape(self, node, chain, i):
        size = math.prod(self.onnx_shape)
        for batch in ([self.g.batch] if self.g.batch else [2, 3]):
            target = reshape_target(node.label, (batch, *self.onnx_shape),
                                    self.g.shape_value(node.inputs[1], self.shapes, batch),
                                    int(node.attr("allowzero", 0)))
            check(target == (batch, size), f"{node.label}: reshapes (batch, {', '.join(map(str, self.onnx_shape))}) "
                                           f"to {target} (batch {batch}), not to (batch, {size}): fxpsim "
                                           "takes a Reshape only as a flatten")
        self._flatten(node)

    def _Transpose(self, node, chain, i):
        perm = list(node.attr("perm") or [])
        if perm == [0, 2, 3, 1] and not self.nhwc and len(self.shape) == 3:
            c, h, w = self.shape
            self.nhwc, self.onnx_shape = True, (h, w, c)
        elif perm == [0, 3, 1, 2] and self.nhwc:
            self.nhwc, self.onnx_shape = False, self.shape
        else:
            raise FxpsimError(f"{node.label}: perm={perm} on a tensor of shape {self.onnx_shape}: fxpsim takes "
                              "a Transpose only as tf2onnx's NCHW/NHWC layout change")

    def _Dropout(self, node, chain, i):
        pass

    _Identity = _Dropout

    def _Softmax(self, node, chain, i):
        check(i == len(chain) - 1, f"{node.label}: is not the last node: fxpsim drops only a final softmax "
                                   "(the argmax is the same)")
        check(len(self.shape) == 1 and int(node.attr("axis", -1)) in (-1, 1),
              f"{node.label}: a softmax over axis {node.attr('axis', -1)} of shape {self.onnx_shape}, not over "
              "the classes")

    _LogSoftmax = _Softmax

    def _Quant(self, node, chain, i):
        args = [None] + [self.const(node, j, what) for j, what in ((1, "scale"), (2, "zero point"), (3, "bit width"))]
        self.quants.append((len(self.layers), quant_node_spec(node.label, node.attrs, args)))


# --------------------------------------------------------------------------- the QONNX config

def _acc_format(fmt_w: QFormat, fmt_x: QFormat) -> QFormat:
    """The accumulator's own format at ideal width: exact logits after a layer without an output Quant."""
    frac = fmt_w.frac_bits + fmt_x.frac_bits
    return QFormat(MAX_WIDTH - frac, frac)


def qonnx_config(network: Network, computes: list[_Compute], quants: list[tuple[int, QuantSpec]],
                 where: str = "") -> tuple[NetworkConfig, tuple[str, ...]]:
    """The formats of a QONNX chain's Quant nodes as one LayerConfig per stage, and notes
    (see the module docstring for where each format comes from and what is refused)."""
    at = f"{where}: " if where else ""
    stages = build_stages(network)
    kinds = [layer.kind for layer in network.layers]
    idx = [c.index for c in computes]
    bounds = idx + [len(kinds)]

    def events(lo: int, hi: int):
        """Layers lo+1 .. hi-1 and the Quants after layer lo up to layer hi, in order."""
        out = []
        for pos in range(lo + 1, hi + 1):
            out += [("quant", q) for p, q in quants if p == pos]
            if pos < hi:
                out.append(("layer", kinds[pos]))
        return out

    # the input: every Quant before the first compute layer
    inputs = [q for p, q in quants if p <= idx[0]]
    check(inputs, f"{at}no Quant on the network input before {computes[0].label}: the integer network needs "
                  "the input format (add an input QuantIdentity)")
    check(len({q.fmt for q in inputs}) == 1, f"{at}the input is quantized to {', '.join(str(q.fmt) for q in inputs)} "
                                              f"in turn ({inputs[-1].node}): fxpsim quantizes it once")
    fmt_x = inputs[-1].fmt
    modes: list[list[QuantSpec]] = [[inputs[-1]]] + [[] for _ in computes[1:]]  # the Quants each layer rounds as
    layers, notes = [], []
    for k, (comp, stage) in enumerate(zip(computes, stages)):
        last = k == len(computes) - 1
        check(comp.w_spec is not None, f"{at}layer {stage.name} ({comp.label}) has float weights (no Quant on "
                                       "them): a config needs every layer's weight format")
        fmt_w = comp.w_spec.fmt
        state, fmt_y, nxt, node = "acc", None, None, comp.label
        for ev, value in events(idx[k], bounds[k + 1]):
            if ev == "layer":
                if value == "batchnorm":
                    raise FxpsimError(f"{at}layer {stage.name} ({comp.label}): a BatchNormalization follows "
                                      "quantized weights, and fxpsim folds it into them, changing their values: "
                                      "merge BatchNorm into the weights before quantizing (Brevitas: "
                                      "merge_bn) or export the float model")
                if value in _GRID_KEEPING:
                    continue
                check(state == "y", f"{at}layer {stage.name}: its {value} stands "
                                    f"{'before the first Quant of its output' if state == 'acc' else 'after a change of format'} "
                                    f"({node}): fxpsim runs {value} on the quantized output; put a Quant before it")
                state = "dirty"
                continue
            q = value
            if state == "acc":
                fmt_y, state = q.fmt, "y"
                modes[k].append(q)
            elif state in ("y", "dirty") and q.fmt == fmt_y:
                if state == "dirty":
                    modes[k].append(q)
                state = "y"
            elif state == "y" and not last:
                nxt, state = q, "x"
                if q.fmt.frac_bits < fmt_y.frac_bits:
                    modes[k + 1].append(q)
            elif state == "x" and q.fmt == nxt.fmt:
                pass
            else:
                raise FxpsimError(f"{at}layer {stage.name}: {q.node} quantizes to {q.fmt} after "
                                  f"{', '.join(str(f) for f in (fmt_y, nxt and nxt.fmt) if f)}"
                                  f"{' and a tanh/sigmoid/average pooling' if state == 'dirty' else ''}: fxpsim "
                                  "converts a layer's output once (fmt_y to the next layer's fmt_x; the logits "
                                  "stay in fmt_y) and runs tanh/sigmoid/average pooling in fmt_y")
            node = q.node
        if state == "acc" and not last:
            raise FxpsimError(f"{at}layer {stage.name} ({comp.label}): no Quant between it and "
                              f"{computes[k + 1].label}: the integer network needs its output format")
        if state == "acc":
            fmt_y = _acc_format(fmt_w, fmt_x)
            notes.append(f"{stage.name}: no output Quant, output in the accumulator format {fmt_y} (exact logits)")
        check(state != "dirty", f"{at}layer {stage.name}: the output of its tanh/sigmoid/average pooling is not "
                                f"quantized again{'' if last else ' before ' + computes[k + 1].label}: put a Quant after it")
        b = np.asarray(network.layers[comp.index].params["b"], np.float64)
        frac = fmt_w.frac_bits + fmt_x.frac_bits
        if _off_grid(b, frac):
            notes.append(f"{stage.name}: bias not on the accumulator grid 2**-{frac} "
                         f"({'float' if comp.b_spec is None else comp.b_spec.node}): the simulator rounds it "
                         "there (Brevitas' Int32Bias gives exact biases)")
        rounding = _one_rounding(at, stage.name, modes[k])
        layers.append(LayerConfig(stage.name, fmt_w, fmt_x, fmt_y, acc_bits=MAX_WIDTH, overflow="ideal",
                                  rounding=rounding))
        fmt_x = nxt.fmt if nxt is not None else fmt_y
    return NetworkConfig(tuple(layers)), tuple(notes)


def _one_rounding(at: str, name: str, specs: list[QuantSpec]) -> Rounding:
    """The one rounding mode of a layer's rounding Quants (nearest-even when none rounds)."""
    found = {q.rounding for q in specs}
    check(len(found) <= 1, f"{at}layer {name}: {' and '.join(f'{q.node} rounds {q.rounding.value}' for q in specs)}: "
                           "fxpsim has one rounding mode per layer; export with one rounding mode")
    return found.pop() if found else Rounding.NEAREST_EVEN


# --------------------------------------------------------------------------- the entry points

def _dataset_for(g: OnnxGraph, dataset: str | None) -> str:
    """``dataset`` checked, or the one source dataset (not a derived one such as digits28) whose
    images have as many values as the input."""
    if dataset is not None:
        return parse_dataset(dataset)
    size = math.prod(g.input_shape)
    sources = {k: v for k, v in DATASET_SHAPES.items() if k not in DERIVED_DATASETS}
    fits = [name for name, (shape, _) in sources.items() if math.prod(shape) == size]
    check(len(fits) == 1, f"{g.path.name}: input {g.input_name!r} of shape {g.input_shape} matches "
                          f"{'no' if not fits else 'more than one'} dataset's images "
                          f"({', '.join(f'{k} {v[0]}' for k, v in sources.items())}): give --dataset")
    return fits[0]


def _preprocess(channels: int, input_scale: float | None) -> tuple[Preprocess, str]:
    zeros = np.zeros((channels, 1, 1), np.float32)
    if input_scale is None:
        return Preprocess("none", zeros, np.ones((channels, 1, 1), np.float32)), "identity"
    s = float(input_scale)
    check(math.isfinite(s) and s > 0, f"--input-scale {input_scale!r} is not a finite number > 0: give the "
                                      "factor the model's inputs were scaled by, e.g. 0.0625 for pixels / 16")
    return Preprocess("none", zeros, np.full((channels, 1, 1), 1.0 / s, np.float32)), f"x * {s:.17g}"


def import_onnx(path, dataset: str | None = None, input_scale: float | None = None) -> OnnxImport:
    """An ONNX (or QONNX) file as an fxpsim model, with the QONNX formats as a config.

    ``dataset`` (``digits`` | ``mnist``; None: the one whose image size the input has) is
    what the model runs on; ``input_scale`` multiplies the raw images (the model's
    preprocessing; default the identity). Any node fxpsim cannot map is one line naming it.
    """
    g = read_graph(path)
    name = _dataset_for(g, dataset)
    image_shape, n_classes = DATASET_SHAPES[name]
    b = _Builder(g, image_shape)
    check(not (b.dag and g.has_quant), f"{g.path.name}: a QONNX/QCDQ DAG (residual or concatenating): fxpsim "
                                       "imports quantized chains and float DAGs; export the float model")
    b.run()
    check(b.computes, f"{g.path.name}: no Conv, Gemm or MatMul: nothing for the datapath to run")
    check(b.shape == (n_classes,), f"{g.path.name}: the network outputs shape {b.onnx_shape} per image but "
                                   f"{name} has {n_classes} classes: import with the right --dataset")
    network = Network(b.layers, image_shape, seed=0)
    preprocess, prep_text = _preprocess(image_shape[0], input_scale)
    if PREPROCESS_KEY in g.metadata and input_scale is None:  # fxpsim's own export
        preprocess, prep_text = _exported_preprocess(g), "as exported by fxpsim"
    source = {"format": ("qcdq" if g.qcdq else "qonnx") if g.has_quant else "onnx", "file": g.path.name, "sha256": g.sha256,
              "producer": g.producer, "opset": g.opset, "input": g.input_name,
              "input_shape": list(g.input_shape), "input_layout": b.input_layout}
    metadata = {"dataset": name, "source": source, "preprocess": prep_text}
    if input_scale is not None:
        metadata["input_scale"] = float(input_scale)
    model = Model(network, preprocess, metadata)
    if not g.has_quant:
        return OnnxImport(model, None)
    config, notes = qonnx_config(network, b.computes, b.quants, g.path.name)
    if CONFIG_KEY in g.metadata:  # its FL_acc decides the bias grid
        config = _exported_config(g, config)
        notes = tuple(n for n in notes if "bias not on the accumulator grid" not in n) + tuple(
            f"{c.name}: bias not on the accumulator grid 2**-{c.fmt_bias_acc.frac_bits}: the simulator rounds it there"
            for c, comp in zip(config, b.computes) if _off_grid(network.layers[comp.index].params["b"], c.fmt_bias_acc.frac_bits))
    return OnnxImport(model, config, notes)


def _off_grid(b, frac: int) -> bool:
    scaled = np.ldexp(np.asarray(b, np.float64), frac)
    return bool(np.any(scaled != np.round(scaled)))


def _exported_config(g: OnnxGraph, derived: NetworkConfig) -> NetworkConfig:
    """The config fxpsim's export wrote (:data:`~fxpsim.interop.qonnx_export.CONFIG_KEY`: BW_acc,
    overflow and knobs, which Quant nodes cannot carry), checked against the Quant nodes' formats."""
    try:
        written = NetworkConfig.from_json(g.metadata[CONFIG_KEY])
    except FxpsimError as exc:
        raise FxpsimError(f"{g.path.name}: metadata {CONFIG_KEY} is not an fxpsim config ({exc}): remove it "
                          "or export again") from None
    fields = ("name", "fmt_w", "fmt_x", "fmt_y")
    got = [tuple(str(getattr(c, f)) for f in fields) for c in written]
    want = [tuple(str(getattr(c, f)) for f in fields) for c in derived]
    check(got == want, f"{g.path.name}: metadata {CONFIG_KEY} gives the layers {got}, the Quant nodes {want}: the "
                       "file was changed after fxpsim exported it; remove the metadata or export again")
    return written


def _exported_preprocess(g: OnnxGraph) -> Preprocess:
    """The preprocessing fxpsim's export wrote (:data:`~fxpsim.interop.qonnx_export.PREPROCESS_KEY`)."""
    with malformed(f"{g.path.name}: metadata {PREPROCESS_KEY}"):
        d = json.loads(g.metadata[PREPROCESS_KEY])
        return Preprocess(str(d["mode"]), np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def load_onnx(path, dataset: str | None = None, input_scale: float | None = None) -> Model:
    """The fxpsim model of an ONNX file (:func:`import_onnx` without the config): what a command
    taking MODEL runs when it is given an ``.onnx`` file."""
    return import_onnx(path, dataset, input_scale).model


def config_path(out) -> Path:
    """Where ``fxpsim import ... --out M.npz`` writes a QONNX graph's config: ``M_config.json``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_config.json")
