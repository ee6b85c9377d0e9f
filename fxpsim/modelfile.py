"""Model files: weights + architecture + preprocessing + training metadata.

One versioned ``.npz`` (a zip of ``.npy`` arrays) that loads with
``np.load(..., allow_pickle=False)``:

=====================  ===========================================================
entry                  content
=====================  ===========================================================
``__fxpsim__``         uint8 bytes of a UTF-8 JSON object: ``format``
                       (``"fxpsim-model"``), ``version``, ``architecture``
                       (:meth:`Network.to_config`), ``preprocess`` (mode),
                       ``metadata`` (dataset, seed, epochs, optimizer, lr,
                       test_accuracy, train_seconds, ...)
``state/<key>``        each array of :meth:`Network.state_dict` (``state/3.W``)
``preprocess/<name>``  the preprocessing arrays (``mean``, ``std``)
``bnset/<key>/<k>``    optional: FlexNet's BatchNorm sets, one per trained width
                       (``bnset/w4a4/1.gamma``: every BatchNorm layer's ``gamma``,
                       ``beta``, ``running_mean``, ``running_var`` for W-bit weights
                       and A-bit activations; :func:`select_bn_set`)
=====================  ===========================================================

Written durably and atomically (:mod:`fxpsim.durable`): a temporary file in
the target directory, fsynced, renamed over the target with ``os.replace``,
the directory fsynced; on any error the temporary file is removed and an
existing target is left untouched.

Read with every check before the allocation it guards (:func:`load_model`):
the zip magic (a pickle, a bare ``.npy`` or a text file is one line); the
archive's directory and each member's ``.npy`` header (:mod:`fxpsim.npzfile`:
no encryption, stored/deflate only, no member inflated before its header is
judged); member names; the JSON header, at most :data:`MAX_HEADER_BYTES`,
parsed with limits on depth (:data:`MAX_JSON_DEPTH`) and numbers (integers of
at most :data:`MAX_INT_DIGITS` digits, no NaN, Infinity or float overflow);
every architecture, preprocessing and metadata field typed and in range; the
memory the architecture needs against a budget (:func:`model_budget`:
:data:`DEFAULT_MAX_MODEL_BYTES`, or ``$FXPSIM_MAX_MODEL_BYTES``, or
``load_model(..., max_bytes=N)``); each member's dtype (float16/32/64 for
weights and statistics, never cast from bool, int, complex or dates) and
shape against what the architecture needs, and its declared uncompressed
size against that shape; only then the data, CRC-checked, finite.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .binary.modelpack import PACKED_NAME, pack_state, packed_layout, unpack_member
from .binary.train_layers import METHODS
from .config import _short
from .durable import atomic_open
from .errors import FxpsimError
from .graph.network import Network, layer_from_config
from .npzfile import NPY_HEADER_LIMIT, Member, NpzArchive
from .train.data import Preprocess, parse_preprocess

MODEL_FORMAT = "fxpsim-model"
MODEL_VERSION = 1
_META_KEY = "__fxpsim__"

#: the shipped model the CLI uses when none is given
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "digits-cnn.npz"


@dataclass
class Model:
    """A trained network with the preprocessing of its inputs and how it was trained.

    ``bn_sets``: FlexNet's BatchNorm sets (lecture notes, FlexNet: one BatchNorm per bit width), width key
    (:func:`bn_set_key`, ``"w4a4"``) -> BatchNorm state (``"<i>.gamma"`` ... as in ``state_dict``); the
    network holds one of them; :func:`select_bn_set` swaps in the one a config's widths name."""

    network: Network
    preprocess: Preprocess
    metadata: dict = field(default_factory=dict)
    bn_sets: dict = field(default_factory=dict)


_BN_KEYS = ("gamma", "beta", "running_mean", "running_var")
_BN_SET_NAME = re.compile(r"bnset/(w\d{1,2}a\d{1,2})/(\d{1,6})\.(gamma|beta|running_mean|running_var)")
MAX_BN_SETS = 16
"""Most BatchNorm sets (trained widths) a model file may hold."""


def bn_set_key(weight_bits: int, act_bits: int) -> str:
    """The name of the BatchNorm set for ``weight_bits``-bit weights and ``act_bits``-bit activations: ``w4a4``."""
    return f"w{int(weight_bits)}a{int(act_bits)}"


def bn_state_keys(network: Network) -> list[str]:
    """The ``state_dict`` keys of ``network``'s BatchNorm layers (``"1.gamma"``, ...), in network order."""
    return [f"{i}.{k}" for i, layer in enumerate(network.layers) if layer.kind == "batchnorm" for k in _BN_KEYS]


