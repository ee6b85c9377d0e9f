"""Stages: THE description of a compute layer (Judd et al., ICLR 2016; DESIGN.md).

The layer graph is cut into *stages*, one per compute layer (Dense or
Conv2D): the compute layer, a BatchNorm right after it folded into its
weights and bias, a ReLU right after those fused into the kernel, then the
integer operations up to the next compute layer (pooling, flatten, other
activations; :mod:`.post`). Names count per kind: ``conv1, conv2, ...,
fc1, ...``.

Everything else that describes a layer derives from its :class:`Stage`:
the profiled ranges (:class:`~fxpsim.simulate.LayerProfile`), the
constraints' view (:class:`fxpsim.constraints.LayerRanges`), the traffic
counts of Judd's tolerance search (:attr:`Stage.weights`, :attr:`Stage.inputs`,
:attr:`Stage.outputs`), the timing shapes
(:meth:`fxpsim.timing.stripes.LayerShape.from_stage`) and the per-layer
statistics of a simulation.

DAG networks (:attr:`Network.is_dag`) are cut the same way, node by node:
a compute layer opens a stage (reading ``source``, any earlier node); a
BatchNorm or ReLU is folded/fused only when it is the compute layer's one
consumer; every other layer joins the stage of its latest input, as one of
its ``ops`` ``(node, kind, layer, inputs)``. Every value of a stage is in the
stage's ``fmt_y``: an ``add`` / ``concat`` converts its inputs to it, adds
(saturating or wrapping by ``output_overflow``) or joins them (:mod:`.merge`),
so a merge takes the format, rounding and output overflow of the compute
layer whose stage it closes, and a NetworkConfig keeps one LayerConfig per
compute layer. A grouped convolution runs as the dense convolution whose
weights outside each group are zero (exact: each zero product adds 0; the
``additions`` count the datapath's C*k*k products per output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..binary.stages import BINARY_COMPUTE, binary_compute
from ..errors import FxpsimError, check

__all__ = ["COMPUTE_KINDS", "MERGE_KINDS", "Stage", "build_stages", "dense_weights", "node_stages"]

COMPUTE_KINDS = ("dense", "conv2d")
_PASS_KINDS = ("dropout", "identity")
_POST_KINDS = ("relu", "tanh", "sigmoid", "maxpool2d", "avgpool2d", "flatten", "clip", "globalavgpool")
MERGE_KINDS = ("add", "concat")
_STAGE_KINDS = COMPUTE_KINDS + tuple(BINARY_COMPUTE)  # a binary layer starts a stage too


@dataclass(frozen=True, eq=False, repr=False)
class Stage:
    """One compute layer with what is folded/fused into it and what follows.

    ``W`` (dense ``(K, N)``, conv ``(F, C, kh, kw)``) and ``b`` are float64
    with BatchNorm folded in. Shapes are per image, from the network
    (``network.shapes``): ``in_shape`` the compute layer's input,
    ``out_shape`` the kernel's output (after folded BN and fused ReLU: what
    ``fmt_y`` holds), ``stage_out_shape`` the stage's output after ``post``
    (what the next stage reads); ``None`` for a stage built from weights
    only. Identity, not value, makes two stages equal (arrays inside).
    """

    name: str
    kind: str  # "dense" | "conv2d"
    W: np.ndarray
    b: np.ndarray
    stride: int = 1
    padding: int = 0
    relu: bool = False  # ReLU fused into the kernel
    post: tuple = ()  # integer ops after the kernel: (kind, layer)
    layers: tuple[int, int, int] = (0, 0, 0)  # network indices: start, end of fused part, end
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None
    stage_out_shape: tuple[int, ...] | None = None
    binary: object = None
    """A BNN stage's :class:`fxpsim.binary.engine.BnnBlock` (pool, BatchNorm, Sign after the
    XNOR-popcount; engine ``xnor`` runs it), None for a fixed-point stage."""
    source: int | None = None
    """DAG only (else None): the network node (layer index, -1 the input) the kernel reads."""
    kernel_node: int | None = None
    """DAG only: the node the kernel's output is (the compute layer, or its folded BN / fused ReLU)."""
    ops: tuple = ()
    """DAG only: ``(node, kind, layer, input nodes)`` after the kernel, in network order."""
    out_node: int | None = None
    """DAG only: the stage's last node (its ``stage_out_shape``)."""

    def __repr__(self) -> str:
        return (f"Stage({self.name!r}, {self.kind!r}, W{tuple(self.W.shape)}, stride={self.stride}, "
                f"padding={self.padding}, relu={self.relu}, post={[op for op, _ in self.post]}, "
                f"in_shape={self.in_shape}, out_shape={self.out_shape})")

    @property
    def fan_in(self) -> int:
        """K: products summed per output (dense n_in; conv C*kh*kw)."""
        return int(self.W.shape[0] if self.kind == "dense" else np.prod(self.W.shape[1:]))

    @property
    def out_channels(self) -> int:
        """Outputs per position: dense n_out, conv F."""
        return int(self.W.shape[1] if self.kind == "dense" else self.W.shape[0])

    @property
    def kernel_size(self) -> int:
        """The conv kernel's side k (1 for dense)."""
        return int(self.W.shape[-1]) if self.kind == "conv2d" else 1

    @property
    def weights(self) -> int:
        """Weights the layer stores (``W.size``; the bias not counted)."""
        return int(self.W.size)

    def _shape(self, name: str) -> tuple[int, ...]:
        shape = getattr(self, name)
        check(shape is not None, f"stage {self.name} was built from weights only and has no {name}: "
                                 "build it from a network (fxpsim.simulate.build_stages)")
        return shape

    @property
    def inputs(self) -> int:
        """Activations the stage reads per image (``prod(in_shape)``)."""
        return int(np.prod(self._shape("in_shape")))

    @property
    def kernel_outputs(self) -> int:
        """Kernel outputs per image (``prod(out_shape)``), each a sum of ``fan_in`` products."""
        return int(np.prod(self._shape("out_shape")))

    @property
    def outputs(self) -> int:
        """Activations the stage writes per image, after its post ops (``prod(stage_out_shape)``)."""
        return int(np.prod(self._shape("stage_out_shape")))

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image: ``fan_in * kernel_outputs``."""
        return self.fan_in * self.kernel_outputs


def _fold_batchnorm(W: np.ndarray, b: np.ndarray, bn, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference BatchNorm y = gamma (z - mean) / sqrt(var + eps) + beta into W, b."""
    scale = bn.params["gamma"] / np.sqrt(bn.buffers["running_var"] + bn.eps)
    shift = bn.params["beta"] - bn.buffers["running_mean"] * scale
    if kind == "dense":
        return W * scale[None, :], b * scale + shift
    return W * scale[:, None, None, None], b * scale + shift



