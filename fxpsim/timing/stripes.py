"""Stripes' timing model against DaDianNao (Judd et al., MICRO 2016), and layer shapes.

Stripes (STR) feeds each activation one bit per cycle, so a conv layer
whose activations need ``p`` bits takes ``p`` cycles where the
bit-parallel baseline, DaDianNao (DaDN), takes one 16-bit cycle. The
bit-exact arithmetic of that datapath is :mod:`fxpsim.datapath.bitserial`;
this module counts cycles only, from :class:`LayerShape` records (from the
stages of a network, a preset or an architecture spec) and a precision profile.

Timing (:func:`time_layer`, :func:`time_network`), parameters in
:class:`AcceleratorConfig`: ``tiles`` x ``filters`` (per tile) x ``lanes``
(synapses per filter). DaDN per cycle: one window, ``tiles*filters``
filters, ``lanes`` input channels of one kernel position, 16-bit. Layer
cycles (work padded to whole filter and lane groups)::

    DaDN conv:  groups * OH*OW * kh*kw * ceil(C_g/lanes) * ceil(F_g/(tiles*filters))
    STR  conv:  groups * ceil(OH*OW/16) * kh*kw * ceil(C_g/lanes) * ceil(F_g/(tiles*filters)) * p
    DaDN fc:    ceil(n_in/lanes) * ceil(n_out/(tiles*filters));   STR fc = DaDN fc

STR processes ``baseline_bits`` (16) windows per cycle, hence the same peak
throughput at 16 bits. Fully-connected layers have no weight reuse across
windows, so STR runs them bit-parallel at DaDN's speed (speedup 1; Stripes
accelerates convolutional layers only, as Tartan, Delmas et al. 2017, says
of it; DaDN's FC layers are bound by weight bandwidth, and bit-serial
FC would need a different weight per window): a precision profile lists
conv layers only, as Table I does ("9-8-5-5-7" for AlexNet's five conv
layers). (DNNsim instead multiplexes FC outputs over the 16 window
columns, which times FC bit-serially too; not modelled here.) Ideal speedup (Table I's
column): 16/p per conv layer and ``sum DaDN / sum (DaDN * p / 16)`` for the
network, i.e. weighted by DaDN time, window padding ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import FxpsimError, check
from ..graph import ARCHITECTURES, Network, parse_spec, resolve_spec
from ..simulate.stages import COMPUTE_KINDS, build_stages

__all__ = [
    "SHAPE_PRESETS", "AcceleratorConfig", "LayerShape", "LayerTiming", "NetworkTiming",
    "parse_input_shape", "parse_profile", "parse_shapes", "profile_from_config", "shapes_from_network",
    "time_layer", "time_network",
]


# --------------------------------------------------------------------------- timing model

@dataclass(frozen=True, slots=True)
class AcceleratorConfig:
    """DaDN / Stripes organisation (Stripes Sec. IV; DaDianNao, Chen et al. 2014).

    ``tiles`` x ``filters`` (per tile) x ``lanes`` (synapses per filter):
    DaDN multiplies ``tiles*filters*lanes`` 16-bit pairs per cycle; Stripes
    adds ``windows`` (= ``baseline_bits``) concurrent windows of 1-bit
    activations, so both have the same peak throughput at 16 bits.
    """

    tiles: int = 16
    filters: int = 16
    lanes: int = 16
    baseline_bits: int = 16

    def __post_init__(self) -> None:
        for name in ("tiles", "filters", "lanes", "baseline_bits"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise FxpsimError(f"{name}={value!r} must be a positive integer: e.g. --{name} 16 "
                                  "(the paper's 16 tiles x 16 filters x 16 lanes)")
            object.__setattr__(self, name, int(value))

    @property
    def windows(self) -> int:
        """Windows Stripes processes in parallel: baseline_bits (equal peak at 16 bits)."""
        return self.baseline_bits

    @property
    def filters_in_parallel(self) -> int:
        """Filters processed at once over all tiles: tiles * filters."""
        return self.tiles * self.filters


@dataclass(frozen=True, slots=True)
class LayerShape:
    """A conv or fully-connected layer by shape only (no weights needed).

    ``conv``: ``in_channels`` -> ``out_channels`` with a ``kernel_h`` x
    ``kernel_w`` kernel producing ``out_h`` x ``out_w`` windows, ``groups``
    as in Caffe. ``fc``: ``in_channels`` inputs -> ``out_channels`` outputs.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel_h: int = 1
    kernel_w: int = 1
    out_h: int = 1
    out_w: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        check(self.kind in ("conv", "fc"), f"layer {self.name!r} has kind {self.kind!r}: use 'conv' or 'fc'")
        for field in ("in_channels", "out_channels", "kernel_h", "kernel_w", "out_h", "out_w", "groups"):
            value = getattr(self, field)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise FxpsimError(f"layer {self.name!r}: {field}={value!r} must be a positive integer")
            object.__setattr__(self, field, int(value))
        check(self.in_channels % self.groups == 0 and self.out_channels % self.groups == 0,
              f"layer {self.name!r}: groups={self.groups} must divide in_channels={self.in_channels} "
              f"and out_channels={self.out_channels}")
        if self.kind == "fc":
            check((self.kernel_h, self.kernel_w, self.out_h, self.out_w, self.groups) == (1, 1, 1, 1, 1),
                  f"fc layer {self.name!r} takes only in_channels and out_channels (no kernel/output map)")

    @classmethod
    def conv(cls, name: str, in_channels: int, out_channels: int, kernel: int, in_hw,
             stride: int = 1, padding: int = 0, groups: int = 1) -> LayerShape:
        """A square-kernel conv layer from its input size: OH = (H + 2*pad - k)//stride + 1."""
        h, w = (in_hw, in_hw) if isinstance(in_hw, (int, np.integer)) else in_hw
        oh, ow = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
        check(oh >= 1 and ow >= 1, f"conv layer {name!r}: a {kernel}x{kernel} kernel does not fit the "
              f"{h}x{w} input with padding {padding}")
        return cls(name, "conv", in_channels, out_channels, kernel, kernel, oh, ow, groups)

    @classmethod
    def fc(cls, name: str, n_in: int, n_out: int) -> LayerShape:
        """A fully-connected layer of ``n_in`` inputs and ``n_out`` outputs."""
        return cls(name, "fc", n_in, n_out)

    @classmethod
    def from_stage(cls, stage) -> LayerShape:
        """The shape of a :class:`fxpsim.simulate.Stage`: Dense ``fan_in -> out_channels``; Conv2D its
        input channels, filters, kernel and the kernel's output map (``stage.out_shape``)."""
        if stage.kind == "dense":
            return cls.fc(stage.name, stage.fan_in, stage.out_channels)
        f, oh, ow = stage.out_shape
        k = stage.kernel_size
        return cls(stage.name, "conv", int(stage.in_shape[0]), stage.out_channels, k, k, int(oh), int(ow))

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image (no padding)."""
        return (self.out_h * self.out_w * self.kernel_h * self.kernel_w
                * (self.in_channels // self.groups) * self.out_channels)


@dataclass(frozen=True, slots=True)
class LayerTiming:
    """One layer's row of the Stripes table (cycles per image)."""

    name: str
    kind: str
    macs: int
    precision: int | None
    baseline_cycles: int
    stripes_cycles: int
    speedup: float
    ideal_speedup: float


