"""The spec grammar: ``"conv6x5-relu-maxpool2-fc10"`` <-> a list of layers.

DAGs (residual networks): ``res[<tokens>]`` is a residual block, the
tokens inside a branch from the layer before the block and an ``add`` of
the branch and that layer after it (He et al. 2016's identity shortcut):
``conv16x3p1-relu-res[conv16x3p1-relu-conv16x3p1]-relu-gap-fc10``. Any token
may end in ``@j,k,...``, the network indices of the layers it reads (``in``
the network input; the default is the layer before it): ``concat@2,5``;
``clip<lo>:<hi>`` writes a minus as ``n`` (``clipn1:1``).

Each token family is a :class:`~fxpsim.graph.registry.TokenRule` in the
registry: the float layers' rules are registered here, the binary layers'
by :mod:`fxpsim.binary.train_layers`. A Flatten is inserted before a layer
that takes flat input (``fc``, ``bfc``) when its input is not flat, and left
out again by :func:`format_spec`.
"""

from __future__ import annotations

import re

from ..errors import FxpsimError
from .layers import DEFAULT_DTYPE, Add, AvgPool2D, BatchNorm, Clip, Concat, Conv2D, Dense, Dropout, Flatten
from .layers import GlobalAvgPool, Identity, Layer, MaxPool2D, ReLU, Sigmoid, Tanh
from .registry import TokenRule, register_tokens, token_rule
from .zoo import ARCHITECTURES

GRAMMAR = (
    "tokens joined by '-': conv<C>x<k>[s<stride>][p<pad>], fc<N>, relu, tanh, sigmoid, "
    "maxpool<k>[s<stride>], avgpool<k>[s<stride>], bn, dropout<percent>, flatten, gap, relu6, "
    "clip<lo>:<hi> (n for minus), identity, conv...g<groups>; DAG: res[<tokens>], add, concat, "
    "<token>@<j>,<k> (layer indices, in = the input); binary: "
    "bfc<N>[method], bconv<C>x<k>[s<stride>][p<pad>][method], sign (method bc|bcs|bnn|bwn|xnor|twn|ttq)"
)

_CONV_RE = re.compile(r"conv(\d+)x(\d+)(?:s(\d+))?(?:p(\d+))?(?:g(\d+))?")
_CLIP_RE = re.compile(r"clip(n?\d+(?:\.\d+)?):(n?\d+(?:\.\d+)?)")  # n: minus ('-' joins tokens)
_AT_RE = re.compile(r"(.+)@((?:in|\d+)(?:,(?:in|\d+))*)")
_FC_RE = re.compile(r"fc(\d+)")
_POOL_RE = re.compile(r"(maxpool|avgpool)(\d+)(?:s(\d+))?")
_DROPOUT_RE = re.compile(r"dropout(\d+(?:\.\d+)?)")
_PLAIN = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "flatten": Flatten, "gap": GlobalAvgPool,
          "identity": Identity, "add": Add, "concat": Concat, "relu6": Clip}


def _conv(tok, shape, dtype):
    m = _CONV_RE.fullmatch(tok)
    if m is None:
        return None
    c_out, k, s, p, g = int(m[1]), int(m[2]), int(m[3] or 1), int(m[4] or 0), int(m[5] or 1)
    if len(shape) != 3:
        raise FxpsimError(f"conv needs (C, H, W) input, got shape {shape}")
    return Conv2D(shape[0], c_out, k, s, p, g, dtype=dtype)


def _clip(tok, shape, dtype):
    m = _CLIP_RE.fullmatch(tok)
    return None if m is None else Clip(*(float(v.replace("n", "-")) for v in (m[1], m[2])))


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
    if cls in (Add, Concat):
        return cls(len(shape)) if isinstance(shape, list) else cls()
    return None if cls is None else cls()


for _rule in (TokenRule(("conv",), _conv), TokenRule(("fc",), _fc, flat_input=True),
              TokenRule(("maxpool", "avgpool"), _pool), TokenRule(("dropout",), _dropout),
              TokenRule(("bn",), _bn), TokenRule(tuple(_PLAIN), _plain), TokenRule(("clip",), _clip)):
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


def _split(spec: str) -> list[str]:
    """``spec`` cut at the ``-`` outside brackets (``res[...]`` keeps its inner tokens)."""
    tokens, depth, cur = [], 0, ""
    for ch in spec:
        depth += (ch == "[") - (ch == "]")
        if depth < 0:
            raise _bad(spec, spec, "a ']' closes no '['")
        if ch == "-" and depth == 0:
            tokens.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise _bad(spec, spec, "a '[' is never closed")
    return tokens + [cur]


