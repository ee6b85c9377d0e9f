"""An ONNX file read and checked into a chain of nodes (ONNX IR, default-domain opset >= 13).

:func:`read_graph` checks, each refusal one line naming the node, its op and why: the file
parses as an ONNX model with a graph (a truncated or foreign file does not); the opset is at
least :data:`MIN_OPSET`; one float input of fixed shape (the batch dimension may be
symbolic); one output. Then every tensor is of one of three kinds:

QCDQ groups (QuantizeLinear/Clip/DequantizeLinear) are first rewritten to QONNX Quant nodes
(:func:`~fxpsim.interop.qcdq.qcdq_to_quant`).

- constant: an initializer, a ``Constant`` node, or the output of a node computed from
  constants only, folded here with NumPy (:data:`FOLDABLE`; a QONNX ``Quant`` on a weight
  included, its :class:`~fxpsim.interop.qonnx.QuantSpec` remembered for the tensor and for
  what Identity/Transpose/Reshape/Cast make of it);
- shape: arithmetic on the ``Shape`` of the data (torch's ``x.view(x.size(0), -1)``),
  evaluated for a batch size when a ``Reshape`` needs it (:meth:`OnnxGraph.shape_value`);
- data: computed from the network input. A data node has exactly one data input (two are a
  residual ``Add`` or a ``Concat``: DAG networks, not in this fxpsim yet) and the data nodes
  form one chain from the input to the output: no tensor feeds two of them.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FxpsimError, check
from .qcdq import qcdq_to_quant
from .qonnx import QUANT_DOMAINS, QUANT_OPS, QuantSpec, quant_spec

try:  # the test extra: fxpsim itself runs without onnx
    import onnx
    from onnx import external_data_helper, numpy_helper
except ImportError:  # pragma: no cover - exercised only where onnx is missing
    onnx = None

__all__ = ["FOLDABLE", "MIN_OPSET", "ChainNode", "OnnxGraph", "malformed", "quant_node_spec", "read_graph",
           "reshape_target"]

MIN_OPSET = 13
"""Oldest default-domain opset read: 13 moved Squeeze/Unsqueeze axes and Clip bounds to inputs."""
_DEFAULT_DOMAINS = ("", "ai.onnx")
_SHAPE_KEEPING = ("Identity", "Transpose", "Reshape", "Cast")
"""Folded ops whose output carries the Q-format of their (constant) input."""


def _text(value):
    """A string field as text (protobuf hands a field that is not valid UTF-8 over as bytes);
    other values as they are."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _shown(value) -> str:
    """A name from the file as it may stand in a one-line message: control characters as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in str(_text(value)))


def _op(node) -> str:
    """The op a node runs: its op_type, with QONNX's Quant/IntQuant as ``Quant``; an op of a
    foreign domain as ``domain.op`` (never mistaken for a standard one)."""
    domain, op = _shown(node.domain), _shown(node.op_type)
    if domain in QUANT_DOMAINS and op in QUANT_OPS:
        return "Quant"
    return op if domain in _DEFAULT_DOMAINS else f"{domain}.{op}"


def _label(node, index: int) -> str:
    """``node conv1 (Conv)``; an unnamed node by its position: ``node #3 (Conv)``."""
    return f"node {_shown(node.name) or f'#{index}'} ({_shown(node.op_type)})"


def _attrs(node) -> dict:
    """Attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        value = _text(onnx.helper.get_attribute_value(a))
        check(value is not None, f"{_label(node, -1)}: attribute {_shown(a.name)!r} has no value of a known "
                                 "type: the file is corrupt; export it again")
        out[_text(a.name)] = value
    return out


@dataclass(frozen=True, eq=False)
class ChainNode:
    """One node of the chain: its op, inputs (names; ``''`` an absent optional one), output, attributes."""

    label: str
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict
    data_input: int
    """Position of the (first) data input in ``inputs``."""
    data_inputs: tuple[int, ...] = ()
    """Positions of every data input (a DAG's Add and Concat join several); empty: just ``data_input``."""

    @property
    def data(self) -> str:
        return self.inputs[self.data_input]

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)