@dataclass(frozen=True, slots=True)
class NetworkTiming:
    """Per-layer timings and network totals: speedup = sum DaDN / sum STR."""

    layers: tuple[LayerTiming, ...]
    baseline_cycles: int
    stripes_cycles: int
    speedup: float
    ideal_speedup: float


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def time_layer(shape: LayerShape, precision: int | None,
               config: AcceleratorConfig = AcceleratorConfig()) -> LayerTiming:
    """DaDN and Stripes cycles of one layer (formulas in the module docstring).

    Conv layers take the activation precision ``p`` (1..baseline_bits); fc
    layers run bit-parallel in Stripes and take ``None``.
    """
    c = config
    if shape.kind == "fc":
        check(precision is None, f"fc layer {shape.name!r} runs bit-parallel in Stripes: give no precision")
        base = _ceil(shape.in_channels, c.lanes) * _ceil(shape.out_channels, c.filters_in_parallel)
        return LayerTiming(shape.name, "fc", shape.macs, None, base, base, 1.0, 1.0)
    p = _check_precision(precision, c.baseline_bits)
    per_window = (shape.kernel_h * shape.kernel_w * _ceil(shape.in_channels // shape.groups, c.lanes)
                  * _ceil(shape.out_channels // shape.groups, c.filters_in_parallel) * shape.groups)
    windows = shape.out_h * shape.out_w
    base = windows * per_window
    stripes = _ceil(windows, c.windows) * per_window * p
    return LayerTiming(shape.name, "conv", shape.macs, p, base, stripes, base / stripes, c.baseline_bits / p)


def time_network(shapes, profile, config: AcceleratorConfig = AcceleratorConfig()) -> NetworkTiming:
    """Time a network given by shapes under a precision profile (one p per conv layer).

    ``profile``: a string ``"9-8-5-5-7"`` or a sequence of ints, in conv-layer
    order. Network speedup = sum DaDN cycles / sum Stripes cycles; ideal =
    sum DaDN / sum (DaDN * p / baseline_bits), fc layers at 1 (Table I).
    """
    shapes = tuple(shapes)
    check(len(shapes) > 0 and all(isinstance(s, LayerShape) for s in shapes),
          "time_network needs a non-empty sequence of LayerShape")
    n_conv = sum(s.kind == "conv" for s in shapes)
    precisions = iter(parse_profile(profile, n_layers=n_conv, max_bits=config.baseline_bits))
    rows = tuple(time_layer(s, next(precisions) if s.kind == "conv" else None, config) for s in shapes)
    base = sum(r.baseline_cycles for r in rows)
    stripes = sum(r.stripes_cycles for r in rows)
    ideal_den = sum(r.baseline_cycles * (r.precision if r.precision else config.baseline_bits) for r in rows)
    ideal = float(Fraction(base * config.baseline_bits, ideal_den))
    return NetworkTiming(rows, base, stripes, float(Fraction(base, stripes)), ideal)


def _check_precision(p, max_bits: int) -> int:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or not 1 <= p <= max_bits:
        raise FxpsimError(f"precision {p!r} is outside 1..{max_bits}: Stripes feeds 1 to {max_bits} "
                          "activation bits per layer")
    return int(p)


def parse_profile(profile, n_layers: int | None = None, max_bits: int = 16) -> tuple[int, ...]:
    """``"9-8-5-5-7"`` (or a sequence of ints) -> ``(9, 8, 5, 5, 7)``, checked.

    Each precision must lie in 1..max_bits; with ``n_layers`` the profile
    must have exactly that many entries (one per conv layer).
    """
    if n_layers == 0 and (profile is None or len(profile) == 0):
        return ()  # a network without conv layers: nothing runs bit-serially
    if isinstance(profile, str):
        parts = profile.strip().split("-")
        if not profile.strip() or not all(part.strip().isdigit() for part in parts):
            raise FxpsimError(f"bad precision profile {profile!r}: write bits per conv layer joined "
                              "by '-', e.g. 9-8-5-5-7")
        values = tuple(int(part) for part in parts)
    else:
        values = tuple(profile)
        check(len(values) > 0, "empty precision profile: give one precision per conv layer, e.g. 9-8-5-5-7")
    values = tuple(_check_precision(v, max_bits) for v in values)
    if n_layers is not None:
        check(len(values) == n_layers, f"profile {'-'.join(map(str, values))} has {len(values)} "
              f"precision(s) but the network has {n_layers} conv layer(s): give one per conv layer")
    return values


# --------------------------------------------------------------------------- shapes of real networks

def shapes_from_network(network) -> tuple[LayerShape, ...]:
    """One :class:`LayerShape` per stage of a network (or model), in order (:meth:`LayerShape.from_stage`).

    The stages are the simulator's (:func:`fxpsim.simulate.build_stages`:
    ``conv1, conv2, ..., fc1, ...``, counted per kind), so a profile or a
    config from the search lines up with them. Only the structure is read:
    the weights may be zero (``Network.from_config``).
    """
    network = getattr(network, "network", network)
    check(any(layer.kind in COMPUTE_KINDS for layer in network.layers),
          "the network has no Conv2D or Dense layer to time")
    return tuple(LayerShape.from_stage(s) for s in build_stages(network))


def _caffe_alexnet() -> tuple[LayerShape, ...]:
    c, f = LayerShape.conv, LayerShape.fc
    return (c("conv1", 3, 96, 11, 227, stride=4),            # 55x55, pool 3/2 -> 27
            c("conv2", 96, 256, 5, 27, padding=2, groups=2),  # 27x27, pool -> 13
            c("conv3", 256, 384, 3, 13, padding=1),
            c("conv4", 384, 384, 3, 13, padding=1, groups=2),
            c("conv5", 384, 256, 3, 13, padding=1, groups=2),  # pool -> 6x6x256
            f("fc6", 9216, 4096), f("fc7", 4096, 4096), f("fc8", 4096, 1000))


SHAPE_PRESETS = {
    "lenet-caffe": ("Caffe's LeNet (the network of Stripes' Table I): conv20x5 on 28x28, maxpool2, "
                    "conv50x5, maxpool2, fc500, fc10",
                    lambda: (LayerShape.conv("conv1", 1, 20, 5, 28), LayerShape.conv("conv2", 20, 50, 5, 12),
                             LayerShape.fc("fc1", 800, 500), LayerShape.fc("fc2", 500, 10))),
    "alexnet": ("Caffe's BVLC AlexNet on 227x227x3 (conv2/4/5 in 2 groups), 5 conv + 3 fc",
                _caffe_alexnet),
}
"""Networks known by shape only: name -> (description, builder of its LayerShapes)."""


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1x28x28"`` (C x H x W) or ``"784"`` -> a tuple of positive ints."""
    parts = str(text).strip().lower().split("x")
    if not all(part.strip().isdigit() and int(part) >= 1 for part in parts) or len(parts) not in (1, 3):
        raise FxpsimError(f"bad input shape {text!r}: write CxHxW for images (e.g. 1x28x28) or N for "
                          "flat inputs (e.g. 784), positive integers")
    return tuple(int(part) for part in parts)


def parse_shapes(text: str, input_shape=None) -> tuple[tuple[LayerShape, ...], str]:
    """Layers by shape: a preset of :data:`SHAPE_PRESETS` or an architecture spec.

    A spec uses the network grammar (``conv20x5-maxpool2-conv50x5-maxpool2-
    fc500-fc10``, or an architecture name such as ``lenet5``) on
    ``input_shape`` (``"1x28x28"``; required for a spec). Returns the
    shapes and a one-line description.
    """
    key = str(text).strip().lower()
    if key in SHAPE_PRESETS:
        check(input_shape is None, f"--shapes {key} fixes its own input size: give no --input-shape")
        desc, build = SHAPE_PRESETS[key]
        return build(), desc
    if input_shape is None:
        raise FxpsimError(f"--shapes {text!r} is not a preset ({', '.join(SHAPE_PRESETS)}): for an "
                          "architecture spec give its input size too, e.g. --input-shape 1x28x28")
    in_shape = parse_input_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    n_classes = 10
    spec = resolve_spec(key, in_shape, n_classes) if key in ARCHITECTURES else key
    layers = parse_spec(spec, in_shape)
    net = Network(layers, in_shape, seed=None)
    return shapes_from_network(net), f"{spec} on {'x'.join(map(str, in_shape))}"


def profile_from_config(config, shapes) -> tuple[int, ...]:
    """Conv layers' activation precisions p = input data width (``fmt_x.width``) of a config.

    The config must name the same layers as ``shapes`` in order (a config
    from ``fxpsim search`` for this model); fc layers are skipped (they run
    bit-parallel in Stripes).
    """
    names = [s.name for s in shapes]
    cfg_names = [layer.name for layer in config]
    check(cfg_names == names, f"the config's layers ({', '.join(cfg_names)}) do not match the network's "
                              f"({', '.join(names)}): give a config made for this model")
    return tuple(layer.fmt_x.width for layer, s in zip(config, shapes) if s.kind == "conv")