def dense_weights(comp) -> np.ndarray:
    """A compute layer's float64 weights; a grouped conv's ``(F, C / g, k, k)`` spread to ``(F, C, k, k)``
    with zeros outside each filter's group."""
    W = np.asarray(comp.params["W"], dtype=np.float64)
    g = int(getattr(comp, "groups", 1))
    if comp.kind != "conv2d" or g == 1:
        return W
    f, cg = W.shape[0], W.shape[1]
    full = np.zeros((f, cg * g, *W.shape[2:]))
    fo = f // g
    for j in range(g):
        full[j * fo:(j + 1) * fo, j * cg:(j + 1) * cg] = W[j * fo:(j + 1) * fo]
    return full


def build_stages(network) -> list[Stage]:
    """Cut ``network`` (or a model holding one) into integer stages (see the module docstring)."""
    network = getattr(network, "network", network)
    if getattr(network, "is_dag", False):
        return _build_dag_stages(network)
    layers = list(network.layers)
    shapes = [tuple(int(d) for d in s) for s in network.shapes]  # shapes[i] = input of layer i
    stages: list[Stage] = []
    counters = {"dense": 0, "conv2d": 0}
    i = 0
    while i < len(layers) and layers[i].kind not in _STAGE_KINDS:
        check(layers[i].kind in ("flatten",) + _PASS_KINDS,
              f"layer {i} ({layers[i].kind}) comes before the first Dense/Conv2D and has no integer "
              "mapping there: fold it into the preprocessing")
        i += 1
    check(i < len(layers), "the model has no Dense or Conv2D layer to run on the integer datapath")
    while i < len(layers):
        start, comp = i, layers[i]
        kind = BINARY_COMPUTE.get(comp.kind, comp.kind)
        counters[kind] += 1
        name = f"{'fc' if kind == 'dense' else 'conv'}{counters[kind]}"
        if comp.kind in BINARY_COMPUTE:
            W, b, block, i = binary_compute(layers, shapes, i, name)
        else:
            W = dense_weights(comp)
            b = np.asarray(comp.params["b"], dtype=np.float64)
            block, i = None, i + 1
        relu = False
        if block is None:
            while i < len(layers) and layers[i].kind in _PASS_KINDS:
                i += 1
            if i < len(layers) and layers[i].kind == "batchnorm":
                W, b = _fold_batchnorm(W, b, layers[i], kind)
                i += 1
            relu = i < len(layers) and layers[i].kind == "relu"
            if relu:
                i += 1
        fused_end = i
        post = []
        while i < len(layers) and layers[i].kind not in _STAGE_KINDS:
            lk = layers[i].kind
            if lk in _POST_KINDS:
                post.append((lk, layers[i]))
            elif lk not in _PASS_KINDS:
                raise FxpsimError(
                    f"layer {i} ({lk}) after {name} has no integer mapping: fxpsim folds BatchNorm "
                    "only into the Dense/Conv2D right before it and runs relu/tanh/sigmoid/pooling/"
                    "flatten on integers")
            i += 1
        in_shape = shapes[start]
        start = start if stages else 0  # the float trace runs the leading flatten/dropout too
        stages.append(Stage(name, kind, W, b, int(getattr(comp, "stride", 1)), int(getattr(comp, "padding", 0)),
                            relu, tuple(post), (start, fused_end, i), in_shape, shapes[fused_end], shapes[i],
                            block))
    return stages