@dataclass(frozen=True, eq=False)
class OnnxGraph:
    """A checked ONNX chain: the input and its shape, the data nodes in order, the constants."""

    path: Path
    sha256: str
    producer: str
    opset: int
    input_name: str
    input_shape: tuple[int, ...]
    """Per image (batch axis dropped)."""
    batch: int | None
    """The input's fixed batch size, None when symbolic."""
    output_name: str
    chain: tuple[ChainNode, ...]
    consts: dict[str, np.ndarray] = field(repr=False)
    quant: dict[str, QuantSpec] = field(repr=False)
    """Constant tensor -> the Q-format of the Quant node that made it (weights, biases)."""
    shape_nodes: dict[str, object] = field(repr=False)
    """Shape-kind tensor -> (label, node) computing it."""
    has_quant: bool = False
    """Any QONNX Quant node in the graph (on weights or on data)."""
    qcdq: bool = False
    """The Quant nodes were QCDQ groups (:func:`~fxpsim.interop.qcdq.qcdq_to_quant`)."""
    metadata: dict = field(default_factory=dict, repr=False)
    """The model's ``metadata_props`` (fxpsim's export writes its config and preprocessing there)."""

    def const(self, node: ChainNode, i: int, what: str) -> np.ndarray | None:
        """Input ``i`` of ``node`` as a constant array; None when the optional input is absent."""
        if i >= len(node.inputs) or not node.inputs[i]:
            return None
        name = node.inputs[i]
        check(name in self.consts, f"{node.label}: its {what} {name!r} is not a constant: fxpsim imports "
                                   "weights stored in the file (initializers); fold the graph before export")
        return self.consts[name]

    def shape_value(self, name: str, shapes: dict[str, tuple[int, ...]], batch: int) -> np.ndarray:
        """The value of a constant or shape-kind tensor when the data tensors have per-image
        ``shapes`` and the batch is ``batch`` (``Shape`` gives ``(batch, *shapes[x])``)."""
        if name in self.consts:
            return self.consts[name]
        check(name in self.shape_nodes, f"tensor {name!r} is neither a constant nor computed from shapes: "
                                        "give the Reshape a constant target shape")
        label, node = self.shape_nodes[name]
        if node.op_type == "Shape":
            src = node.input[0]
            check(src in shapes, f"{label}: the shape of {src!r} is not known where it is used: give "
                                 "the Reshape a constant target shape (torch.flatten(x, 1))")
            full = np.array((batch, *shapes[src]), dtype=np.int64)
            a = _attrs(node)
            return full[a.get("start", 0): a.get("end", len(full))]
        args = [self.shape_value(n, shapes, batch) if n else None for n in node.input]
        outs = _fold(label, _op(node), _attrs(node), args)
        return outs[list(node.output).index(name)]


@contextmanager
def malformed(label: str):
    """What a node's contents make NumPy or protobuf raise (a wrong rank, a missing output, an
    attribute of another type) as one line naming the node: bad input, never a traceback."""
    try:
        yield
    except FxpsimError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        raise FxpsimError(f"{label}: malformed ({type(exc).__name__}: {_shown(exc)}): the file is corrupt, or "
                          "the node is not as ONNX defines its op") from None


# --------------------------------------------------------------------------- constant folding

def reshape_target(label: str, in_shape: tuple[int, ...], shape, allowzero: int = 0) -> tuple[int, ...]:
    """ONNX Reshape's output shape: ``0`` copies the input's dimension (unless ``allowzero``),
    one ``-1`` takes what is left."""
    shape = [int(v) for v in np.asarray(shape).reshape(-1)]
    out = [in_shape[i] if v == 0 and not allowzero and i < len(in_shape) else v for i, v in enumerate(shape)]
    total = int(np.prod(in_shape, dtype=np.int64))
    if out.count(-1) == 1:
        rest = int(np.prod([v for v in out if v != -1], dtype=np.int64))
        check(rest > 0 and total % rest == 0, f"{label}: cannot reshape {tuple(in_shape)} to {tuple(shape)}")
        out[out.index(-1)] = total // rest
    check(min(out, default=0) >= 0 and int(np.prod(out, dtype=np.int64)) == total,
          f"{label}: cannot reshape {tuple(in_shape)} to {tuple(shape)}: the sizes differ")
    return tuple(out)