def config_widths(config) -> tuple[set[int], set[int]]:
    """``(weight widths, activation widths)`` of a :class:`~fxpsim.config.NetworkConfig`: every layer's
    ``fmt_w`` width and every ``fmt_x`` / ``fmt_y`` width."""
    return ({c.fmt_w.width for c in config}, {f.width for c in config for f in (c.fmt_x, c.fmt_y)})


def select_bn_set(model: Model, config) -> Model:
    """``model`` with the BatchNorm set of ``config``'s widths (a copy; ``model`` itself when it holds no
    BatchNorm sets): the config must be uniform, W-bit weights and A-bit activations in every layer, and
    ``w<W>a<A>`` one of the file's sets (a one-line error names the widths it has)."""
    if not model.bn_sets:
        return model
    w, a = config_widths(config)
    have = ", ".join(sorted(model.bn_sets, key=lambda k: [-int(t) for t in re.findall(r"\d+", k)]))
    if len(w) != 1 or len(a) != 1:
        raise FxpsimError(f"the config has weight widths {sorted(w)} and activation widths {sorted(a)} bits: this "
                          f"FlexNet model holds one BatchNorm set per uniform width ({have}); give a config with "
                          "one weight and one activation width in every layer")
    key = bn_set_key(next(iter(w)), next(iter(a)))
    if key not in model.bn_sets:
        raise FxpsimError(f"the config's widths {key} (weights {next(iter(w))}, activations {next(iter(a))} bits) "
                          f"match no BatchNorm set of this FlexNet model: it holds {have}; give a config of one "
                          "of those widths")
    network = Network.from_config(model.network.to_config())
    state = dict(model.network.state_dict())
    state.update(model.bn_sets[key])
    network.load_state_dict(state)
    return Model(network, model.preprocess, model.metadata, model.bn_sets)


def _check_bn_sets(model: Model) -> dict[str, np.ndarray]:
    """The ``bnset/...`` members of ``model.bn_sets``, each set exactly the network's BatchNorm state."""
    sets = model.bn_sets or {}
    if not sets:
        return {}
    keys = bn_state_keys(model.network)
    if not keys:
        raise FxpsimError("the model has BatchNorm sets but its network has no BatchNorm layer: drop bn_sets")
    if len(sets) > MAX_BN_SETS:
        raise FxpsimError(f"the model has {len(sets)} BatchNorm sets, more than {MAX_BN_SETS}: keep fewer widths")
    state = model.network.state_dict()
    out = {}
    for name, bn in sets.items():
        if not (isinstance(name, str) and re.fullmatch(r"w\d{1,2}a\d{1,2}", name)):
            raise FxpsimError(f"BatchNorm set name {_short(name)} is not w<W>a<A> (bn_set_key(4, 4) = 'w4a4')")
        if sorted(bn) != sorted(keys):
            raise FxpsimError(f"BatchNorm set {name} has the keys {sorted(bn)}: the network's BatchNorm state is "
                              f"{keys}")
        for k in keys:
            arr = np.asarray(bn[k])
            if arr.shape != state[k].shape or arr.dtype.kind != "f":
                raise FxpsimError(f"BatchNorm set {name} entry {k} is {arr.dtype} {arr.shape}: the network's is "
                                  f"{state[k].dtype} {state[k].shape}")
            out[f"bnset/{name}/{k}"] = arr
    return out


