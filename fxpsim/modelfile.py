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
=====================  ===========================================================

Written atomically: a temporary file in the target directory, flushed and
renamed over the target with ``os.replace``; on any error the temporary
file is removed and an existing target is left untouched. Reading checks
the zip magic first, so a pickle, a bare ``.npy``, a text file, a foreign or
truncated archive, a failed CRC or a newer version each give one line.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FxpsimError
from .graph.network import Network
from .train.data import Preprocess

MODEL_FORMAT = "fxpsim-model"
MODEL_VERSION = 1
_META_KEY = "__fxpsim__"

#: the shipped model the CLI uses when none is given
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "digits-cnn.npz"


@dataclass
class Model:
    """A trained network with the preprocessing of its inputs and how it was trained."""

    network: Network
    preprocess: Preprocess
    metadata: dict = field(default_factory=dict)


def save_model(path: str | os.PathLike, model: Model) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + ``os.replace``); returns the path."""
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
    arrays.update({f"state/{k}": v for k, v in model.network.state_dict().items()})
    arrays.update({f"preprocess/{k}": v for k, v in model.preprocess.arrays().items()})
    for key, value in arrays.items():
        if value.dtype == object:
            raise FxpsimError(f"model entry {key!r} is an object array: only numeric arrays are saved")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a model file is an ordinary file
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def _bad(path, why: str) -> FxpsimError:
    return FxpsimError(f"{path} is not a readable fxpsim model file: {why}")


def _check_numbers(path, name: str, arr: np.ndarray) -> None:
    """A weight, buffer or preprocessing array must hold finite real numbers: a bool, complex,
    date or string array would be cast silently, and one NaN makes every accuracy a guess."""
    if arr.dtype.kind not in "fiu":
        raise _bad(path, f"entry {name!r} has dtype {arr.dtype}, not real numbers: weights and "
                         "statistics are float arrays (re-save the model with save_model)")
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise _bad(path, f"entry {name!r} holds {bad} NaN/inf value(s): retrain or repair the model "
                         "(a non-finite weight makes every result meaningless)")


def load_model(path: str | os.PathLike) -> Model:
    """Read a model written by :func:`save_model` (never unpickles anything)."""
    path = Path(path)
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
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if _META_KEY not in names:
                raise _bad(path, f"an .npz archive without the {_META_KEY!r} entry (a foreign archive)")
            arrays = {name: npz[name] for name in names}
    except FxpsimError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise _bad(path, "it holds pickled object arrays, which fxpsim never loads") from None
        raise _bad(path, f"corrupt or truncated archive ({exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
        raise _bad(path, f"corrupt or truncated archive ({type(exc).__name__}: {exc})") from None
    try:
        header = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"its metadata entry is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise _bad(path, f"its metadata does not say format {MODEL_FORMAT!r}")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise _bad(path, f"bad format version {version!r}")
    if version > MODEL_VERSION:
        raise FxpsimError(f"{path} has model format version {version}, newer than this fxpsim reads "
                          f"({MODEL_VERSION}): upgrade fxpsim")
    for name, arr in arrays.items():
        _check_numbers(path, name, arr)
    state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    prep = {k[len("preprocess/"):]: v for k, v in arrays.items() if k.startswith("preprocess/")}
    try:
        network = Network.from_config(header["architecture"])
        network.load_state_dict(state)
        preprocess = Preprocess.from_arrays(header["preprocess"], prep)
    except FxpsimError as exc:
        raise _bad(path, str(exc)) from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise _bad(path, f"inconsistent contents ({type(exc).__name__}: {exc})") from None
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _bad(path, "its training metadata is not a JSON object")
    _check_metadata(path, metadata)
    return Model(network, preprocess, metadata)


def _check_metadata(path, meta: dict) -> None:
    """The metadata fields the commands read (dataset, seeds, split fractions) have their types
    and ranges; a field that is absent stays absent (a command that needs it says so)."""
    def whole(key, value):
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63):
            raise _bad(path, f"metadata {key}={value!r} is not a whole number >= 0")

    def fraction(key, value, low_open=True):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value < 1 \
            and (value > 0 if low_open else value >= 0)
        if not ok:
            raise _bad(path, f"metadata {key}={value!r} is not a fraction in {'(0' if low_open else '[0'}, 1)")

    if "dataset" in meta and not isinstance(meta["dataset"], str):
        raise _bad(path, f"metadata dataset={meta['dataset']!r} is not a dataset name")
    if "seed" in meta:
        whole("seed", meta["seed"])
    if meta.get("val_fraction") is not None:
        fraction("val_fraction", meta["val_fraction"], low_open=False)
    split = meta.get("split")
    if split is not None:
        if not isinstance(split, dict):
            raise _bad(path, f"metadata split={split!r} is not a JSON object")
        if "test_fraction" in split:
            fraction("split.test_fraction", split["test_fraction"])
        if "split_seed" in split:
            whole("split.split_seed", split["split_seed"])
