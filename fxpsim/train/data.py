"""Datasets, seeded splits and preprocessing fitted on the training split.

``digits``: scikit-learn's bundled 8x8 digits (1797 images, values 0..16),
embedded, no download; a stratified test split drawn with ``split_seed``.
``mnist``: the four standard IDX files (gzip or not) from ``data_dir``, the
``FXPSIM_DATA`` environment variable or the download cache, each verified
by its well-known md5 sum; 60,000 training and 10,000 test images.
``digits28``: ``digits`` upsampled as a preprocessing step of the loader
(:func:`upsampled_digits`: bilinear to 20x20, 0..255, centred in 28x28 as
MNIST is), so that an MNIST-trained trunk can be fine-tuned on it.
Images are ``(N, 1, H, W)`` uint8 (NCHW); labels int64.

Preprocessing (lecture notes, "Data Preprocessing"): zero-centre by the mean
image (AlexNet) or the per-channel mean (VGG), optionally divide by the
per-channel standard deviation. It is fitted on the training split only
and stored with the model (:class:`Preprocess`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FxpsimError, check

DATASETS = ("digits", "mnist", "digits28")
#: name -> (input shape (C, H, W), number of classes), known before loading
DATASET_SHAPES = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "digits28": ((1, 28, 28), 10)}

#: datasets made from another one (never guessed from an input shape: name them with --dataset)
DERIVED_DATASETS = ("digits28",)

#: digits28: the 8x8 digit resized to this box, centred in 28x28 with a 4-pixel margin (MNIST's layout)
DIGITS28_BOX, DIGITS28_SIZE = 20, 28

#: file -> (md5 of the .gz file, md5 of the uncompressed IDX file), the
#: well-known sums of the original distribution.
MNIST_MD5 = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}

#: the usual mirrors of the gzip files (yann.lecun.com itself now asks for a login).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_IDX_DTYPES = {0x08: np.uint8}


@dataclass(frozen=True, eq=False)  # holds arrays: compare them explicitly
class Dataset:
    """Raw images ``(N, C, H, W)`` and integer labels of a train and a test split."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    n_classes: int
    split: dict  # how the test split was drawn (stored in model metadata)


def parse_dataset(name: str) -> str:
    """Canonical dataset name or a one-line error listing the choices."""
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise FxpsimError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    return key


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, test_fraction: float = 0.25,
                 split_seed: int = 0, md5: dict | None = None) -> Dataset:
    """The dataset ``name`` (``digits`` or ``mnist``) as a :class:`Dataset`.

    ``test_fraction`` and ``split_seed`` only apply to ``digits`` (MNIST has
    its standard test set). ``md5`` overrides :data:`MNIST_MD5` (tests).
    """
    key = parse_dataset(name)
    if key == "digits":
        return _load_digits(test_fraction, split_seed)
    if key == "digits28":
        return upsampled_digits(_load_digits(test_fraction, split_seed))
    return _load_mnist(data_dir, md5)


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images (1797, 8, 8) uint8, labels int64)``.

    Read from the ``digits.csv.gz`` that scikit-learn bundles (what
    ``sklearn.datasets.load_digits`` parses), without importing
    ``sklearn.datasets``, which takes seconds; falls back to ``load_digits``.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",", dtype=np.float64)
            return _frozen(table[:, :-1].reshape(-1, 8, 8), table[:, -1])
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _frozen(bunch.images, bunch.target)


def _frozen(images, labels):
    images, labels = images.astype(np.uint8), labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False  # cached: callers get copies by indexing
    return images, labels


def _load_digits(test_fraction: float, split_seed: int) -> Dataset:
    check(0 < test_fraction < 1, f"test_fraction={test_fraction!r} must be in (0, 1)")
    images, y = digits_arrays()
    x = images.reshape(-1, 1, 8, 8)  # values 0..16, exact
    test = _stratified_mask(y, test_fraction, split_seed)
    return Dataset("digits", x[~test], y[~test], x[test], y[test], (1, 8, 8), 10,
                   {"test_fraction": float(test_fraction), "split_seed": int(split_seed)})


def resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` bilinear resampling along one axis with half-pixel centres: output pixel
    ``i`` reads the input at ``(i + 1/2) n_in / n_out - 1/2``, clamped to ``[0, n_in - 1]`` (the
    usual image "bilinear" resize); every row sums to 1."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - (pos - lo))
    np.add.at(m, (np.arange(n_out), hi), pos - lo)
    return m


def upsample_images(x: np.ndarray, box: int, size: int, scale: float = 1.0) -> np.ndarray:
    """Square images ``(N, C, h, h)`` resized bilinearly to ``box x box`` (:func:`resize_matrix`),
    times ``scale``, rounded half to even to uint8 and centred in ``size x size`` zeros."""
    check(x.ndim == 4 and x.shape[2] == x.shape[3], f"upsample_images wants square images, got {x.shape}")
    check(1 <= box <= size and (size - box) % 2 == 0, f"box {box} must fit centred in {size}x{size}")
    m = resize_matrix(box, x.shape[2])
    inner = np.rint(np.einsum("ij,ncjk,lk->ncil", m, x.astype(np.float64), m) * scale)
    check(inner.min(initial=0) >= 0 and inner.max(initial=0) <= 255, "upsampled values leave 0..255")
    out = np.zeros((*x.shape[:2], size, size), dtype=np.uint8)
    margin = (size - box) // 2
    out[:, :, margin:margin + box, margin:margin + box] = inner
    return out


def upsampled_digits(digits: Dataset) -> Dataset:
    """``digits28``: each 8x8 digit (values 0..16) resized bilinearly to 20x20, scaled to 0..255 and
    centred in 28x28 with a 4-pixel margin, as MNIST lays its digits out (a 20x20 box in 28x28), so
    an MNIST-trained network reads it (transfer learning); the same split as ``digits``."""
    scale = 255 / 16
    up = functools.partial(upsample_images, box=DIGITS28_BOX, size=DIGITS28_SIZE, scale=scale)
    return Dataset("digits28", up(digits.x_train), digits.y_train, up(digits.x_test), digits.y_test,
                   (1, DIGITS28_SIZE, DIGITS28_SIZE), digits.n_classes, digits.split)


def _stratified_mask(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded split taking ``round(fraction * n_c)`` of each class."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        mask[rng.permutation(idx)[: int(round(fraction * len(idx)))]] = True
    return mask


def train_val_split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int):
    """``(x_train, y_train, x_val, y_val)``: a seeded stratified validation split.

    ``val_fraction = 0`` gives an empty validation split.
    """
    check(0 <= val_fraction < 1, f"val_fraction={val_fraction!r} must be in [0, 1)")
    val = _stratified_mask(y, val_fraction, seed) if val_fraction > 0 else np.zeros(len(y), dtype=bool)
    return x[~val], y[~val], x[val], y[val]


# --- MNIST -------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """Where ``fxpsim data download`` puts files: ``$FXPSIM_CACHE`` or ``~/.cache/fxpsim``."""
    env = os.environ.get("FXPSIM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fxpsim"


def _candidate_dirs(data_dir) -> list[Path]:
    if data_dir is not None:
        roots = [Path(data_dir)]
    elif os.environ.get("FXPSIM_DATA"):
        roots = [Path(os.environ["FXPSIM_DATA"])]
    else:
        roots = [default_cache_dir()]
    return [d for root in roots for d in (root, root / "mnist")]


def md5sum(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_mnist_file(stem: str, data_dir=None, md5: dict | None = None) -> Path:
    """The verified path of one MNIST file (``stem`` or ``stem.gz``) or a one-line error."""
    table = MNIST_MD5 if md5 is None else md5
    dirs = _candidate_dirs(data_dir)
    for d in dirs:
        for path, want in ((d / f"{stem}.gz", table[stem][0]), (d / stem, table[stem][1])):
            if path.is_file():
                got = md5sum(path)
                if got != want:
                    raise FxpsimError(f"{path} has md5 {got}, expected {want}: the file is corrupt or not "
                                      "the original MNIST; delete it and download it again")
                return path
    where = " or ".join(str(d) for d in dirs[::2])
    raise FxpsimError(f"MNIST file {stem}[.gz] not found in {where}: pass --data-dir DIR, set FXPSIM_DATA, "
                      "or run `fxpsim data download mnist`")


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (gzip or not); magic ``0x0000TTDD`` with type TT, DD big-endian dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise FxpsimError(f"{path} cannot be read as {'gzip' if opener is gzip.open else 'IDX'}: {exc}") from None
    check(len(data) >= 4 and data[:2] == b"\0\0" and data[2] in _IDX_DTYPES,
          f"{path} is not an IDX file of unsigned bytes (bad magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    check(len(data) >= header, f"{path} is truncated inside its IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    check(len(data) == header + count,
          f"{path} holds {len(data) - header} data bytes, its header {shape} says {count}: the file is truncated")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _load_mnist(data_dir, md5) -> Dataset:
    arrays = {stem: read_idx(find_mnist_file(stem, data_dir, md5)) for stem in MNIST_MD5}
    x_train, y_train = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    x_test, y_test = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        check(x.ndim == 3 and y.ndim == 1 and len(x) == len(y),
              f"MNIST {split} images {x.shape} and labels {y.shape} do not match")
    h, w = x_train.shape[1:]
    return Dataset("mnist", x_train.reshape(-1, 1, h, w), y_train.astype(np.int64),
                   x_test.reshape(-1, 1, h, w), y_test.astype(np.int64), (1, h, w), 10, {})


def download_mnist(cache_dir=None, *, mirrors=None, md5: dict | None = None,
                   timeout: float = 30.0, log=print) -> Path:
    """Fetch the four MNIST .gz files into ``cache_dir/mnist`` with md5 verification.

    Files already present with the right sum are kept. Each file is written
    to a temporary name and renamed only once its md5 matches. Raises a
    one-line :class:`FxpsimError` when no mirror serves a good copy (offline).
    """
    table = MNIST_MD5 if md5 is None else md5
    mirrors = MNIST_MIRRORS if mirrors is None else tuple(mirrors)
    target = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    for stem, (want, _) in table.items():
        dest = target / f"{stem}.gz"
        if dest.is_file() and md5sum(dest) == want:
            log(f"{dest}: present, md5 ok")
            continue
        errors = []
        for base in mirrors:
            url = base + dest.name
            try:
                _fetch(url, dest, want, timeout)
            except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
                errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
                continue
            log(f"{dest}: downloaded from {url}, md5 ok")
            break
        else:
            raise FxpsimError(f"could not download {dest.name} from any of {len(mirrors)} mirrors "
                              f"(last: {errors[-1] if errors else 'no mirrors'}): check the network "
                              "connection, or copy the four files by hand and pass --data-dir")
    return target


def _fetch(url: str, dest: Path, want: str, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # mkstemp makes 0600
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 16), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != want:
            raise ValueError(f"md5 {h.hexdigest()}, expected {want}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- preprocessing -----------------------------------------------------------------------------

PREPROCESS_MODES = ("none", "mean-image", "per-channel", "standardize")


@dataclass(frozen=True, eq=False)  # holds arrays: compare them explicitly
class Preprocess:
    """``apply(x) = (x - mean) / std`` in float32, fitted on a training split.

    ``mode``: ``none``; ``mean-image`` (subtract the mean image, AlexNet);
    ``per-channel`` (subtract each channel's mean, VGG); ``standardize``
    (per-channel mean, then divide by the per-channel standard deviation).
    ``mean`` broadcasts against one image ``(C, H, W)`` (shape ``(C, H, W)`` or
    ``(C, 1, 1)``); ``std`` has shape ``(C, 1, 1)``.
    """

    mode: str
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x_train: np.ndarray, mode: str = "standardize") -> "Preprocess":
        """Fit ``mode`` on training images ``(N, C, H, W)``."""
        mode = parse_preprocess(mode)
        check(x_train.ndim == 4 and len(x_train) > 0, f"Preprocess.fit wants images (N, C, H, W), got {x_train.shape}")
        x = x_train.astype(np.float64)
        c = x.shape[1]
        ones = np.ones((c, 1, 1))
        if mode == "none":
            mean, std = np.zeros((c, 1, 1)), ones
        elif mode == "mean-image":
            mean, std = x.mean(axis=0), ones
        else:
            mean = x.mean(axis=(0, 2, 3)).reshape(c, 1, 1)
            std = x.std(axis=(0, 2, 3)).reshape(c, 1, 1) if mode == "standardize" else ones
            std = np.where(std > 0, std, 1.0)
        return cls(mode, mean.astype(np.float32), std.astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Float32 network input of raw images ``(N, C, H, W)`` (or one image ``(C, H, W)``)."""
        x = np.asarray(x)
        per_channel = self.mean.shape[1:] == (1, 1)
        ok = x.ndim >= 3 and (x.shape[-3] == self.mean.shape[0] if per_channel
                              else x.shape[-3:] == self.mean.shape)
        check(ok, f"images of shape {x.shape} do not match the preprocessing fitted on {self.mean.shape}")
        return ((x.astype(np.float32) - self.mean) / self.std).astype(np.float32)

    def to_config(self) -> dict:
        return {"mode": self.mode}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_arrays(cls, config: dict, arrays: dict[str, np.ndarray]) -> "Preprocess":
        mode = parse_preprocess(config.get("mode"))
        mean, std = np.asarray(arrays["mean"], np.float32), np.asarray(arrays["std"], np.float32)
        check(std.shape == (mean.shape[0], 1, 1) and np.all(std > 0),
              "preprocessing arrays are inconsistent (std shape or value)")
        return cls(mode, mean, std)


def parse_preprocess(mode) -> str:
    """Canonical preprocessing mode or a one-line error."""
    key = str(mode).strip().lower()
    key = {"standardise": "standardize", "mean": "mean-image", "channel-mean": "per-channel"}.get(key, key)
    if key not in PREPROCESS_MODES:
        raise FxpsimError(f"unknown preprocessing {mode!r}: use one of {', '.join(PREPROCESS_MODES)}")
    return key
