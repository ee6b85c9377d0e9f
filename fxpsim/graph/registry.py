"""The kind registry: layer kind -> class (model files) and spec token rules (spec strings).

Layer modules register into it when they are imported; the registry itself
imports no layer module, so a module that adds kinds (the binary training
layers of :mod:`fxpsim.binary.train_layers`) depends on the graph and the
graph never on it. ``import fxpsim`` imports every module that registers
kinds, so a model file or spec naming any of them resolves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import FxpsimError

LAYER_KINDS: dict[str, type] = {}
"""kind (``layer.kind``, as stored in a model file) -> layer class, in registration order."""

_TOKEN_RULES: list["TokenRule"] = []


@dataclass(frozen=True)
class TokenRule:
    """How the spec tokens that start with one of ``prefixes`` become a layer.

    ``build(tok, shape, dtype)`` returns the layer for ``tok`` on input
    ``shape`` (no batch axis), None if ``tok`` is not of this rule's form, or
    raises :class:`FxpsimError` naming what is wrong. ``flat_input``: the
    layer takes flat input, so the parser inserts a Flatten before it when
    the input is not flat.
    """

    prefixes: tuple[str, ...]
    build: Callable
    flat_input: bool = False


def register_layer(cls: type) -> type:
    """Make ``cls.kind`` known to model files (:func:`layer_class`); usable as a class decorator."""
    kind = cls.kind
    known = LAYER_KINDS.get(kind)
    if known is not None and known is not cls:
        raise FxpsimError(f"layer kind {kind!r} of {cls.__qualname__} is already registered by "
                          f"{known.__module__}.{known.__qualname__}: give the new layer another kind")
    LAYER_KINDS[kind] = cls
    return cls


def register_tokens(rule: TokenRule) -> TokenRule:
    """Add a spec token rule; its prefixes may not overlap (one be a prefix of another) a known rule's."""
    for other in _TOKEN_RULES:
        if other == rule:
            return rule
        for a in rule.prefixes:
            for b in other.prefixes:
                if a.startswith(b) or b.startswith(a):
                    raise FxpsimError(f"spec token prefix {a!r} overlaps the registered prefix {b!r}: "
                                      "choose a prefix that is not the start of another and starts with none")
    _TOKEN_RULES.append(rule)
    return rule


def token_rule(tok: str) -> TokenRule | None:
    """The rule whose prefix ``tok`` starts with (prefixes do not overlap), or None."""
    for rule in _TOKEN_RULES:
        if tok.startswith(rule.prefixes):
            return rule
    return None


def layer_class(kind) -> type:
    """The class registered for ``kind`` or a one-line error listing the known kinds."""
    if not isinstance(kind, str) or kind not in LAYER_KINDS:
        raise FxpsimError(f"unknown layer kind {kind!r}: expected one of {', '.join(LAYER_KINDS)}")
    return LAYER_KINDS[kind]