def _axes(arr, ndim: int) -> list[int]:
    return sorted(int(a) % ndim for a in np.asarray(arr).reshape(-1))


def _slice(x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else [int(a) % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _array(tensor, where: str = "") -> np.ndarray:
    """A TensorProto as a NumPy array, read-only: ``to_array`` views a copy of the tensor's bytes,
    the one copy held while the parsed file is alive (the layers copy their weights once it is
    gone: peak memory about twice the file, not three times)."""
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        name = _shown(getattr(tensor, "name", "")) if tensor is not None else ""
        raise FxpsimError(f"{where or f'tensor {name!r}'}: cannot be read ({type(exc).__name__}: "
                          f"{_shown(exc)}): the file is corrupt or truncated; export it again") from None


def _constant(label: str, attrs: dict) -> np.ndarray:
    """The value of a ``Constant`` node."""
    if "value" in attrs:
        return _array(attrs["value"], label)
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise FxpsimError(f"{label}: a Constant of kind {', '.join(attrs) or 'none'} (sparse or string): fxpsim "
                      "reads dense numeric constants")


_FOLD_OPS = {
    "Identity": lambda a, x: x,
    "Cast": lambda a, x: x.astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"])),
    "Transpose": lambda a, x: np.transpose(x, a.get("perm")),
    "Unsqueeze": lambda a, x, axes: np.expand_dims(x, tuple(_axes(axes, x.ndim + np.asarray(axes).size))),
    "Squeeze": lambda a, x, axes=None: np.squeeze(x, None if axes is None else tuple(_axes(axes, x.ndim))),
    "Concat": lambda a, *xs: np.concatenate([np.atleast_1d(x) for x in xs], axis=a["axis"]),
    "Gather": lambda a, x, i: np.take(x, i, axis=a.get("axis", 0)),
    "Slice": lambda a, x, *r: _slice(x, *r),
    "Shape": lambda a, x: np.array(x.shape, np.int64)[a.get("start", 0): a.get("end", x.ndim)],
    "Mul": lambda a, x, y: np.multiply(x, y),
    "Add": lambda a, x, y: np.add(x, y),
    "Sub": lambda a, x, y: np.subtract(x, y),
}
FOLDABLE = tuple(_FOLD_OPS) + ("Reshape", "Quant")
"""The ops folded when all their inputs are constants (shape arithmetic, weight layout, Quant);
the shape arithmetic takes all but Quant."""


def quant_node_spec(label: str, attrs: dict, args: list) -> QuantSpec:
    """The Q-format of a Quant node from its attributes and inputs (x, then constant scale, zero
    point and bit width; x itself is not read)."""
    check(len(args) >= 4 and all(a is not None for a in args[1:4]),
          f"{label}: a Quant node needs four inputs (x, scale, zero point, bit width)")
    return quant_spec(label, *args[1:4], **{k: attrs[k] for k in ("signed", "narrow", "rounding_mode")
                                           if k in attrs})


def _fold(label: str, op: str, attrs: dict, args: list) -> list[np.ndarray]:
    """One node evaluated on constant ``args`` (None for an absent optional input)."""
    if op == "Reshape":
        return [args[0].reshape(reshape_target(label, args[0].shape, args[1], attrs.get("allowzero", 0)))]
    fn = _FOLD_OPS.get(op)
    check(fn is not None, f"{label}: computes on constants only and fxpsim folds only {', '.join(FOLDABLE)}: "
                          "fold the graph before export (torch.onnx.export(do_constant_folding=True), onnxsim)")
    while args and args[-1] is None:
        args = args[:-1]
    return [np.asarray(fn(attrs, *args))]


# --------------------------------------------------------------------------- reading

def _load(path: Path) -> tuple[object, str]:
    """The parsed ModelProto and the file's sha256; a file that is not ONNX is one line."""
    check(onnx is not None, "reading ONNX needs the onnx package: pip install onnx (or fxpsim's test extra)")
    data = path.read_bytes()  # a missing file is an OSError, printed as such by the CLI
    digest = hashlib.sha256(data).hexdigest()
    check(len(data) > 0, f"{path.name} is empty: not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and its relatives: no common base in onnx's API
        raise FxpsimError(f"{path.name} is not an ONNX model or is truncated (protobuf: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): export it again") from None
    del data
    check(model.HasField("graph") and len(model.graph.node) > 0,
          f"{path.name} has no graph nodes: not an ONNX model, or truncated; export it again")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        try:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        except OSError as exc:
            raise FxpsimError(f"{path.name} keeps weights in external data that cannot be read ({exc}): "
                              "keep the data files beside it") from None
    return model, digest


def _opset(path: Path, model) -> int:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    check(versions, f"{path.name} declares no ONNX (default-domain) opset: not an ONNX model, or truncated")
    opset = int(max(versions))
    check(opset >= MIN_OPSET, f"{path.name} uses opset {opset}, older than {MIN_OPSET}: export again with "
                              f"opset {MIN_OPSET} or newer (torch.onnx.export(..., opset_version=17))")
    return opset


def _input(path: Path, graph) -> tuple[str, tuple[int, ...], int | None]:
    inits = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    check(len(inputs) == 1, f"{path.name}: the graph has {len(inputs)} inputs "
                            f"({', '.join(v.name for v in inputs) or 'none'}): fxpsim imports one-input networks")
    v = inputs[0]
    tt = v.type.tensor_type
    check(v.type.HasField("tensor_type") and tt.elem_type == onnx.TensorProto.FLOAT,
          f"{path.name}: input {v.name!r} is not a float32 tensor "
          f"({onnx.TensorProto.DataType.Name(tt.elem_type) if v.type.HasField('tensor_type') else 'no tensor'}): "
          "fxpsim imports float models (QONNX: float inputs with Quant nodes)")
    check(tt.HasField("shape") and len(tt.shape.dim) >= 2,
          f"{path.name}: input {v.name!r} has no fixed shape (rank unknown or < 2): export with a fixed "
          "input shape, batch first")
    dims = []
    for i, d in enumerate(tt.shape.dim):
        fixed = d.HasField("dim_value") and d.dim_value > 0
        check(fixed or i == 0, f"{path.name}: input {v.name!r} has a dynamic shape (dimension {i} is "
                               f"{d.dim_param or '?'!r}): only the batch dimension may be symbolic; export "
                               "with a fixed image size")
        dims.append(int(d.dim_value) if fixed else None)
    return v.name, tuple(dims[1:]), dims[0]


def read_graph(path) -> OnnxGraph:
    """Read and check an ONNX file (see the module docstring)."""
    path = Path(path)
    model, digest = _load(path)
    with malformed(path.name):
        model, qcdq = qcdq_to_quant(model)
        return _read(path, model, digest, qcdq)


def _read(path: Path, model, digest: str, qcdq: bool = False) -> OnnxGraph:
    opset = _opset(path, model)
    g = model.graph
    input_name, input_shape, batch = _input(path, g)
    check(len(g.output) == 1, f"{path.name}: the graph has {len(g.output)} outputs "
                              f"({', '.join(o.name for o in g.output)}): fxpsim imports one-output "
                              "classifiers; remove the other outputs")
    output_name = g.output[0].name
    consts = {t.name: _array(t) for t in g.initializer}
    kind = dict.fromkeys(consts, "const")
    kind[input_name] = "data"
    quant: dict[str, QuantSpec] = {}
    shape_nodes: dict[str, object] = {}
    data_nodes = []
    has_quant = False
    for index, node in enumerate(g.node):
        label, op = _label(node, index), _op(node)
        with malformed(label):
            has_quant |= op == "Quant"
            names = [n for n in node.input if n]
            for n in names:
                check(n in kind, f"{label}: input {n!r} is neither an initializer nor the output of an earlier "
                                 "node: the file is truncated, or its nodes are not in topological order")
            kinds = {kind[n] for n in names}
            if op == "Constant":
                consts[node.output[0]] = _constant(label, _attrs(node))
                kind[node.output[0]] = "const"
            elif "data" in kinds:
                out = "shape" if op == "Shape" else "data"
                for o in node.output:
                    if o:
                        kind[o] = out
                if op == "Shape":
                    shape_nodes[node.output[0]] = (label, node)
                else:
                    data_nodes.append((label, op, node))
            elif kinds <= {"const"}:
                args = [consts[n] if n else None for n in node.input]
                src = node.input[0] if node.input else ""
                if op == "Quant":
                    quant[node.output[0]] = spec = quant_node_spec(label, _attrs(node), args)
                    outs = [spec.fake_quant(args[0])]
                else:
                    outs = _fold(label, op, _attrs(node), args)
                    if op in _SHAPE_KEEPING and src in quant:
                        quant[node.output[0]] = quant[src]
                for o, value in zip(node.output, outs):
                    consts[o], kind[o] = value, "const"
            else:  # shape arithmetic, evaluated when a Reshape asks for it
                check(op in _FOLD_OPS or op == "Reshape", f"{label}: computes on the data's shape and fxpsim "
                                       f"evaluates only {', '.join(FOLDABLE[:-1])} there: give the Reshape a constant target shape")
                for o in node.output:
                    if o:
                        kind[o] = "shape"
                        shape_nodes[o] = (label, node)
    chain = _chain(path, data_nodes, kind, input_name, output_name)
    producer = " ".join(_shown(p) for p in (model.producer_name, model.producer_version) if p) or "unknown"
    return OnnxGraph(path, digest, producer, opset, input_name, input_shape, batch, output_name, chain, consts,
                     quant, shape_nodes, has_quant, qcdq,
                     {_shown(p.key): _text(p.value) for p in model.metadata_props})


_JOIN_OPS = ("Add", "Concat")
"""The ops that may read two tensors computed from the input (a DAG: residual Add, channel Concat)."""


def _chain(path: Path, data_nodes, kind, input_name: str, output_name: str) -> tuple[ChainNode, ...]:
    """The data nodes in topological order: one chain from the input to the output, or a DAG (a tensor
    read twice, an Add or Concat of two computed tensors) ending at the output; else the one-line reason."""
    check(data_nodes, f"{path.name}: no node computes on the input {input_name!r}")
    readers: dict[str, list[str]] = {}
    chain = []
    for label, op, node in data_nodes:
        data = [i for i, n in enumerate(node.input) if n and kind[n] == "data"]
        check(len(data) == 1 or op in _JOIN_OPS, f"{label}: {op} joins {len(data)} tensors computed from the input "
                                                 f"({', '.join(node.input[i] for i in data)}): fxpsim joins tensors "
                                                 f"only by {' and '.join(_JOIN_OPS)}")
        for i in data:
            readers.setdefault(node.input[i], []).append(label)
        chain.append(ChainNode(label, op, tuple(node.input), node.output[0], _attrs(node), data[0],
                               tuple(data) if len(data) > 1 else ()))
    if any(cn.data_inputs for cn in chain) or any(len(r) > 1 for r in readers.values()):  # a DAG
        check(chain[-1].output == output_name, f"{path.name}: the graph output {output_name!r} is not written by "
                                               f"the last node ({chain[-1].label}): fxpsim's network output is "
                                               "its last layer's")
        return tuple(chain)
    prev, prev_label = input_name, "the graph input"
    for cn in chain:
        branch = readers[cn.data]
        check(len(branch) == 1, f"tensor {cn.data!r} feeds {', '.join(branch)}: a branch; fxpsim imports "
                                "chains of layers (DAG networks: not in this fxpsim yet)")
        check(cn.data == prev, f"{cn.label}: reads {cn.data!r}, not the output {prev!r} of {prev_label}: "
                               "fxpsim imports a chain of single-output nodes")
        prev, prev_label = cn.output, cn.label
    check(prev == output_name, f"{path.name}: the graph output {output_name!r} is not the end of the chain "
                               f"(the last node, {prev_label}, writes {prev!r}): fxpsim imports a chain of layers")
    return tuple(chain)