def save_model(path: str | os.PathLike, model: Model) -> Path:
    """Write ``model`` to ``path`` durably and atomically (:func:`fxpsim.durable.atomic_open`); returns the path."""
    path = Path(path)
    header = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "architecture": model.network.to_config(),
        "preprocess": model.preprocess.to_config(),
        "metadata": model.metadata,
    }
    try:
        text = json.dumps(header, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise FxpsimError(f"model metadata is not JSON-able ({exc}): use str/int/float/list/dict values") from None
    arrays = {_META_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    state, packed = pack_state(model.network)  # binary weights bit-packed (fxpsim.binary.modelpack)
    arrays.update({f"state/{k}": v for k, v in state.items()})
    arrays.update({f"packed/{k}": v for k, v in packed.items()})
    arrays.update({f"preprocess/{k}": v for k, v in model.preprocess.arrays().items()})
    arrays.update(_check_bn_sets(model))
    for key, value in arrays.items():
        if value.dtype == object:
            raise FxpsimError(f"model entry {key!r} is an object array: only numeric arrays are saved")
    with atomic_open(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before training) if a model cannot be written to ``path``.

    Creates and removes a temporary file beside it; raises ``OSError`` or
    :class:`FxpsimError` with the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise FxpsimError(f"output path {path} is a directory: give a file name such as {path / 'model.npz'}")
    if not path.parent.is_dir():
        raise FxpsimError(f"output directory {path.parent} does not exist: create it or choose another --out")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)
    return path


class _NamesTheFile(FxpsimError):
    """A refusal whose message already names the file (not wrapped by :func:`_bad`)."""


def _bad(path, why: str) -> FxpsimError:
    return FxpsimError(f"{path} is not a readable fxpsim model file: {why}")


# --------------------------------------------------------------------------- limits

MAX_HEADER_BYTES = 1 << 20
"""Largest JSON header (the ``__fxpsim__`` entry) read: the shipped ones are 3-7 KiB."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of the JSON header (the shipped ones nest 4 deep: metadata.history[i].loss)."""
MAX_INT_DIGITS = 24
"""Longest JSON integer read (seeds are below 2**64: 20 digits); longer ones are refused unparsed."""
MAX_LAYERS = 1024
"""Most layers in an architecture."""
MAX_DIM = 2**31 - 1
"""Largest size field (channels, features, kernel, stride, padding, input dimension)."""
MAX_MEMBERS = 3 + 4 * MAX_LAYERS
"""Most members of a model archive: the header, mean, std and at most four arrays a layer (FlexNet's
BatchNorm sets, four arrays a BatchNorm layer each, count within it)."""
DEFAULT_MAX_MODEL_BYTES = 2 << 30
"""Memory budget of one model (parameters, their gradients and buffers as float32): 2 GiB."""
MAX_MODEL_BYTES_ENV = "FXPSIM_MAX_MODEL_BYTES"
"""Environment variable overriding :data:`DEFAULT_MAX_MODEL_BYTES` (a whole number of bytes)."""

_FLOAT_ITEMSIZES = (2, 4, 8)  # float16/32/64
_F32_MAX = float(np.finfo(np.float32).max)
_STATE_NAME = re.compile(r"state/\d{1,6}\.[A-Za-z_]\w{0,31}")
_PREPROCESS_NAMES = ("preprocess/mean", "preprocess/std")
_HEADER_KEYS = ("format", "version", "architecture", "preprocess", "metadata")


def _bytes_text(n: int) -> str:
    """``n`` bytes in binary units (``3.6 TiB``)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def model_budget(max_bytes: int | None = None) -> int:
    """The memory budget of :func:`load_model`: ``max_bytes``, else ``$FXPSIM_MAX_MODEL_BYTES``, else 2 GiB."""
    if max_bytes is None:
        text = os.environ.get(MAX_MODEL_BYTES_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_MODEL_BYTES
        if not (text.isdigit() and len(text) <= 20 and int(text) >= 1):
            raise FxpsimError(f"{MAX_MODEL_BYTES_ENV}={_short(text)} is not a whole number of bytes >= 1: unset "
                              f"it (default {_bytes_text(DEFAULT_MAX_MODEL_BYTES)}) or give e.g. "
                              f"{4 << 30} for 4 GiB")
        return int(text)
    if not (isinstance(max_bytes, int) and not isinstance(max_bytes, bool) and max_bytes >= 1):
        raise FxpsimError(f"max_bytes={_short(max_bytes)} is not a whole number of bytes >= 1: give e.g. "
                          f"{4 << 30} for 4 GiB, or None for ${MAX_MODEL_BYTES_ENV} or the 2 GiB default")
    return max_bytes


# --------------------------------------------------------------------------- the JSON header

def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise FxpsimError(f"holds a {len(text.lstrip('-'))}-digit integer, longer than any field takes "
                          f"({MAX_INT_DIGITS} digits): a damaged or forged header")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FxpsimError(f"holds the number {text[:30]}, beyond the float range (it would read as {value}): a "
                          "damaged or forged header")
    return value


def _json_constant(name: str):
    raise FxpsimError(f"holds {name}, which no field takes (NaN and Infinity are not JSON numbers): a damaged or "
                      "forged header")


def _json_depth(value) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 1), counted level by level (no recursion)."""
    depth, level = 0, [value]
    while level and depth <= MAX_JSON_DEPTH:
        depth += 1
        level = [v for x in level if isinstance(x, (dict, list)) for v in (x.values() if isinstance(x, dict) else x)]
    return depth


_TOO_DEEP = (f"its {_META_KEY!r} header nests JSON deeper than {MAX_JSON_DEPTH} levels (a model's nests 4): a "
             "damaged or forged header")


def _parse_header(raw: bytes) -> dict:
    """The header's JSON object, parsed with the limits of the module docstring."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FxpsimError(f"its {_META_KEY!r} entry is not UTF-8 text (byte {exc.start}): a damaged header") from None
    try:
        header = json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise FxpsimError(f"its {_META_KEY!r} header is not valid JSON ({exc.msg} at line {exc.lineno} column "
                          f"{exc.colno}): a damaged header") from None
    except RecursionError:
        raise FxpsimError(_TOO_DEEP) from None
    except FxpsimError as exc:
        raise FxpsimError(f"its {_META_KEY!r} header {exc}") from None
    if _json_depth(header) > MAX_JSON_DEPTH:
        raise FxpsimError(_TOO_DEEP)
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise FxpsimError(f"its metadata does not say format {MODEL_FORMAT!r}")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FxpsimError(f"bad format version {_short(version)}")
    if version > MODEL_VERSION:
        raise _NamesTheFile(f"model format version {version}, newer than this fxpsim reads "
                            f"({MODEL_VERSION}): upgrade fxpsim")
    unknown = sorted(set(header) - set(_HEADER_KEYS))
    if unknown:
        raise FxpsimError(f"its header has the unknown key {_short(unknown[0])} (keys: {', '.join(_HEADER_KEYS)})")
    for key in ("architecture", "preprocess"):
        if not isinstance(header.get(key), dict):
            raise FxpsimError(f"its header's {key!r} is {_short(header.get(key))}, not a JSON object")
    if not isinstance(header.get("metadata", {}), dict):
        raise FxpsimError("its training metadata is not a JSON object")
    prep = header["preprocess"]
    if set(prep) != {"mode"} or not isinstance(prep["mode"], str):
        raise FxpsimError(f"its preprocess entry {_short(prep)} is not {{\"mode\": <name>}}")
    parse_preprocess(prep["mode"])
    return header


# --------------------------------------------------------------------------- the architecture

def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_SIZE = (f"a whole number in [1, {MAX_DIM}]", lambda v: _whole(v) and 1 <= v <= MAX_DIM)
_PADDING = (f"a whole number in [0, {MAX_DIM}]", lambda v: _whole(v) and 0 <= v <= MAX_DIM)
_STRIDE_OR_NONE = (f"null or a whole number in [1, {MAX_DIM}]", lambda v: v is None or _SIZE[1](v))
_FRACTION = ("a number in [0, 1)", lambda v: _real(v) and 0 <= v < 1)
_POSITIVE = ("a number > 0", lambda v: _real(v) and v > 0)
_METHOD = (f"one of {', '.join(METHODS)}", lambda v: isinstance(v, str) and v in METHODS)
_REQUIRED = object()
_NO_BIAS_METHODS = ("bnn", "xnor")
"""Binary methods without a bias (BNN, XNOR-Net: BatchNorm follows every binary layer)."""

_DENSE = {"n_in": (_SIZE, _REQUIRED), "n_out": (_SIZE, _REQUIRED)}
_CONV = {"c_in": (_SIZE, _REQUIRED), "c_out": (_SIZE, _REQUIRED), "k": (_SIZE, _REQUIRED),
         "stride": (_SIZE, 1), "padding": (_PADDING, 0)}
MAX_INPUTS = 64
"""Most inputs one merge layer (Add, Concat) may name in a model file."""
_N_INPUTS = (f"a whole number in [2, {MAX_INPUTS}]", lambda v: _whole(v) and 2 <= v <= MAX_INPUTS)
_BOUND = ("a finite number", lambda v: _real(v) and math.isfinite(v))
_POOL = {"size": (_SIZE, _REQUIRED), "stride": (_STRIDE_OR_NONE, None)}
LAYER_FIELDS: dict[str, dict] = {
    "dense": _DENSE,
    "conv2d": {**_CONV, "groups": (_SIZE, 1)},
    "bdense": {**_DENSE, "method": (_METHOD, "bc")},
    "bconv2d": {**_CONV, "method": (_METHOD, "bc")},
    "batchnorm": {"num_features": (_SIZE, _REQUIRED), "eps": (_POSITIVE, 1e-5), "momentum": (_FRACTION, 0.9)},
    "dropout": {"p": (_FRACTION, _REQUIRED)},
    "maxpool2d": _POOL,
    "avgpool2d": _POOL,
    "flatten": {}, "relu": {}, "tanh": {}, "sigmoid": {}, "sign": {},
    "globalavgpool": {}, "identity": {}, "clip": {"lo": (_BOUND, 0.0), "hi": (_BOUND, 6.0)},
    "add": {"n_inputs": (_N_INPUTS, 2)}, "concat": {"n_inputs": (_N_INPUTS, 2)},
}
"""Each layer kind's config fields in a model file: name -> ((rule, predicate), default or _REQUIRED).
Every kind also takes ``inputs`` (:func:`_check_inputs`)."""


def _check_inputs(i: int, kind: str, cfg: dict) -> None:
    """A layer's optional ``inputs``: as many earlier layers' indices (or -1, the network input) as it
    takes, so the graph is acyclic (topological order) and bounded."""
    if "inputs" not in cfg:
        return
    ins, want = cfg["inputs"], cfg.get("n_inputs", 2) if kind in ("add", "concat") else 1
    ok = isinstance(ins, list) and len(ins) == want and all(_whole(j) and -1 <= j < i for j in ins)
    if not ok:
        raise FxpsimError(f"layer {i} ({kind}): inputs={_short(ins)} is not a list of {want} whole number(s) in "
                          f"[-1, {i - 1}] (earlier layers; -1 the network input)")


def layer_state_shapes(cfg: dict) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(params, buffers) name -> shape of the layer a checked config builds, without building it.

    The shapes of :class:`Dense` (``W (n_in, n_out)``, ``b (n_out,)``),
    :class:`Conv2D` (``W (c_out, c_in, k, k)``, ``b (c_out,)``), their binary
    twins (no ``b`` for bnn/xnor; TTQ's scales ``wp``, ``wn`` of shape (1,))
    and :class:`BatchNorm` (``gamma``, ``beta``; buffers ``running_mean``,
    ``running_var``, all ``(num_features,)``).
    """
    kind = cfg["kind"]
    params: dict[str, tuple[int, ...]] = {}
    buffers: dict[str, tuple[int, ...]] = {}
    if kind in ("dense", "bdense"):
        params = {"W": (cfg["n_in"], cfg["n_out"]), "b": (cfg["n_out"],)}
    elif kind in ("conv2d", "bconv2d"):
        c_in = cfg["c_in"] // cfg.get("groups", 1)  # grouped conv: each filter reads c_in / groups channels
        params = {"W": (cfg["c_out"], c_in, cfg["k"], cfg["k"]), "b": (cfg["c_out"],)}
    elif kind == "batchnorm":
        n = (cfg["num_features"],)
        params, buffers = {"gamma": n, "beta": n}, {"running_mean": n, "running_var": n}
    if kind in ("bdense", "bconv2d"):
        method = cfg.get("method", "bc")
        if method in _NO_BIAS_METHODS:
            del params["b"]
        if method == "ttq":
            params.update(wp=(1,), wn=(1,))
    return params, buffers


def check_architecture(arch: dict, budget: int) -> dict[str, tuple[int, ...]]:
    """``state key -> shape`` of the network ``arch`` (:meth:`Network.to_config`) builds, every field checked
    and its parameters, gradients and buffers (float32) within ``budget`` bytes, before anything is built."""
    unknown = sorted(set(arch) - {"input_shape", "seed", "layers"})
    if unknown:
        raise FxpsimError(f"its architecture has the unknown key {_short(unknown[0])} (keys: input_shape, seed, "
                          "layers)")
    shape = arch.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_SIZE[1](d) for d in shape)):
        raise FxpsimError(f"its architecture's input_shape={_short(shape)} is not [C, H, W] of whole numbers "
                          f"in [1, {MAX_DIM}]")
    if 4 * math.prod(shape) > budget:
        raise FxpsimError(f"its architecture's input_shape={shape} needs {_bytes_text(4 * math.prod(shape))} per "
                          f"image, more than the {_bytes_text(budget)} model budget")
    seed = arch.get("seed", 0)
    if not (seed is None or (_whole(seed) and 0 <= seed < 2**63)):
        raise FxpsimError(f"its architecture's seed={_short(seed)} is not null or a whole number in [0, 2**63)")
    layers = arch.get("layers")
    if not (isinstance(layers, list) and 1 <= len(layers) <= MAX_LAYERS):
        raise FxpsimError(f"its architecture's layers={_short(layers)} is not a list of 1 to {MAX_LAYERS} layers")
    state: dict[str, tuple[int, ...]] = {}
    need, biggest = 0, (0, "")
    for i, cfg in enumerate(layers):
        kind = cfg.get("kind") if isinstance(cfg, dict) else None
        if kind not in LAYER_FIELDS:
            raise FxpsimError(f"layer {i} is {_short(cfg)}: expected a JSON object whose kind is one of "
                              f"{', '.join(LAYER_FIELDS)}")
        fields = LAYER_FIELDS[kind]
        extra = sorted(set(cfg) - set(fields) - {"kind", "inputs"})
        if extra:
            raise FxpsimError(f"layer {i} ({kind}) has the unknown field {_short(extra[0])} (its fields: "
                              f"{', '.join(fields) or 'none'})")
        for name, ((rule, ok), default) in fields.items():
            if name not in cfg:
                if default is _REQUIRED:
                    raise FxpsimError(f"layer {i} ({kind}) has no {name!r} field ({rule})")
            elif not ok(cfg[name]):
                raise FxpsimError(f"layer {i} ({kind}): {name}={_short(cfg[name])} is not {rule}")
        _check_inputs(i, kind, cfg)
        if kind == "conv2d" and (cfg["c_in"] % cfg.get("groups", 1) or cfg["c_out"] % cfg.get("groups", 1)):
            raise FxpsimError(f"layer {i} (conv2d): groups={cfg['groups']} does not divide c_in={cfg['c_in']} and "
                              f"c_out={cfg['c_out']}")
        if kind == "clip" and not cfg.get("lo", 0.0) < cfg.get("hi", 6.0):
            raise FxpsimError(f"layer {i} (clip): lo={_short(cfg.get('lo'))} is not below hi={_short(cfg.get('hi'))}")
        params, buffers = layer_state_shapes(cfg)
        size = 4 * sum(2 * math.prod(s) for s in params.values()) + 4 * sum(math.prod(s) for s in buffers.values())
        need += size
        biggest = max(biggest, (size, f"layer {i} {kind} {' '.join(f'{k}{v}' for k, v in params.items())}"))
        state.update({f"{i}.{k}": s for k, s in (*params.items(), *buffers.items())})
    if need > budget:
        raise FxpsimError(f"its architecture needs {_bytes_text(need)} for parameters, gradients and buffers "
                          f"(the largest: {biggest[1]}, {_bytes_text(biggest[0])}), more than the "
                          f"{_bytes_text(budget)} model budget: if the model is genuine, raise the budget with "
                          f"${MAX_MODEL_BYTES_ENV} or load_model(..., max_bytes=N)")
    return state


