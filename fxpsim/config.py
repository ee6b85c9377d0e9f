"""Per-layer datapath configuration: the small frozen value a search produces.

A :class:`LayerConfig` fixes, for one compute layer (Dense or Conv2D with
its folded BatchNorm and fused activation), the weight format, the input-
and output-data formats, the accumulator width BW_acc, the overflow mode,
the rounding mode, the engine, and the datapath knobs (:data:`KNOBS`:
FL_acc, product cast, accumulation order, output overflow, bias format). A :class:`NetworkConfig` is the tuple of them, saved
and loaded as JSON, shown as a table.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from numbers import Integral
from pathlib import Path

import numpy as np

from .errors import FxpsimError, check
from .qformat import MAX_WIDTH, Overflow, QFormat, Rounding, parse_overflow, parse_rounding

CONFIG_FORMAT = "fxpsim-config"
CONFIG_VERSION = 1


# --------------------------------------------------------------------------- engine options

@dataclass(frozen=True, slots=True)
class EngineOption:
    """One option a datapath engine declares: its default and its allowed values.

    An int option takes whole numbers in ``[low, high]`` (a 0..1 option also
    takes True/False); a choice option (``choices``) one of its strings.
    """

    name: str
    default: int | str
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    hint: str = ""

    def check(self, engine: str, value) -> int | str:
        """``value`` as the option holds it, or a one-line error naming the value, the rule and the fix."""
        if self.choices:
            check(isinstance(value, str) and value in self.choices,
                  f"engine {engine}: {self.name}={value!r} is not one of {', '.join(self.choices)}: "
                  f"{self.hint}")
            return value
        whole = isinstance(value, int) and (not isinstance(value, bool) or (self.low, self.high) == (0, 1))
        check(whole, f"engine {engine}: {self.name}={value!r} is not a whole number in [{self.low}, "
                     f"{self.high}]: {self.hint}")
        check(self.low <= value <= self.high,
              f"engine {engine}: {self.name}={value!r} is outside [{self.low}, {self.high}]: {self.hint}")
        return int(value)


ENGINE_OPTIONS: dict[str, tuple[EngineOption, ...]] = {
    "dense": (),
    "sparse": (
        EngineOption("index_bits", 4, 1, 16, hint="EIE uses 4 or 5 for FC layers and 8 for conv"),
        EngineOption("pes", 64, 1, 4096, hint="give the number of processing elements, e.g. pes=64 "
                                              "(rows interleaved over them, as in EIE)"),
    ),
    "bitserial": (
        EngineOption("brick_order", "datapath", choices=("datapath", "stripes"),
                     hint="conv bricks of 'datapath' order (channel, row, column) or 'stripes' "
                          "(lanes channels at one kernel position, as the hardware reads them)"),
        EngineOption("lanes", 16, 1, 4096, hint="activations per SIP brick, e.g. lanes=16 (Stripes)"),
        EngineOption("msb_first", 0, 0, 1, hint="0: least significant bit first (Stripes), 1: most "
                                                "significant first"),
    ),
    "xnor": (
        EngineOption("pool_on", "dots", choices=("dots", "bits"),
                     hint="max pool the integer dots then compare ('dots'), or compare then OR/AND the "
                          "bits ('bits'; BNN Algorithm 4): equal outputs"),
        EngineOption("scale_bits", 24, 2, 60, hint="width of the output BatchNorm's scale gamma/sigma, "
                                                   "e.g. scale_bits=24"),
    ),
}
"""The options of each datapath engine (:mod:`fxpsim.datapath.engines` runs them), sorted by name."""


def engine_options(engine: str, options=(), where: str = "") -> tuple[tuple[str, int | str], ...]:
    """``options`` (a dict or (name, value) pairs) of ``engine`` checked, defaults filled in, sorted.

    ``where`` (e.g. ``layer fc1``) starts the error messages.
    """
    at = f"{where}: " if where else ""
    check(isinstance(engine, str) and engine in ENGINE_OPTIONS,
          f"{at}engine={engine!r} is not a datapath engine: use one of {', '.join(ENGINE_OPTIONS)}")
    try:
        given = dict(options.items() if isinstance(options, dict) else options)
    except (TypeError, ValueError):
        raise FxpsimError(f"{at}engine_options={options!r} is not a mapping of option names to values: "
                          "give a dict, e.g. {\"pes\": 64}") from None
    declared = {o.name: o for o in ENGINE_OPTIONS[engine]}
    unknown = sorted(map(str, set(given) - set(declared)))
    check(not unknown, f"{at}engine {engine} has no option {unknown[0] if unknown else ''!r} (its options: "
                       f"{', '.join(declared) or 'none'}): drop it, or choose the engine it belongs to")
    try:
        return tuple((name, o.check(engine, given.get(name, o.default))) for name, o in declared.items())
    except FxpsimError as exc:
        raise FxpsimError(f"{at}{exc}") from None


# --------------------------------------------------------------------------- datapath knobs

PRODUCTS = ("exact", "cast")
"""``product``: ``exact`` (rounded to FL_acc, never range-limited) or ``cast`` (rounded, then
wrapped or clipped to BW_acc before it is added: hls4ml casts every product into accum_t)."""
KNOBS = ("frac_acc", "product", "product_rounding", "order", "output_overflow", "fmt_bias")
"""A layer's hardware choices beyond formats and BW_acc (DESIGN.md, issue 16); JSON omits each
at its default, so configs without them read and write as before."""
_STRIDED = re.compile(r"strided:([1-9][0-9]*)")
_CHANNELS_LAST = re.compile(r"channels-last:([1-9][0-9]*)(?:\+strided:([1-9][0-9]*))?")


class _DerivedInt(int):
    """A knob left at its default, derived from the other fields (FL_acc = FL_w + FL_x).

    ``dataclasses.replace`` passes every field back to ``__init__``; a plain int there would
    freeze the old default, so ``replace(cfg, fmt_w=...)`` derives a value of this type again.
    Equal to, and hashing as, the plain int.
    """

    __slots__ = ()


class _DerivedFormat(QFormat):
    """The bias format left at its default (the accumulator's), derived again by ``replace``
    like :class:`_DerivedInt`; equal to, and hashing as, the plain QFormat."""

    __slots__ = ()

    def __eq__(self, other):
        if not isinstance(other, QFormat):
            return NotImplemented
        return ((self.int_bits, self.frac_bits, self.signed, self.narrow)
                == (other.int_bits, other.frac_bits, other.signed, other.narrow))

    __hash__ = QFormat.__hash__

    def __repr__(self) -> str:
        return f"QFormat(int_bits={self.int_bits}, frac_bits={self.frac_bits}, signed={self.signed})"


def parse_order(value) -> str:
    """``sequential`` | ``strided:RF`` (RF a whole number >= 1, no leading zero) | ``tree`` |
    ``channels-last:C`` (K as C channels of K/C positions, added position-major: hls4ml's
    channels-last conv and flatten-Dense) | ``channels-last:C+strided:RF`` (strided over that)."""
    ok = isinstance(value, str) and (value in ("sequential", "tree") or _STRIDED.fullmatch(value)
                                     or _CHANNELS_LAST.fullmatch(value))
    check(ok, f"{value!r} is not an accumulation order: use sequential, tree, strided:RF (RF a "
              "whole number >= 1, hls4ml's ReuseFactor, e.g. strided:4), channels-last:C (C input "
              "channels, e.g. channels-last:16) or channels-last:C+strided:RF")
    return value


def _parse_output_overflow(value) -> Overflow:
    return parse_overflow(value, allow_ideal=False)


@dataclass(frozen=True, slots=True)
class LayerConfig:
    """Formats, accumulator and datapath knobs of one compute layer (DESIGN.md).

    ``acc_bits`` is BW_acc; ``overflow`` is what the accumulator does after
    every addition (``ideal``: unbounded, a reference only). The knobs
    (:data:`KNOBS`, all defaulting to the datapath before them):
    ``frac_acc`` FL_acc (None: FL_w + FL_x), ``product`` (:data:`PRODUCTS`),
    ``product_rounding`` (products rounded to FL_acc when FL_acc < FL_w +
    FL_x; default floor = AP_TRN; stochastic is refused), ``order``
    (:func:`parse_order`), ``output_overflow`` (clip | wrap to fmt_y's width
    after requantization) and ``fmt_bias`` (None: the accumulator format;
    the simulator converts the bias from it into the accumulator format).
    A knob left at its default follows the formats under ``replace``.
    """

    name: str
    fmt_w: QFormat
    fmt_x: QFormat
    fmt_y: QFormat
    acc_bits: int = 32
    overflow: Overflow = Overflow.WRAP
    rounding: Rounding = Rounding.NEAREST_EVEN
    a2q: bool = False
    """Shrink each output channel's integer weights to the A2Q L1 bound (Colbert et al. 2023)."""
    engine: str = "dense"
    """The datapath engine that runs the layer: dense | sparse | bitserial | xnor (:data:`ENGINE_OPTIONS`)."""
    engine_options: tuple = ()
    """The engine's options as (name, value) pairs sorted by name, defaults filled in (JSON: a dict)."""
    frac_acc: int | None = None
    """FL_acc, the accumulator's fraction bits (None: FL_w + FL_x; hls4ml accum_t may differ)."""
    product: str = "exact"
    """``exact`` | ``cast``: whether each product is wrapped/clipped to BW_acc before it is added."""
    product_rounding: Rounding = Rounding.FLOOR
    """How a product loses fraction bits when FL_acc < FL_w + FL_x (floor = AP_TRN)."""
    order: str = "sequential"
    """Accumulation order: ``sequential`` | ``strided:RF`` (hls4ml Resource) | ``tree`` (adder tree) |
    ``channels-last:C[+strided:RF]`` (hls4ml's channels-last conv / flatten-Dense)."""
    output_overflow: Overflow = Overflow.CLIP
    """What the output does beyond fmt_y after requantization: clip (AP_SAT) | wrap (AP_WRAP)."""
    fmt_bias: QFormat | None = None
    """The bias's own format (None: the accumulator's, :attr:`fmt_bias_acc`)."""

    def __post_init__(self) -> None:
        for field in ("fmt_w", "fmt_x", "fmt_y"):
            object.__setattr__(self, field, QFormat.parse(getattr(self, field)))
        object.__setattr__(self, "overflow", parse_overflow(self.overflow))
        object.__setattr__(self, "rounding", parse_rounding(self.rounding))
        object.__setattr__(self, "engine_options",
                           engine_options(self.engine, self.engine_options, f"layer {self.name}"))
        check(isinstance(self.acc_bits, Integral) and not isinstance(self.acc_bits, bool),
              f"layer {self.name}: acc_bits={self.acc_bits!r} is not an integer: give BW_acc in bits, "
              "e.g. acc_bits=16")
        object.__setattr__(self, "acc_bits", int(self.acc_bits))
        check(1 <= self.acc_bits <= MAX_WIDTH,
              f"layer {self.name}: acc_bits={self.acc_bits} is outside 1..{MAX_WIDTH}: the int64 datapath "
              f"holds at most {MAX_WIDTH} accumulator bits; choose BW_acc in that range")
        prod = self.fmt_x.width + self.fmt_w.width
        check(prod <= MAX_WIDTH,
              f"layer {self.name}: product width {self.fmt_x.width} + {self.fmt_w.width} = {prod} bits "
              f"({self.fmt_x} x {self.fmt_w}) exceeds {MAX_WIDTH}: the exact product must fit int64; "
              "narrow the operand formats")
        self._check_knobs(prod)
        check(abs(self.shift) <= MAX_WIDTH,
              f"layer {self.name}: requantization shift FL_acc - FL_y = {self.shift} is beyond "
              f"+-{MAX_WIDTH} bits ({self.fmt_x} x {self.fmt_w} -> {self.fmt_y}): choose an output "
              "format closer to the accumulator's")

    def _check_knobs(self, prod: int) -> None:
        """Resolve and check the knobs (:data:`KNOBS`); ``prod`` is the product width BW_x + BW_w."""
        at = f"layer {self.name}"
        fl_p = self.fmt_w.frac_bits + self.fmt_x.frac_bits
        fa = self.frac_acc
        if fa is None or isinstance(fa, _DerivedInt):
            fa = _DerivedInt(fl_p)
        check(isinstance(fa, Integral) and not isinstance(fa, bool),
              f"{at}: frac_acc={fa!r} is not an integer: give FL_acc in bits, e.g. frac_acc=10 "
              "(None: FL_w + FL_x)")
        object.__setattr__(self, "frac_acc", fa if isinstance(fa, _DerivedInt) else int(fa))
        d = self.frac_acc - fl_p
        check(prod + d <= MAX_WIDTH,
              f"{at}: frac_acc={self.frac_acc} shifts each {prod}-bit product {d} bits left (FL_w + FL_x = "
              f"{fl_p}): {prod + d} bits exceed the int64 datapath's {MAX_WIDTH}; choose frac_acc <= "
              f"{fl_p + MAX_WIDTH - prod}")
        check(d >= -MAX_WIDTH,
              f"{at}: frac_acc={self.frac_acc} drops {-d} fraction bits of each product (FL_w + FL_x = "
              f"{fl_p}), more than the {MAX_WIDTH} a shift can; choose frac_acc >= {fl_p - MAX_WIDTH}")
        check(self.product in PRODUCTS,
              f"{at}: product={self.product!r} is not one of {', '.join(PRODUCTS)}: exact keeps each "
              "product's range, cast wraps or clips it to BW_acc before the addition (hls4ml)")
        bias = self.fmt_bias
        parsed = {}
        for knob, parse, value in (("product_rounding", parse_rounding, self.product_rounding),
                                   ("output_overflow", _parse_output_overflow, self.output_overflow),
                                   ("order", parse_order, self.order),
                                   ("fmt_bias", QFormat.parse, None if isinstance(bias, _DerivedFormat) else bias)):
            try:
                parsed[knob] = None if knob == "fmt_bias" and value is None else parse(value)
            except FxpsimError as exc:
                raise FxpsimError(f"{at}: {knob}: {exc}") from None
        rounding, output, bias = parsed["product_rounding"], parsed["output_overflow"], parsed["fmt_bias"]
        check(not (output is Overflow.WRAP and self.fmt_y.narrow),
              f"{at}: output_overflow='wrap' into the narrow fmt_y {self.fmt_y}: a symmetric range has no "
              "two's-complement wrap; use output_overflow='clip' (AP_SAT_SYM) or a format without narrow")
        check(rounding is not Rounding.STOCHASTIC,
              f"{at}: product_rounding='stochastic' is not supported (products are rounded by a fixed rule, "
              "as ap_fixed's AP_TRN/AP_RND_*): use floor, nearest, nearest-even or toward-zero")
        object.__setattr__(self, "product_rounding", rounding)
        object.__setattr__(self, "output_overflow", output)
        if bias is None:
            acc = self.fmt_bias_acc
            bias = _DerivedFormat(acc.int_bits, acc.frac_bits)
        object.__setattr__(self, "fmt_bias", bias)

    @property
    def product_shift(self) -> int:
        """FL_acc - (FL_w + FL_x): > 0 each product shifted left exactly, < 0 rounded right by
        that many bits with ``product_rounding`` (DESIGN.md)."""
        return self.frac_acc - self.fmt_w.frac_bits - self.fmt_x.frac_bits

    @property
    def reuse_factor(self) -> int | None:
        """RF of ``order="strided:RF"`` (hls4ml's ReuseFactor), 1 for sequential, None for tree."""
        if self.order == "tree":
            return None
        if self.order.startswith("channels-last"):
            rf = _CHANNELS_LAST.fullmatch(self.order).group(2)
            return int(rf) if rf else 1
        return 1 if self.order == "sequential" else int(self.order.split(":")[1])

    @property
    def channels_last(self) -> int | None:
        """C of ``order="channels-last:C[+strided:RF]"``: the K inputs are C channels of K/C
        positions each (k = c * K/C + s), added position-major, s then c; None otherwise."""
        m = _CHANNELS_LAST.fullmatch(self.order)
        return int(m.group(1)) if m else None

    @property
    def knobs(self) -> dict:
        """The knobs (:data:`KNOBS`) not at their defaults, as JSON writes them."""
        out = {}
        if self.product_shift:
            out["frac_acc"] = int(self.frac_acc)
        if self.product != "exact":
            out["product"] = self.product
        if self.product_rounding is not Rounding.FLOOR:
            out["product_rounding"] = self.product_rounding.value
        if self.order != "sequential":
            out["order"] = self.order
        if self.output_overflow is not Overflow.CLIP:
            out["output_overflow"] = self.output_overflow.value
        if self.fmt_bias != self.fmt_bias_acc:
            out["fmt_bias"] = str(self.fmt_bias)
        return out

    @property
    def fmt_acc(self) -> QFormat:
        """The accumulator's format: BW_acc bits with FL_acc fraction bits."""
        return QFormat(self.acc_bits - self.frac_acc, self.frac_acc)

    @property
    def acc_min(self) -> int:
        """Smallest raw accumulator value, -2**(BW_acc - 1)."""
        return -(1 << (self.acc_bits - 1))

    @property
    def acc_max(self) -> int:
        """Largest raw accumulator value, 2**(BW_acc - 1) - 1."""
        return (1 << (self.acc_bits - 1)) - 1

    @property
    def shift(self) -> int:
        """Requantization shift FL_acc - FL_y (> 0: a rounding right shift; DESIGN.md)."""
        return self.frac_acc - self.fmt_y.frac_bits

    @property
    def fmt_bias_acc(self) -> QFormat:
        """The bias as the engines take it, raw in the accumulator format (``ideal``: MAX_WIDTH
        bits, FL_acc fraction bits); :attr:`fmt_bias` is converted into it (saturating)."""
        width = MAX_WIDTH if self.overflow is Overflow.IDEAL else self.acc_bits
        return QFormat(width - self.frac_acc, self.frac_acc)

    def to_dict(self) -> dict:
        return {"name": self.name, "fmt_w": str(self.fmt_w), "fmt_x": str(self.fmt_x),
                "fmt_y": str(self.fmt_y), "acc_bits": self.acc_bits,
                "overflow": self.overflow.value, "rounding": self.rounding.value, "a2q": self.a2q,
                **({"engine": self.engine} if self.engine != "dense" else {}),
                **({"engine_options": dict(self.engine_options)} if self.engine_options else {}),
                **self.knobs}

    @property
    def options(self) -> dict:
        """The engine's options as a dict (every declared option, defaults filled in)."""
        return dict(self.engine_options)

    def with_engine(self, engine: str, **options) -> LayerConfig:
        """A copy run by ``engine`` with ``options`` (the others at their defaults)."""
        return replace(self, engine=engine, engine_options=tuple(options.items()))

    @classmethod
    def from_dict(cls, d: dict) -> LayerConfig:
        """A layer of a config file: every field of the type :meth:`to_dict` writes, never coerced
        (``"a2q": "false"`` is not True, ``"acc_bits": 16.9`` is not 16)."""
        check(isinstance(d, dict), f"layer config {_short(d)} is not a JSON object: each layer is "
                                   "{\"name\": ..., \"fmt_w\": ..., \"fmt_x\": ..., \"fmt_y\": ..., \"acc_bits\": ...}")
        missing = [k for k in ("name", "fmt_w", "fmt_x", "fmt_y", "acc_bits") if k not in d]
        check(not missing, f"layer config {_short(d)} lacks {', '.join(missing)}: each layer needs name, "
                           "fmt_w, fmt_x, fmt_y and acc_bits")
        unknown = sorted(set(d) - set(_LAYER_KEYS))
        check(not unknown, f"layer {_short(d.get('name'))}: unknown key(s) {', '.join(map(repr, unknown))}: "
                           f"a layer config has {', '.join(_LAYER_KEYS)}")
        where = f"layer {_short(d['name'])}"
        for key in ("name", "fmt_w", "fmt_x", "fmt_y", "overflow", "rounding", "engine", "product",
                    "product_rounding", "order", "output_overflow", "fmt_bias"):
            if key in d:
                check(isinstance(d[key], str), f"{where}: {key}={_short(d[key])} is not a string: write it as "
                                               "fxpsim does, e.g. \"Q4.12\", \"wrap\", \"nearest-even\"")
        for key in ("acc_bits", "frac_acc"):
            v = d.get(key, 0)
            check(isinstance(v, int) and not isinstance(v, bool),
                  f"{where}: {key}={_short(v)} is not a whole number: give "
                  f"{'BW_acc' if key == 'acc_bits' else 'FL_acc'} in bits, e.g. 16")
        a2q = d.get("a2q", False)
        check(isinstance(a2q, bool), f"{where}: a2q={_short(a2q)} is not true or false (JSON booleans, unquoted)")
        knobs = {k: d[k] for k in KNOBS if k in d}
        return cls(name=d["name"], fmt_w=d["fmt_w"], fmt_x=d["fmt_x"], fmt_y=d["fmt_y"], acc_bits=d["acc_bits"],
                   overflow=d.get("overflow", "wrap"), rounding=d.get("rounding", "nearest-even"), a2q=a2q,
                   engine=d.get("engine", "dense"), engine_options=_options_dict(d), **knobs)


_LAYER_KEYS = ("name", "fmt_w", "fmt_x", "fmt_y", "acc_bits", "overflow", "rounding", "a2q", "engine",
               "engine_options", *KNOBS)
"""The keys :meth:`LayerConfig.to_dict` writes (engine ones and knobs only when not the default)."""
MAX_CONFIG_BYTES = 16 << 20
"""Largest config file read: a network's config is a few KiB; a bigger file is refused unread."""


def _short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line errors about untrusted input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_constant(name: str):
    """JSON's NaN/Infinity are not config values (``json`` would accept them)."""
    raise FxpsimError(f"it holds {name}, which no config field takes: write whole numbers and strings")


def _options_dict(d: dict) -> dict:
    opts = d.get("engine_options", {})
    check(isinstance(opts, dict), f"layer {d.get('name')!r}: engine_options={opts!r} is not a JSON object: "
                                  "write the options as {\"name\": value, ...}")
    return opts


MAX_CONFIG_LAYERS = 1024
"""Most layers in a config (a model has at most 1024 layers, :data:`fxpsim.modelfile.MAX_LAYERS`)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHAPE = re.compile(r"[1-9][0-9]{0,9}(x[1-9][0-9]{0,9}){0,3}")
_RECORD_KEYS = ("file", "weights_sha256", "layers")
_CONFIG_KEYS = ("format", "version", "model", "layers")


def weights_sha256(state) -> str:
    """sha256 of a model's weights: every array of ``state`` (:meth:`Network.state_dict`), by sorted
    key, as its key, dtype, shape and C-order bytes. The arrays, not the file: the same weights give
    the same digest whatever the zip's timestamps or compression."""
    h = hashlib.sha256()
    for key in sorted(state):
        a = np.ascontiguousarray(state[key])
        h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.data if a.size else b"")
    return h.hexdigest()