def parse_spec(spec: str, input_shape: tuple[int, ...], dtype=DEFAULT_DTYPE) -> list[Layer]:
    """Layers (parameters zero) for a spec string on inputs of ``input_shape``; a DAG's layers carry
    their ``inputs`` (``res[...]``, ``@j,k``).

    A Flatten is inserted before any fc (or bfc) whose input is not already flat.
    """
    if not spec:
        raise _bad(spec, spec, "empty")
    shapes = {-1: tuple(int(s) for s in input_shape)}
    layers: list[Layer] = []

    def add(layer: Layer, tok: str, ins=None) -> None:
        got = [shapes[j] for j in ins] if ins is not None else [shapes[len(layers) - 1]]
        try:
            shape = tuple(layer.output_shape(got if layer.merge else got[0]))
        except FxpsimError as err:
            raise FxpsimError(f"token {tok!r} in architecture spec {spec!r} does not fit: {err}") from None
        if ins is not None:
            layer.inputs = tuple(ins)
        shapes[len(layers)] = shape
        layers.append(layer)

    def run(tokens: list[str]) -> None:
        for tok in tokens:
            if tok.startswith("res[") and tok.endswith("]"):
                skip = len(layers) - 1
                run(_split(tok[4:-1]))
                if len(layers) - 1 == skip:
                    raise _bad(tok, spec, "an empty residual branch")
                add(Add(), tok, (skip, len(layers) - 1))
                continue
            m = _AT_RE.fullmatch(tok)
            ins = None
            if m is not None:
                tok, ins = m[1], [-1 if j == "in" else int(j) for j in m[2].split(",")]
                bad = [j for j in ins if not -1 <= j < len(layers)]
                if bad:
                    raise _bad(tok, spec, f"input {bad[0]} is not an earlier layer (0..{len(layers) - 1}) or in")
            rule = token_rule(tok)
            if rule is None:
                raise _bad(tok, spec)
            shape = [shapes[j] for j in ins] if ins is not None and len(ins) > 1 else \
                shapes[ins[0] if ins is not None else len(layers) - 1]
            try:
                if rule.flat_input and not isinstance(shape, list) and len(shape) != 1:
                    add(Flatten(), "flatten", ins)
                    shape, ins = shapes[len(layers) - 1], None
                layer = rule.build(tok, shape, dtype)
            except FxpsimError as err:
                msg = str(err)
                if msg.startswith("token "):
                    raise
                raise _bad(tok, spec, msg) from None
            if layer is None:
                raise _bad(tok, spec)
            add(layer, tok, ins)

    run(_split(spec))
    return layers


def layer_token(layer: Layer) -> str:
    """The spec token of one layer (a layer with a ``token()`` method, e.g. a binary one, gives its own)."""
    if hasattr(layer, "token"):  # binary layers: bfc/bconv with their method
        return layer.token()
    if isinstance(layer, Conv2D):
        tok = f"conv{layer.c_out}x{layer.k}"
        tok += f"s{layer.stride}" if layer.stride != 1 else ""
        tok += f"p{layer.padding}" if layer.padding else ""
        return tok + (f"g{layer.groups}" if getattr(layer, "groups", 1) != 1 else "")
    if isinstance(layer, Dense):
        return f"fc{layer.n_out}"
    if isinstance(layer, (MaxPool2D, AvgPool2D)):
        name = "maxpool" if isinstance(layer, MaxPool2D) else "avgpool"
        return f"{name}{layer.size}" + (f"s{layer.stride}" if layer.stride != layer.size else "")
    if isinstance(layer, BatchNorm):
        return "bn"
    if isinstance(layer, Dropout):
        return f"dropout{layer.p * 100:g}"
    if isinstance(layer, Clip):
        return "relu6" if (layer.lo, layer.hi) == (0.0, 6.0) else \
            f"clip{layer.lo:g}:{layer.hi:g}".replace("-", "n")
    if isinstance(layer, GlobalAvgPool):
        return "gap"
    return layer.kind  # flatten, relu, tanh, sigmoid, identity, add, concat


def format_spec(layers, inputs=None) -> str:
    """The spec string of a layer stack (``inputs``: a DAG's per-layer input indices, as
    :attr:`Network.inputs`); :func:`parse_spec` of it rebuilds the same layers."""
    layers = list(layers)
    inputs = [tuple(ins) for ins in inputs] if inputs is not None else [(i - 1,) for i in range(len(layers))]
    tokens: list[tuple[int, str]] = []  # (index of the block's last layer, token)
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        ins = inputs[i]
        if isinstance(layer, Flatten) and isinstance(nxt, Dense) and inputs[i + 1] == (i,):
            continue  # re-inserted automatically before the fc
        if isinstance(layer, Add) and len(ins) == 2 and ins[1] == i - 1 and ins[0] < i - 1:
            body = [t for t in tokens if t[0] > ins[0]]
            starts = {j for j in range(ins[0] + 1, i) if inputs[j] != (j - 1,)}
            if body and not starts and (ins[0] < 0 or any(t[0] == ins[0] for t in tokens) or not tokens):
                del tokens[len(tokens) - len(body):]
                tokens.append((i, f"res[{'-'.join(t for _, t in body)}]"))
                continue
        tok = layer_token(layer)
        if ins != (i - 1,):
            tok += "@" + ",".join("in" if j < 0 else str(j) for j in ins)
        tokens.append((i, tok))
    return "-".join(t for _, t in tokens)
