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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FxpsimError, check

__all__ = ["COMPUTE_KINDS", "Stage", "build_stages"]

COMPUTE_KINDS = ("dense", "conv2d")
_PASS_KINDS = ("dropout",)
_POST_KINDS = ("relu", "tanh", "sigmoid", "maxpool2d", "avgpool2d", "flatten")
_BINARY_KINDS = ("bdense", "bconv2d", "sign")


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



def build_stages(network) -> list[Stage]:
    """Cut ``network`` (or a model holding one) into integer stages (see the module docstring)."""
    network = getattr(network, "network", network)
    layers = list(network.layers)
    shapes = [tuple(int(d) for d in s) for s in network.shapes]  # shapes[i] = input of layer i
    binary = [i for i, layer in enumerate(layers) if layer.kind in _BINARY_KINDS]
    check(not binary, f"layer {binary[0] if binary else ''} is binary/ternary: run BNN models with "
                      "fxpsim.binary.netsim.BnnSimulator (`fxpsim binary`), not the fixed-point stages")
    stages: list[Stage] = []
    counters = {"dense": 0, "conv2d": 0}
    i = 0
    while i < len(layers) and layers[i].kind not in COMPUTE_KINDS:
        check(layers[i].kind in ("flatten",) + _PASS_KINDS,
              f"layer {i} ({layers[i].kind}) comes before the first Dense/Conv2D and has no integer "
              "mapping there: fold it into the preprocessing")
        i += 1
    check(i < len(layers), "the model has no Dense or Conv2D layer to run on the integer datapath")
    while i < len(layers):
        start, comp = i, layers[i]
        kind = comp.kind
        counters[kind] += 1
        name = f"{'fc' if kind == 'dense' else 'conv'}{counters[kind]}"
        W = np.asarray(comp.params["W"], dtype=np.float64)
        b = np.asarray(comp.params["b"], dtype=np.float64)
        i += 1
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
        while i < len(layers) and layers[i].kind not in COMPUTE_KINDS:
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
                            relu, tuple(post), (start, fused_end, i), in_shape, shapes[fused_end], shapes[i]))
    return stages


def model_record(path, model):
    """What a config records about the model it was made for (:class:`fxpsim.config.ModelRecord`):
    ``path``'s file name, the sha256 of the model's weights, each compute layer's name and weight shape."""
    from ..config import ModelRecord

    return ModelRecord.of(path, model.network.state_dict(), [(s.name, s.W.shape) for s in build_stages(model)])