def _shape_text(shape) -> str:
    """A weight shape as a config file writes it: ``16x1x3x3``."""
    return "x".join(map(str, shape))


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """The model a config was made for: its file name (no folder), the sha256 of its weights
    (:func:`weights_sha256`) and each compute layer's name and weight shape, in config order."""

    file: str
    weights_sha256: str
    layers: tuple[tuple[str, tuple[int, ...]], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple((str(n), tuple(int(d) for d in shape)) for n, shape in self.layers))

    @classmethod
    def of(cls, file, state, layers) -> ModelRecord:
        """The record of a model file ``file`` (only its name is kept) with weights ``state`` and
        compute layers ``layers`` (``(name, weight shape)`` pairs, e.g. from the simulator's stages)."""
        return cls(Path(file).name, weights_sha256(state), tuple(layers))

    def to_dict(self) -> dict:
        return {"file": self.file, "weights_sha256": self.weights_sha256,
                "layers": [{"name": n, "weight_shape": _shape_text(shape)} for n, shape in self.layers]}

    @classmethod
    def from_dict(cls, d, source: str = "config") -> ModelRecord:
        """The ``"model"`` entry of a config file, every field of the type :meth:`to_dict` writes."""
        at = f"{source}: its \"model\" entry"
        check(isinstance(d, dict) and sorted(d) == sorted(_RECORD_KEYS),
              f"{at} {_short(d)} is not {{\"file\": ..., \"weights_sha256\": ..., \"layers\": [...]}}: "
              "remove the entry (the config then runs on any model with its layers) or re-run the search")
        check(isinstance(d["file"], str) and 0 < len(d["file"]) <= 255 and "/" not in d["file"],
              f"{at}: file={_short(d['file'])} is not a model file name: write the name only, e.g. "
              "\"digits-cnn.npz\"")
        check(isinstance(d["weights_sha256"], str) and _SHA256.fullmatch(d["weights_sha256"]) is not None,
              f"{at}: weights_sha256={_short(d['weights_sha256'])} is not 64 lowercase hex digits (a sha256)")
        layers = d["layers"]
        check(isinstance(layers, list) and 1 <= len(layers) <= MAX_CONFIG_LAYERS,
              f"{at}: layers={_short(layers)} is not a list of 1 to {MAX_CONFIG_LAYERS} layers")
        out = []
        for item in layers:
            ok = (isinstance(item, dict) and sorted(item) == ["name", "weight_shape"]
                  and isinstance(item["name"], str) and isinstance(item["weight_shape"], str)
                  and _SHAPE.fullmatch(item["weight_shape"]) is not None)
            check(ok, f"{at}: layer {_short(item)} is not {{\"name\": \"fc1\", \"weight_shape\": \"64x128\"}} "
                      "(1 to 4 whole numbers >= 1 joined by 'x')")
            out.append((item["name"], tuple(int(v) for v in item["weight_shape"].split("x"))))
        return cls(d["file"], d["weights_sha256"], tuple(out))

    def describe(self) -> str:
        """``digits-cnn.npz (weights sha256 0123456789abcdef, layers conv1 8x1x3x3, fc1 128x10)``."""
        layers = ", ".join(f"{n} {_shape_text(shape)}" for n, shape in self.layers)
        return f"{self.file} (weights sha256 {self.weights_sha256[:16]}, layers {layers})"


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """One :class:`LayerConfig` per compute layer, in network order, and optionally the
    :class:`ModelRecord` of the model it was made for (a searched config records it; a
    hand-written or older one has none and runs on any model with its layers)."""

    layers: tuple[LayerConfig, ...]
    model: ModelRecord | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        check(self.model is None or isinstance(self.model, ModelRecord),
              f"model={_short(self.model)} is not a ModelRecord (or None): build it with ModelRecord.of")

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, i: int) -> LayerConfig:
        return self.layers[i]

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def with_layer(self, i: int, **changes) -> NetworkConfig:
        """A copy with layer ``i`` changed (``dataclasses.replace``)."""
        layers = list(self.layers)
        layers[i] = replace(layers[i], **changes)
        return replace(self, layers=tuple(layers))

    def with_all(self, **changes) -> NetworkConfig:
        """A copy with the same change applied to every layer."""
        return replace(self, layers=tuple(replace(layer, **changes) for layer in self.layers))

    def with_engine(self, engine: str, layers=None, **options) -> NetworkConfig:
        """A copy with the layers named in ``layers`` (default: all) run by ``engine`` with ``options``."""
        names = set(self.names if layers is None else layers)
        missing = sorted(names - set(self.names))
        check(not missing, f"no layer {missing[0] if missing else ''!r} in this config (its layers: "
                           f"{', '.join(self.names)})")
        return replace(self, layers=tuple(layer.with_engine(engine, **options) if layer.name in names else layer
                                          for layer in self.layers))

    def for_model(self, record: ModelRecord | None) -> NetworkConfig:
        """A copy that records ``record`` as the model it was made for (None: no record)."""
        return replace(self, model=record)

    def check_model(self, record: ModelRecord, source: str = "config", fix: str = "") -> None:
        """Refuse to run on the model of ``record`` if this config was made for another one (other
        weights, or other layer names or shapes); a config without a record passes. ``fix`` ends the
        message (e.g. how to run it anyway)."""
        made = self.model
        if made is None or made.weights_sha256 == record.weights_sha256:
            return
        what = "other weights" if made.layers == record.layers else "other layers"
        raise FxpsimError(f"{source} was made for the model {made.describe()}, but the model given is "
                          f"{record.describe()} ({what}): give a config made for this model (fxpsim search)"
                          + (f", {fix}" if fix else ""))

    def table(self):
        """The configuration as a pandas DataFrame, one row per layer; engine columns when some
        layer is not on dense, and a column per knob (:data:`KNOBS`) that some layer sets off its
        default (each layer's value in it)."""
        import pandas as pd

        rows = []
        for layer in self.layers:
            rows.append({"layer": layer.name, "weights": str(layer.fmt_w), "bw_w": layer.fmt_w.width,
                         "data_in": str(layer.fmt_x), "bw_x": layer.fmt_x.width,
                         "data_out": str(layer.fmt_y), "acc_bits": layer.acc_bits,
                         "overflow": layer.overflow.value, "rounding": layer.rounding.value,
                         "a2q": layer.a2q})
        if any(layer.engine != "dense" for layer in self.layers):  # else the table as before engines
            for row, layer in zip(rows, self.layers):
                row["engine"] = layer.engine
                row["engine_options"] = " ".join(f"{k}={v}" for k, v in layer.engine_options)
        set_knobs = [k for k in KNOBS if any(k in layer.knobs for layer in self.layers)]
        for row, layer in zip(rows, self.layers):  # only knobs some layer sets: else as before them
            for knob in set_knobs:
                value = getattr(layer, knob)
                row[knob] = value.value if hasattr(value, "value") else (
                    int(value) if knob == "frac_acc" else str(value))
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        model = {"model": self.model.to_dict()} if self.model is not None else {}
        return json.dumps({"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **model,
                           "layers": [layer.to_dict() for layer in self.layers]}, indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> NetworkConfig:
        check(len(text) <= MAX_CONFIG_BYTES, f"{source} holds {len(text)} characters, more than a config's "
                                             f"{MAX_CONFIG_BYTES >> 20} MiB limit: give a file written by fxpsim")
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise FxpsimError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}): "
                              "give a file written by fxpsim (reports/*config*.json)") from None
        except RecursionError:
            raise FxpsimError(f"{source} nests JSON too deeply to be a config: give a file written by "
                              "fxpsim (reports/*config*.json)") from None
        except FxpsimError as exc:
            raise FxpsimError(f"{source}: {exc}") from None
        except ValueError:  # an integer of more than 4300 digits
            raise FxpsimError(f"{source} holds a number too long to be a config value: give a file "
                              "written by fxpsim") from None
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise FxpsimError(f"{source} is not an fxpsim configuration (no \"format\": "
                              f"\"{CONFIG_FORMAT}\"): give a file written by fxpsim")
        version = data.get("version")
        check(isinstance(version, int) and not isinstance(version, bool) and version == CONFIG_VERSION,
              f"{source} has configuration version {_short(version)}; this fxpsim reads "
              f"version {CONFIG_VERSION}")
        unknown = sorted(set(data) - set(_CONFIG_KEYS))
        check(not unknown, f"{source} has the unknown key {_short(unknown[0] if unknown else '')} (a config "
                           f"has {', '.join(_CONFIG_KEYS)}): give a file written by fxpsim")
        layers = data.get("layers")
        check(isinstance(layers, list) and layers, f"{source} has no layers list")
        check(len(layers) <= MAX_CONFIG_LAYERS, f"{source} has {len(layers)} layers, more than any model's "
                                                f"{MAX_CONFIG_LAYERS}: give a file written by fxpsim")
        model = ModelRecord.from_dict(data["model"], source) if "model" in data else None
        try:
            return cls(tuple(LayerConfig.from_dict(d) for d in layers), model)
        except FxpsimError as exc:  # a layer's own message, prefixed with the file it is in
            raise FxpsimError(f"{source}: {exc}") from None

    def save(self, path) -> Path:
        from .tables import write_text_atomic

        return write_text_atomic(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> NetworkConfig:
        path = Path(path)
        check(path.is_file(), f"config {path} is not a file: give a config written by fxpsim "
                              "(reports/*config*.json)")
        size = path.stat().st_size
        check(size <= MAX_CONFIG_BYTES, f"config {path} is {size} bytes, more than a config's "
                                        f"{MAX_CONFIG_BYTES >> 20} MiB limit: give a file written by fxpsim")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FxpsimError(f"config {path} is not UTF-8 text (byte {exc.start}): give a JSON file "
                              "written by fxpsim") from None
        return cls.from_json(text, source=str(path))