def _build_network(arch: dict, budget: int) -> Network:
    """The network of a checked architecture (parameters zero), each layer's output for one image
    (float32) within the budget before the next layer sees it (so no size overflows a product)."""
    layers = []
    for cfg in arch["layers"]:
        layers.append(layer_from_config({k: v for k, v in cfg.items() if k != "inputs"}))
        layers[-1].inputs = tuple(cfg["inputs"]) if "inputs" in cfg else None
    shapes = {-1: tuple(arch["input_shape"])}
    for i, layer in enumerate(layers):
        got = [shapes[j] for j in (layer.inputs or (i - 1,))]
        try:
            shape = shapes[i] = tuple(int(d) for d in layer.output_shape(got if layer.merge else got[0]))
        except FxpsimError as exc:
            raise FxpsimError(f"layer {i} ({layer.kind}) does not fit its input: {exc}") from None
        need = 4 * math.prod(shape)
        if need > budget:
            raise FxpsimError(f"layer {i} ({layer.kind}) outputs shape {shape}, {_bytes_text(need)} per image, "
                              f"more than the {_bytes_text(budget)} model budget: if the model is genuine, raise "
                              f"it with ${MAX_MODEL_BYTES_ENV} or load_model(..., max_bytes=N)")
    return Network(layers, tuple(arch["input_shape"]), arch.get("seed", 0))


