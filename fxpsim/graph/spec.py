"""The spec grammar: ``"conv6x5-relu-maxpool2-fc10"`` <-> a list of layers.

Each token family is a :class:`~fxpsim.graph.registry.TokenRule` in the
registry: the float layers' rules are registered here, the binary layers'
by :mod:`fxpsim.binary.train_layers`. A Flatten is inserted before a layer
that takes flat input (``fc``, ``bfc``) when its input is not flat, and left
out again by :func:`format_spec`.
"""

from __future__ import annotations

import re

from ..errors import FxpsimError
from .layers import DEFAULT_DTYPE, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU
from .layers import Sigmoid, Tanh
from .registry import TokenRule, register_tokens, token_rule
from .zoo import ARCHITECTURES

GRAMMAR = (
    "tokens joined by '-': conv<C>x<k>[s<stride>][p<pad>], fc<N>, relu, tanh, sigmoid, "
    "maxpool<k>[s<stride>], avgpool<k>[s<stride>], bn, dropout<percent>, flatten; binary: "
    "bfc<N>[method], bconv<C>x<k>[s<stride>][p<pad>][method], sign (method bc|bcs|bnn|bwn|xnor|twn|ttq)"
)

_CONV_RE = re.compile(r"conv(\d+)x(\d+)(?:s(\d+))?(?:p(\d+))?")
_FC_RE = re.compile(r"fc(\d+)")
_POOL_RE = re.compile(r"(maxpool|avgpool)(\d+)(?:s(\d+))?")
_DROPOUT_RE = re.compile(r"dropout(\d+(?:\.\d+)?)")
_PLAIN = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "flatten": Flatten}


def _conv(tok, shape, dtype):
    m = _CONV_RE.fullmatch(tok)
    if m is None:
        return None
    c_out, k, s, p = int(m[1]), int(m[2]), int(m[3] or 1), int(m[4] or 0)
    if len(shape) != 3:
        raise FxpsimError(f"conv needs (C, H, W) input, got shape {shape}")
    return Conv2D(shape[0], c_out, k, s, p, dtype=dtype)


def _fc(tok, shape, dtype):
    m = _FC_RE.fullmatch(tok)
    if m is None:
        return None
    n_out = int(m[1])
    if n_out < 1:
        raise FxpsimError("fc size must be >= 1")
    return Dense(shape[0], n_out, dtype=dtype)


def _pool(tok, shape, dtype):
    m = _POOL_RE.fullmatch(tok)
    if m is None:
        return None
    cls = MaxPool2D if m[1] == "maxpool" else AvgPool2D
    return cls(int(m[2]), int(m[3]) if m[3] else None)


def _dropout(tok, shape, dtype):
    m = _DROPOUT_RE.fullmatch(tok)
    if m is None:
        return None
    pct = float(m[1])
    if not 0 <= pct < 100:
        raise FxpsimError("dropout percent must be in [0, 100)")
    return Dropout(pct / 100)


def _bn(tok, shape, dtype):
    return BatchNorm(shape[0], dtype=dtype) if tok == "bn" else None


def _plain(tok, shape, dtype):
    cls = _PLAIN.get(tok)
    return None if cls is None else cls()


for _rule in (TokenRule(("conv",), _conv), TokenRule(("fc",), _fc, flat_input=True),
              TokenRule(("maxpool", "avgpool"), _pool), TokenRule(("dropout",), _dropout),
              TokenRule(("bn",), _bn), TokenRule(tuple(_PLAIN), _plain)):
    register_tokens(_rule)


def _bad(tok: str, spec: str, why: str = "") -> FxpsimError:
    names = ", ".join(ARCHITECTURES)
    why = f" ({why})" if why else ""
    return FxpsimError(
        f"bad token {tok!r} in architecture spec {spec!r}{why}: expected an architecture name "
        f"({names}) or {GRAMMAR}"
    )


def resolve_spec(arch_or_spec: str, input_shape: tuple[int, ...], n_classes: int) -> str:
    """Named architecture -> its spec string for this input/classes; a spec string as is."""
    key = str(arch_or_spec).strip().lower()
    if key in ARCHITECTURES:
        return ARCHITECTURES[key][0](tuple(input_shape), int(n_classes))
    return key


def parse_spec(spec: str, input_shape: tuple[int, ...], dtype=DEFAULT_DTYPE) -> list[Layer]:
    """Layers (parameters zero) for a spec string on inputs of ``input_shape``.

    A Flatten is inserted before any fc (or bfc) whose input is not already flat.
    """
    if not spec:
        raise _bad(spec, spec, "empty")
    shape = tuple(int(s) for s in input_shape)
    layers: list[Layer] = []

    def add(layer: Layer, tok: str) -> None:
        nonlocal shape
        try:
            shape = tuple(layer.output_shape(shape))
        except FxpsimError as err:
            raise FxpsimError(f"token {tok!r} in architecture spec {spec!r} does not fit: {err}") from None
        layers.append(layer)

    for tok in spec.split("-"):
        rule = token_rule(tok)
        if rule is None:
            raise _bad(tok, spec)
        try:
            if rule.flat_input and len(shape) != 1:
                add(Flatten(), "flatten")
            layer = rule.build(tok, shape, dtype)
        except FxpsimError as err:
            msg = str(err)
            if msg.startswith("token "):
                raise
            raise _bad(tok, spec, msg) from None
        if layer is None:
            raise _bad(tok, spec)
        add(layer, tok)
    return layers


def layer_token(layer: Layer) -> str:
    """The spec token of one layer (a layer with a ``token()`` method, e.g. a binary one, gives its own)."""
    if hasattr(layer, "token"):  # binary layers: bfc/bconv with their method
        return layer.token()
    if isinstance(layer, Conv2D):
        tok = f"conv{layer.c_out}x{layer.k}"
        tok += f"s{layer.stride}" if layer.stride != 1 else ""
        return tok + (f"p{layer.padding}" if layer.padding else "")
    if isinstance(layer, Dense):
        return f"fc{layer.n_out}"
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        name = "maxpool" if isinstance(layer, MaxPool2D) else "avgpool"
        return f"{name}{layer.size}" + (f"s{layer.stride}" if layer.stride != layer.size else "")
    if isinstance(layer, BatchNorm):
        return "bn"
    if isinstance(layer, Dropout):
        return f"dropout{layer.p * 100:g}"
    return layer.kind  # flatten, relu, tanh, sigmoid


def format_spec(layers) -> str:
    """The spec string of a layer stack; :func:`parse_spec` of it rebuilds the same layers."""
    layers = list(layers)
    tokens = []
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Flatten) and isinstance(nxt, Dense):
            continue  # re-inserted automatically before the fc
        tokens.append(layer_token(layer))
    return "-".join(tokens)
