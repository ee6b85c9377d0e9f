"""Per-layer datapath configuration: the small frozen value a search produces.

A :class:`LayerConfig` fixes, for one compute layer (Dense or Conv2D with
its folded BatchNorm and fused activation), the weight format, the input-
and output-data formats, the accumulator width BW_acc, the overflow mode
and the rounding mode. A :class:`NetworkConfig` is the tuple of them, saved
and loaded as JSON, shown as a table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from numbers import Integral
from pathlib import Path

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
}
"""The options of each datapath engine (:mod:`fxpsim.datapath.engines` runs them), sorted by name."""


def engine_options(engine: str, options=(), where: str = "") -> tuple[tuple[str, int | str], ...]:
    """``options`` (a dict or (name, value) pairs) of ``engine`` checked, defaults filled in, sorted.

    ``where`` (e.g. ``layer fc1``) starts the error messages.
    """
    at = f"{where}: " if where else ""
    if engine == "xnor":
        raise FxpsimError(f"{at}engine='xnor' runs binary (XNOR-popcount) layers: run BNN models with "
                          f"`fxpsim binary`; fixed-point layers take {', '.join(ENGINE_OPTIONS)}")
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


@dataclass(frozen=True, slots=True)
class LayerConfig:
    """Formats and accumulator of one compute layer.

    ``acc_bits`` is BW_acc; the accumulator has FL_acc = FL_w + FL_x
    fraction bits (DESIGN.md). ``overflow`` is what the accumulator does
    after every addition (``ideal``: unbounded, a reference only).
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
    """The datapath engine that runs the layer: dense | sparse | bitserial (:data:`ENGINE_OPTIONS`)."""
    engine_options: tuple = ()
    """The engine's options as (name, value) pairs sorted by name, defaults filled in (JSON: a dict)."""

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
        check(abs(self.shift) <= MAX_WIDTH,
              f"layer {self.name}: requantization shift FL_acc - FL_y = {self.shift} is beyond "
              f"+-{MAX_WIDTH} bits ({self.fmt_x} x {self.fmt_w} -> {self.fmt_y}): choose an output "
              "format closer to the accumulator's")

    @property
    def frac_acc(self) -> int:
        """FL_acc = FL_w + FL_x: the accumulator's fraction bits."""
        return self.fmt_w.frac_bits + self.fmt_x.frac_bits

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
    def fmt_bias(self) -> QFormat:
        """The bias's format: the accumulator's (``ideal``: MAX_WIDTH bits, FL_acc fraction bits)."""
        width = MAX_WIDTH if self.overflow is Overflow.IDEAL else self.acc_bits
        return QFormat(width - self.frac_acc, self.frac_acc)

    def to_dict(self) -> dict:
        return {"name": self.name, "fmt_w": str(self.fmt_w), "fmt_x": str(self.fmt_x),
                "fmt_y": str(self.fmt_y), "acc_bits": self.acc_bits,
                "overflow": self.overflow.value, "rounding": self.rounding.value, "a2q": self.a2q,
                **({"engine": self.engine} if self.engine != "dense" else {}),
                **({"engine_options": dict(self.engine_options)} if self.engine_options else {})}

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
        for key in ("name", "fmt_w", "fmt_x", "fmt_y", "overflow", "rounding", "engine"):
            if key in d:
                check(isinstance(d[key], str), f"{where}: {key}={_short(d[key])} is not a string: write it as "
                                               "fxpsim does, e.g. \"Q4.12\", \"wrap\", \"nearest-even\"")
        acc = d["acc_bits"]
        check(isinstance(acc, int) and not isinstance(acc, bool),
              f"{where}: acc_bits={_short(acc)} is not a whole number: give BW_acc in bits, e.g. 16")
        a2q = d.get("a2q", False)
        check(isinstance(a2q, bool), f"{where}: a2q={_short(a2q)} is not true or false (JSON booleans, unquoted)")
        return cls(name=d["name"], fmt_w=d["fmt_w"], fmt_x=d["fmt_x"], fmt_y=d["fmt_y"], acc_bits=acc,
                   overflow=d.get("overflow", "wrap"), rounding=d.get("rounding", "nearest-even"), a2q=a2q,
                   engine=d.get("engine", "dense"), engine_options=_options_dict(d))


_LAYER_KEYS = ("name", "fmt_w", "fmt_x", "fmt_y", "acc_bits", "overflow", "rounding", "a2q", "engine",
               "engine_options")
"""The keys :meth:`LayerConfig.to_dict` writes (engine ones only when not the default)."""
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


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """One :class:`LayerConfig` per compute layer, in network order."""

    layers: tuple[LayerConfig, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))

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
        return NetworkConfig(tuple(layers))

    def with_all(self, **changes) -> NetworkConfig:
        """A copy with the same change applied to every layer."""
        return NetworkConfig(tuple(replace(layer, **changes) for layer in self.layers))

    def with_engine(self, engine: str, layers=None, **options) -> NetworkConfig:
        """A copy with the layers named in ``layers`` (default: all) run by ``engine`` with ``options``."""
        names = set(self.names if layers is None else layers)
        missing = sorted(names - set(self.names))
        check(not missing, f"no layer {missing[0] if missing else ''!r} in this config (its layers: "
                           f"{', '.join(self.names)})")
        return NetworkConfig(tuple(layer.with_engine(engine, **options) if layer.name in names else layer
                                   for layer in self.layers))

    def table(self):
        """The configuration as a pandas DataFrame, one row per layer."""
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
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        return json.dumps({"format": CONFIG_FORMAT, "version": CONFIG_VERSION,
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
        check(data.get("version") == CONFIG_VERSION,
              f"{source} has configuration version {data.get('version')!r}; this fxpsim reads "
              f"version {CONFIG_VERSION}")
        layers = data.get("layers")
        check(isinstance(layers, list) and layers, f"{source} has no layers list")
        return cls(tuple(LayerConfig.from_dict(d) for d in layers))

    def save(self, path) -> Path:
        from .reports import write_text_atomic

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