# --------------------------------------------------------------------------- members and arrays

def _check_float_member(name: str, member: Member) -> None:
    """Weights, buffers and statistics are float16/32/64 arrays: a bool, int, complex, date or string
    array would be cast silently (bool weights gave 61.8 % accuracy with exit 0)."""
    dtype = member.dtype
    if dtype.kind != "f" or dtype.itemsize not in _FLOAT_ITEMSIZES:
        raise FxpsimError(f"entry {name!r} has dtype {dtype}, not float16/32/64: weights and statistics are "
                          "float arrays, never cast (re-save the model with save_model)")


def _check_finite(name: str, arr: np.ndarray) -> None:
    """One NaN weight makes every accuracy a guess; a float64 beyond float32 range becomes inf."""
    ok = np.isfinite(arr) if arr.dtype.itemsize <= 4 else np.abs(arr) <= _F32_MAX  # NaN compares False
    bad = arr.size - int(np.count_nonzero(ok))
    if bad:
        raise FxpsimError(f"entry {name!r} holds {bad} NaN/inf value(s) (or beyond float32 range): retrain or "
                          "repair the model (a non-finite weight makes every result meaningless)")


def _preprocess_shapes(input_shape) -> dict[str, tuple[tuple[int, ...], ...]]:
    c = input_shape[0]
    return {"preprocess/mean": (tuple(input_shape), (c, 1, 1)), "preprocess/std": ((c, 1, 1),)}


