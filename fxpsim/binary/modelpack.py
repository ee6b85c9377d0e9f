"""Bit-packed binary and ternary weights in model files (issue 19, item 5).

A binary layer's latent real weights ``W`` are what training updates; a
trained model needs only what its forward pass uses: the weight codes and,
for the scaled methods, their scale. :func:`pack_state` stores each such
``W`` as the member ``packed/<i>.W``, uint64 words of the codes in C order
(:mod:`fxpsim.binary.packing`: 64 per word, LSB first, pad bits 0): 1 bit
per weight (``+1 -> 1``) for ±1 methods, 2 for ternary (the nonzero mask
words, then the sign words; a sign bit only where the mask is set);
``packed/<i>.W.scale`` (float32) holds BWN/XNOR-Net's per-output scale or
TWN's alpha. Loading rebuilds ``W = codes * scale`` (codes alone for
BC/BNN/TTQ, whose forward reads only the signs/threshold side of ``W``):
BC, BNN and TTQ forward passes are bit-identical to the trained model's;
BWN, XNOR-Net and TWN rescale by the stored float32 scale. BinaryConnect's
stochastic variant (``bcs``) uses the real weights at test time and stays
a float member. The reader (:func:`packed_layout`, :func:`unpack_member`)
checks every member against the architecture: dtype uint64 (scale float),
the declared length exactly what the layer's weight count needs, pad bits
and sign bits outside the mask zero, the scale finite and of the right length.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import FxpsimError, check
from .packing import _unpack_bool, n_words, pack_signs, pack_ternary

__all__ = ["PACKED_NAME", "PACKING", "pack_state", "packed_layout", "unpack_member"]

PACKING = {"bc": "sign", "bnn": "sign", "bwn": "sign", "xnor": "sign", "twn": "ternary", "ttq": "ternary"}
"""How each binary method's weights are stored packed (``bcs`` keeps its float weights)."""
_SCALE = {"bwn": "channel", "xnor": "channel", "twn": "layer"}
PACKED_NAME = re.compile(r"packed/\d{1,6}\.W(\.scale)?")
_BINARY_KINDS = ("bdense", "bconv2d")


def _codes_and_scale(layer) -> tuple[np.ndarray, np.ndarray | None]:
    m = layer.method
    codes = layer.codes()
    if m not in _SCALE:
        return codes, None
    if _SCALE[m] == "layer":
        nz = codes != 0
        mag = np.abs(np.asarray(layer.quantized_weights(), np.float64))
        return codes, np.array([mag[nz].max(initial=0.0)], np.float32)
    q = np.abs(np.asarray(layer.quantized_weights(), np.float64))
    axes = tuple(a for a in range(q.ndim) if a != layer._out_axis())
    return codes, np.asarray(q.max(axis=axes), np.float32)


def pack_state(network) -> tuple[dict, dict]:
    """``network``'s state split into (float members ``{name: array}``, packed members ``{name: array}``)."""
    state = dict(network.state_dict())
    packed = {}
    for i, layer in enumerate(network.layers):
        if layer.kind not in _BINARY_KINDS or layer.method not in PACKING:
            continue
        codes, scale = _codes_and_scale(layer)
        flat = codes.reshape(1, -1)
        if PACKING[layer.method] == "sign":
            words = pack_signs(flat, f"layer {i} weight codes").words[0]
        else:
            sign, mask = pack_ternary(flat, f"layer {i} weight codes")
            words = np.concatenate([mask.words[0], sign.words[0]])
        del state[f"{i}.W"]
        packed[f"{i}.W"] = words
        if scale is not None:
            packed[f"{i}.W.scale"] = scale
    return state, packed


def packed_layout(layers: list, state_shapes: dict, names) -> dict[str, tuple[tuple[int, ...], str, str]]:
    """The packed members an archive holds (member ``packed/<i>.W`` present in ``names``): ``{member:
    (shape, dtype kind, method)}``; one line naming the layer when one cannot be packed."""
    out = {}
    for name in sorted(n for n in names if PACKED_NAME.fullmatch(n) and not n.endswith(".scale")):
        i = int(name[len("packed/"):].split(".")[0])
        cfg = layers[i] if i < len(layers) else None
        method = cfg.get("method") if isinstance(cfg, dict) and cfg.get("kind") in _BINARY_KINDS else None
        if method not in PACKING:
            raise FxpsimError(f"entry {name!r} packs the weights of layer {i}, which is not a binary layer "
                              f"of method {', '.join(PACKING)}: a forged or damaged archive")
        count = int(np.prod(state_shapes[f"{i}.W"]))
        words = n_words(count) * (2 if PACKING[method] == "ternary" else 1)
        out[name] = ((words,), "u", method)
        if method in _SCALE:
            n = state_shapes[f"{i}.W"][0 if cfg["kind"] == "bconv2d" else 1] if _SCALE[method] == "channel" else 1
            out[name + ".scale"] = ((n,), "f", method)
    stray = sorted(n for n in names if PACKED_NAME.fullmatch(n) and n not in out)
    if stray:
        raise FxpsimError(f"entry {stray[0]!r} is the scale of no packed layer: a forged or damaged archive")
    return out


def unpack_member(name: str, words: np.ndarray, scale: np.ndarray | None, method: str,
                  shape: tuple[int, ...]) -> np.ndarray:
    """The float32 ``W`` of ``shape`` from packed ``words`` (and ``scale``), after the canonical-form checks."""
    count = int(np.prod(shape))
    nw = n_words(count)
    w = np.asarray(words, dtype=np.uint64)
    pad = count % 64
    tails = [w[j * nw + nw - 1] for j in range(len(w) // nw)] if pad else []
    check(all(int(t) >> pad == 0 for t in tails),
          f"entry {name!r} sets pad bits beyond its {count} weights: a forged or damaged archive")
    if PACKING[method] == "sign":
        codes = np.where(_unpack_bool(w[None], count)[0], 1, -1).astype(np.float32)
    else:
        mask, sign = _unpack_bool(w[None, :nw], count)[0], _unpack_bool(w[None, nw:], count)[0]
        check(not np.any(sign & ~mask), f"entry {name!r} sets sign bits of zero weights: a forged or damaged archive")
        codes = np.where(mask, np.where(sign, 1, -1), 0).astype(np.float32)
    codes = codes.reshape(shape)
    if scale is None:
        return codes
    s = np.asarray(scale, np.float32)
    check(bool(np.all(np.isfinite(s))) and bool(np.all(s >= 0)),
          f"entry {name}.scale holds a negative, NaN or inf scale: retrain or repair the model")
    if s.size == 1:
        return codes * s[0]
    bshape = [1] * len(shape)
    bshape[0 if len(shape) == 4 else 1] = s.size
    return codes * s.reshape(bshape)
