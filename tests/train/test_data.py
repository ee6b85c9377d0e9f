"""Datasets: digits, MNIST IDX reading with md5 verification, download, splits, preprocessing."""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fxpsim import FxpsimError
from fxpsim.cli import main
from fxpsim.train import data as D
from fxpsim.train.data import Preprocess, download_mnist, load_dataset, read_idx, train_val_split

STEMS = {"train-images-idx3-ubyte": (6, 4, 5), "train-labels-idx1-ubyte": (6,),
         "t10k-images-idx3-ubyte": (3, 4, 5), "t10k-labels-idx1-ubyte": (3,)}


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(n.to_bytes(4, "big") for n in arr.shape) + arr.tobytes()


def fake_arrays(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for stem, shape in STEMS.items():
        high = 10 if "labels" in stem else 256
        out[stem] = rng.integers(0, high, size=shape, dtype=np.uint8)
    return out


def write_fake_mnist(folder: Path, gz=True, seed=0):
    """The four IDX files (gzip or raw) and the md5 table that matches them."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays, table = fake_arrays(seed), {}
    for stem, arr in arrays.items():
        raw = idx_bytes(arr)
        packed = gzip.compress(raw, mtime=0)
        if gz:
            (folder / f"{stem}.gz").write_bytes(packed)
        else:
            (folder / stem).write_bytes(raw)
        table[stem] = (hashlib.md5(packed).hexdigest(), hashlib.md5(raw).hexdigest())
    return arrays, table


@pytest.mark.parametrize("gz", [True, False])
def test_fake_mnist_loads_verified(tmp_path, gz):
    arrays, table = write_fake_mnist(tmp_path, gz=gz)
    ds = load_dataset("mnist", tmp_path, md5=table)
    assert ds.x_train.shape == (6, 1, 4, 5) and ds.x_test.shape == (3, 1, 4, 5) and ds.input_shape == (1, 4, 5)
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == np.int64 and ds.n_classes == 10


def test_env_var_and_mnist_subfolder(tmp_path, monkeypatch):
    _, table = write_fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("FXPSIM_DATA", str(tmp_path))
    assert load_dataset("mnist", md5=table).x_train.shape[0] == 6


def test_wrong_md5_is_one_line_error(tmp_path):
    _, table = write_fake_mnist(tmp_path)
    with pytest.raises(FxpsimError, match=r"has md5 [0-9a-f]{32}, expected [0-9a-f]{32}") as exc:
        load_dataset("mnist", tmp_path)  # the real sums do not match the fake files
    assert "\n" not in str(exc.value)
    # one changed byte in a file whose sum is known
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(FxpsimError, match="t10k-labels.*corrupt"):
        load_dataset("mnist", tmp_path, md5=table)


def test_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("FXPSIM_DATA", raising=False)
    with pytest.raises(FxpsimError, match="not found in .*--data-dir.*FXPSIM_DATA.*fxpsim data download"):
        load_dataset("mnist", tmp_path / "nowhere")


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    (tmp_path / "a").write_bytes(good)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), np.arange(12).reshape(3, 4))
    (tmp_path / "b").write_bytes(good[:-1])
    with pytest.raises(FxpsimError, match="truncated"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x00\x00\x0d\x01" + good[4:])
    with pytest.raises(FxpsimError, match="bad magic"):
        read_idx(tmp_path / "c")
    (tmp_path / "d.gz").write_bytes(b"not gzip at all")
    with pytest.raises(FxpsimError, match="cannot be read as gzip"):
        read_idx(tmp_path / "d.gz")


def test_real_mnist(mnist_dir):
    ds = load_dataset("mnist", mnist_dir)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255
    assert np.bincount(ds.y_test).tolist()[:2] == [980, 1135]  # the well-known class counts


def test_download_from_a_mirror_verifies_and_skips_present_files(tmp_path):
    src = tmp_path / "mirror"
    _, table = write_fake_mnist(src)
    logs = []
    target = download_mnist(tmp_path / "cache", mirrors=["file:///nonexistent/", src.as_uri() + "/"],
                            md5=table, log=logs.append)
    assert target == tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{s}.gz" for s in STEMS)
    assert load_dataset("mnist", tmp_path / "cache", md5=table).x_test.shape[0] == 3
    download_mnist(tmp_path / "cache", mirrors=[], md5=table, log=logs.append)  # all present: no network
    assert sum("present, md5 ok" in line for line in logs) == 4


def test_download_rejects_a_bad_checksum_and_leaves_no_partial_file(tmp_path):
    src = tmp_path / "mirror"
    _, table = write_fake_mnist(src)
    bad = dict(table)
    bad["train-labels-idx1-ubyte"] = ("0" * 32, "0" * 32)
    with pytest.raises(FxpsimError, match="could not download train-labels-idx1-ubyte.gz.*md5"):
        download_mnist(tmp_path / "cache", mirrors=[src.as_uri() + "/"], md5=bad, log=lambda s: None)
    leftovers = [p.name for p in (tmp_path / "cache" / "mnist").iterdir()]
    assert "train-labels-idx1-ubyte.gz" not in leftovers and not any(n.endswith(".part") for n in leftovers)


def test_download_offline_is_one_line_cli_error(tmp_path, monkeypatch, capsys):
    # an unreachable local URL stands in for "offline"; tests never touch the real network
    monkeypatch.setattr(D, "MNIST_MIRRORS", ("http://127.0.0.1:9/", "http://[::1]:9/"))
    status = main(["data", "download", "mnist", "--cache-dir", str(tmp_path), "--timeout", "2"])
    err = capsys.readouterr().err
    assert status != 0
    assert err.count("\n") == 1 and "could not download train-images-idx3-ubyte.gz from any of 2 mirrors" in err
    assert not any(p.name.endswith(".part") for p in (tmp_path / "mnist").iterdir())


def test_unknown_dataset():
    with pytest.raises(FxpsimError, match="unknown dataset 'cifar10': use one of digits, mnist"):
        load_dataset("cifar10")


def test_digits_embedded_and_split_seeded():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.n_classes == 10
    assert len(ds.x_train) + len(ds.x_test) == 1797 and ds.x_train.max() == 16 and ds.x_train.min() == 0
    # stratified: every class has round(25 %) of its images in the test split
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.round(counts * 0.25).astype(int))
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    other = load_dataset("digits", split_seed=1)
    assert not np.array_equal(other.y_test, ds.y_test)
    assert ds.split == {"test_fraction": 0.25, "split_seed": 0}


def test_train_val_split():
    y = np.repeat(np.arange(4), 10)
    x = np.arange(40)
    xa, ya, xv, yv = train_val_split(x, y, 0.2, seed=3)
    assert len(xv) == 8 and np.bincount(yv).tolist() == [2, 2, 2, 2]
    assert sorted(np.concatenate([xa, xv]).tolist()) == list(range(40))
    np.testing.assert_array_equal(train_val_split(x, y, 0.2, seed=3)[2], xv)
    assert not np.array_equal(train_val_split(x, y, 0.2, seed=4)[2], xv)
    assert len(train_val_split(x, y, 0.0, seed=3)[2]) == 0


def test_preprocess_fitted_on_train_only():
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 17, size=(50, 2, 3, 3)).astype(np.uint8)
    x_train[:, :, 0, 0] = 7  # a constant pixel
    x_test = rng.integers(0, 17, size=(5, 2, 3, 3)).astype(np.uint8)

    img = Preprocess.fit(x_train, "mean-image")
    np.testing.assert_allclose(img.apply(x_test), x_test - x_train.mean(axis=0), atol=1e-5)

    chan = Preprocess.fit(x_train, "per-channel")
    assert chan.mean.shape == (2, 1, 1)
    np.testing.assert_allclose(chan.apply(x_train).mean(axis=(0, 2, 3)), 0, atol=1e-5)

    std = Preprocess.fit(x_train, "standardize")
    z = std.apply(x_train)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-5)
    # test images use the training statistics, not their own
    np.testing.assert_allclose(std.apply(x_test), (x_test - std.mean) / std.std, rtol=1e-6)
    assert not np.allclose(std.apply(x_test).mean(axis=(0, 2, 3)), 0, atol=1e-3)

    none = Preprocess.fit(x_train, "none")
    np.testing.assert_array_equal(none.apply(x_test), x_test.astype(np.float32))
    with pytest.raises(FxpsimError, match="unknown preprocessing 'whiten'"):
        Preprocess.fit(x_train, "whiten")
    with pytest.raises(FxpsimError, match="do not match"):
        img.apply(np.zeros((2, 2, 4, 4)))


@pytest.mark.slow  # importing sklearn.datasets takes seconds
def test_digits_equal_sklearn_load_digits():
    from sklearn.datasets import load_digits

    images, labels = D.digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