def _read_model(npz: NpzArchive, budget: int) -> Model:
    names = set(npz.entries)
    if _META_KEY not in names:
        raise FxpsimError(f"an .npz archive without the {_META_KEY!r} entry (a foreign archive)")
    junk = sorted(n for n in names - {_META_KEY, *_PREPROCESS_NAMES}
                  if not (_STATE_NAME.fullmatch(n) or PACKED_NAME.fullmatch(n) or _BN_SET_NAME.fullmatch(n)))
    if junk:
        raise FxpsimError(f"it holds the unknown entry {_short(junk[0])}: a model holds {_META_KEY}, "
                          "state/<layer>.<name>, preprocess/mean|std and bnset/w<W>a<A>/<layer>.<name> only")
    declared = npz.declared_bytes()
    if declared > budget + MAX_HEADER_BYTES + len(names) * NPY_HEADER_LIMIT:
        raise FxpsimError(f"its members declare {_bytes_text(declared)} uncompressed, more than the "
                          f"{_bytes_text(budget)} model budget (nothing was inflated): if the model is genuine, "
                          f"raise it with ${MAX_MODEL_BYTES_ENV} or load_model(..., max_bytes=N)")
    meta = npz.member(_META_KEY)
    if meta.dtype != np.uint8 or len(meta.shape) != 1:
        raise FxpsimError(f"its {_META_KEY!r} entry has dtype {meta.dtype} and shape {meta.shape}, not the uint8 "
                          "bytes of a JSON text")
    if meta.nbytes > MAX_HEADER_BYTES:
        raise FxpsimError(f"its {_META_KEY!r} entry is {_bytes_text(meta.nbytes)}, more than the "
                          f"{_bytes_text(MAX_HEADER_BYTES)} a header may have (the shipped ones are 3-7 KiB)")
    header = _parse_header(npz.read(meta).tobytes())
    metadata = header.get("metadata", {})
    _check_metadata(metadata)
    arch = header["architecture"]
    state_shapes = check_architecture(arch, budget)
    wanted = {f"state/{k}": (s,) for k, s in state_shapes.items()}
    packed = packed_layout(arch["layers"], state_shapes, names)  # bit-packed weights stand for state/<i>.W
    for name in packed:
        wanted.pop("state/" + name[len("packed/"):], None)
    wanted.update(_preprocess_shapes(arch["input_shape"]))
    bn_sets = _bn_set_layout(arch["layers"], state_shapes, names)
    for key, shapes in bn_sets.items():
        wanted.update({f"bnset/{key}/{k}": (s,) for k, s in shapes.items()})
    expected = set(wanted) | set(packed)
    missing, extra = sorted(expected - names), sorted(names - expected - {_META_KEY})
    if missing or extra:
        raise FxpsimError(f"state does not match the network: missing {missing or 'none'}, unexpected "
                          f"{extra or 'none'}")
    members = {}
    for name, shapes in wanted.items():
        member = npz.member(name)
        _check_float_member(name, member)
        if member.shape not in shapes:
            raise FxpsimError(f"entry {name!r} has shape {member.shape}: the architecture needs "
                              f"{' or '.join(map(str, shapes))}")
        members[name] = member
    network = _build_network(arch, budget)  # the layers fit each other before any data is inflated
    arrays = {}
    for name, member in members.items():
        arrays[name] = npz.read(member)
        _check_finite(name, arrays[name])
    for name, (shape, kind, method) in packed.items():
        member = npz.member(name)
        if member.dtype.kind != kind or (kind == "u" and member.dtype.itemsize != 8) or member.shape != shape:
            raise FxpsimError(f"entry {name!r} has dtype {member.dtype} and shape {member.shape}: the architecture "
                              f"needs {'uint64' if kind == 'u' else 'float'} {shape} (a forged or damaged archive)")
        arrays[name] = npz.read(member)
        if kind == "f":
            _check_finite(name, arrays[name])
    for name, (_, kind, method) in packed.items():
        if kind == "u":
            key = name[len("packed/"):]
            arrays["state/" + key] = unpack_member(name, arrays[name], arrays.get(name + ".scale"), method,
                                                   state_shapes[key])
    network.load_state_dict({k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")})
    preprocess = Preprocess.from_arrays(header["preprocess"], {k[len("preprocess/"):]: arrays[k]
                                                               for k in _PREPROCESS_NAMES})
    sets = {key: {k: arrays[f"bnset/{key}/{k}"].astype(network.state_dict()[k].dtype) for k in shapes}
            for key, shapes in bn_sets.items()}
    return Model(network, preprocess, metadata, sets)


def _bn_set_layout(layers: list, state_shapes: dict, names) -> dict[str, dict[str, tuple[int, ...]]]:
    """The BatchNorm sets an archive holds (a member ``bnset/<key>/...`` present): ``{key: {state key:
    shape}}``, each set the architecture's whole BatchNorm state (checked with the other members)."""
    keys = sorted({m.group(1) for m in map(_BN_SET_NAME.fullmatch, names) if m})
    if not keys:
        return {}
    bn = {k: s for k, s in state_shapes.items()
          if layers[int(k.split(".")[0])].get("kind") == "batchnorm"}
    if not bn:
        raise FxpsimError(f"it holds the BatchNorm set {keys[0]} but its architecture has no BatchNorm layer")
    if len(keys) > MAX_BN_SETS:
        raise FxpsimError(f"it holds {len(keys)} BatchNorm sets, more than {MAX_BN_SETS} (a forged archive)")
    return {key: bn for key in keys}


def load_model(path: str | os.PathLike, *, max_bytes: int | None = None) -> Model:
    """Read a model written by :func:`save_model`, every check before the allocation it guards (module
    docstring); never unpickles anything. ``max_bytes``: the memory budget (:func:`model_budget`)."""
    path = Path(path)
    budget = model_budget(max_bytes)
    with open(path, "rb") as f:  # a missing file is an OSError, printed as such by the CLI
        magic = f.read(6)
    if magic[:1] == b"\x80":  # pickle protocol >= 2
        raise _bad(path, "it is a Python pickle, which fxpsim never loads (code could run); "
                         "re-export the weights with fxpsim train or save_model")
    if magic.startswith(b"\x93NUMPY"):
        raise _bad(path, "it is a single .npy array, not an .npz model archive")
    if not magic.startswith(b"PK"):
        raise _bad(path, "not a zip/.npz archive (wrong magic bytes); was it written by save_model?")
    try:
        with NpzArchive(path, MAX_MEMBERS) as npz:
            return _read_model(npz, budget)
    except _NamesTheFile as exc:
        raise FxpsimError(f"{path} has {exc}") from None
    except FxpsimError as exc:
        raise _bad(path, str(exc)) from None


def _check_metadata(meta: dict) -> None:
    """The metadata fields the commands read (dataset, seeds, split fractions) have their types
    and ranges; a field that is absent stays absent (a command that needs it says so)."""
    def whole(key, value):
        if not (_whole(value) and 0 <= value < 2**63):
            raise FxpsimError(f"metadata {key}={_short(value)} is not a whole number >= 0")

    def fraction(key, value, low_open=True):
        ok = _real(value) and value < 1 and (value > 0 if low_open else value >= 0)
        if not ok:
            raise FxpsimError(f"metadata {key}={_short(value)} is not a fraction in {'(0' if low_open else '[0'}, 1)")

    if "dataset" in meta and not isinstance(meta["dataset"], str):
        raise FxpsimError(f"metadata dataset={_short(meta['dataset'])} is not a dataset name")
    if "seed" in meta:
        whole("seed", meta["seed"])
    if meta.get("val_fraction") is not None:
        fraction("val_fraction", meta["val_fraction"], low_open=False)
    split = meta.get("split")
    if split is not None:
        if not isinstance(split, dict):
            raise FxpsimError(f"metadata split={_short(split)} is not a JSON object")
        if "test_fraction" in split:
            fraction("split.test_fraction", split["test_fraction"])
        if "split_seed" in split:
            whole("split.split_seed", split["split_seed"])
