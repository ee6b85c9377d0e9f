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
from pathlib import Path

from .errors import FxpsimError, check
from .qformat import MAX_WIDTH, Overflow, QFormat, Rounding, parse_overflow, parse_rounding

CONFIG_FORMAT = "fxpsim-config"
CONFIG_VERSION = 1


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

    def __post_init__(self) -> None:
        for field in ("fmt_w", "fmt_x", "fmt_y"):
            object.__setattr__(self, field, QFormat.parse(getattr(self, field)))
        object.__setattr__(self, "overflow", parse_overflow(self.overflow))
        object.__setattr__(self, "rounding", parse_rounding(self.rounding))
        check(isinstance(self.acc_bits, int) and 1 <= self.acc_bits <= MAX_WIDTH,
              f"layer {self.name}: acc_bits={self.acc_bits!r} must be a whole number in 1..{MAX_WIDTH} "
              "(the int64 datapath); choose a narrower accumulator")

    @property
    def frac_acc(self) -> int:
        """FL_acc = FL_w + FL_x: the accumulator's fraction bits."""
        return self.fmt_w.frac_bits + self.fmt_x.frac_bits

    @property
    def fmt_acc(self) -> QFormat:
        """The accumulator's format: BW_acc bits with FL_acc fraction bits."""
        return QFormat(self.acc_bits - self.frac_acc, self.frac_acc)

    def to_dict(self) -> dict:
        return {"name": self.name, "fmt_w": str(self.fmt_w), "fmt_x": str(self.fmt_x),
                "fmt_y": str(self.fmt_y), "acc_bits": self.acc_bits,
                "overflow": self.overflow.value, "rounding": self.rounding.value, "a2q": self.a2q}

    @classmethod
    def from_dict(cls, d: dict) -> LayerConfig:
        try:
            return cls(name=str(d["name"]), fmt_w=d["fmt_w"], fmt_x=d["fmt_x"], fmt_y=d["fmt_y"],
                       acc_bits=int(d["acc_bits"]), overflow=d.get("overflow", "wrap"),
                       rounding=d.get("rounding", "nearest-even"), a2q=bool(d.get("a2q", False)))
        except (KeyError, TypeError) as exc:
            raise FxpsimError(f"layer config {d!r} lacks {exc}: each layer needs name, fmt_w, fmt_x, "
                              "fmt_y and acc_bits") from None


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
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        return json.dumps({"format": CONFIG_FORMAT, "version": CONFIG_VERSION,
                           "layers": [layer.to_dict() for layer in self.layers]}, indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> NetworkConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FxpsimError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}): "
                              "give a file written by fxpsim (reports/*config*.json)") from None
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
        return cls.from_json(path.read_text(), source=str(path))