def node_stages(network, stages) -> dict[int, int]:
    """Network node -> index of the stage that computes it (-1: the input and the layers before the first
    compute layer, which only reshape it). Nodes folded or fused into a kernel are read by nothing else."""
    owner = {-1: -1}
    for k, s in enumerate(stages):
        owner[s.kernel_node] = k
        owner.update({node: k for node, *_ in s.ops})
    for j in range(len(network.layers)):
        owner.setdefault(j, -1)
    return owner


def _build_dag_stages(network) -> list[Stage]:
    """:func:`build_stages` of a DAG (the module docstring): node by node, in topological order."""
    layers, inputs = list(network.layers), network.inputs
    shapes = [tuple(int(d) for d in s) for s in network.shapes]  # shapes[j + 1]: node j's output
    binary = [i for i, layer in enumerate(layers) if layer.kind in BINARY_COMPUTE or layer.kind == "sign"]
    check(not binary, f"layer {binary[0] if binary else ''} is binary/ternary in a DAG: fxpsim runs binary "
                      "layers in chains only; make the binary part of the network a chain")
    consumers = {}
    for ins in inputs:
        for j in ins:
            consumers[j] = consumers.get(j, 0) + 1
    owner, parts, counters = {-1: -1}, [], {"dense": 0, "conv2d": 0}
    for i, layer in enumerate(layers):
        kind, ins = layer.kind, inputs[i]
        if kind in COMPUTE_KINDS:
            counters[kind] += 1
            parts.append({"name": f"{'fc' if kind == 'dense' else 'conv'}{counters[kind]}", "kind": kind,
                          "comp": layer, "W": dense_weights(layer), "b": np.asarray(layer.params["b"], np.float64),
                          "start": i, "source": ins[0], "kernel": i, "relu": False, "ops": []})
            owner[i] = len(parts) - 1
            continue
        k = max(owner[j] for j in ins)
        part = parts[k] if k >= 0 else None
        fusable = (part is not None and not part["ops"] and ins == (part["kernel"],)
                   and consumers.get(part["kernel"], 0) == 1)
        if kind == "batchnorm":
            check(fusable and not part["relu"],
                  f"layer {i} (batchnorm) does not directly follow a Dense/Conv2D that feeds only it: fxpsim "
                  "folds BatchNorm only into the compute layer right before it")
            part["W"], part["b"] = _fold_batchnorm(part["W"], part["b"], layer, part["kind"])
        elif (kind == "relu" and fusable and not part["relu"]) or (kind in _PASS_KINDS and fusable):
            part["relu"] = part["relu"] or kind == "relu"
        elif part is None:
            check(kind in ("flatten",) + _PASS_KINDS,
                  f"layer {i} ({kind}) comes before the first Dense/Conv2D and has no integer mapping there: "
                  "fold it into the preprocessing")
            owner[i] = -1
            continue
        else:
            check(kind in _POST_KINDS + _PASS_KINDS + MERGE_KINDS,
                  f"layer {i} ({kind}) in {part['name']}'s stage has no integer mapping: fxpsim runs "
                  "relu/clip/tanh/sigmoid/pooling/flatten/add/concat on integers")
            part["ops"].append((i, kind, layer, ins))
            owner[i] = k
            continue
        part["kernel"] = i
        owner[i] = k
    check(parts, "the model has no Dense or Conv2D layer to run on the integer datapath")
    stages = []
    for p in parts:
        out = p["ops"][-1][0] if p["ops"] else p["kernel"]
        post = tuple((kind, layer) for _, kind, layer, _ in p["ops"])
        comp = p["comp"]
        stages.append(Stage(p["name"], p["kind"], p["W"], p["b"], int(getattr(comp, "stride", 1)),
                            int(getattr(comp, "padding", 0)), p["relu"], post, (p["start"], p["kernel"] + 1, out + 1),
                            shapes[p["source"] + 1], shapes[p["kernel"] + 1], shapes[out + 1],
                            source=p["source"], kernel_node=p["kernel"], ops=tuple(p["ops"]), out_node=out))
    check(stages[-1].out_node == len(layers) - 1 or owner[len(layers) - 1] == len(stages) - 1,
          "the network's output is not computed by its last compute layer's stage")
    return stages


def model_record(path, model):
    """What a config records about the model it was made for (:class:`fxpsim.config.ModelRecord`):
    ``path``'s file name, the sha256 of the model's weights, each compute layer's name and weight shape."""
    from ..config import ModelRecord

    return ModelRecord.of(path, model.network.state_dict(), [(s.name, s.W.shape) for s in build_stages(model)])
