"""Model files: round trip, atomic writes, and every kind of bad file -> one-line FxpsimError."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from fxpsim import FxpsimError
from fxpsim.modelfile import MODEL_VERSION, Model, check_writable, load_model, save_model
from fxpsim.network import build_network
from fxpsim.train.data import Preprocess


def small_model(seed=0) -> Model:
    net = build_network("conv2x3p1-bn-relu-maxpool2-fc3", (1, 4, 4), 3, seed=seed)
    rng = np.random.default_rng(seed)
    net.forward(rng.standard_normal((8, 1, 4, 4)).astype(np.float32), training=True)  # moves BN running stats
    prep = Preprocess.fit(rng.integers(0, 17, size=(20, 1, 4, 4)), "mean-image")
    return Model(net, prep, {"dataset": "digits", "seed": seed, "test_accuracy": 0.5, "optimizer": "adam"})


@pytest.fixture
def saved(tmp_path):
    model = small_model()
    path = save_model(tmp_path / "m.npz", model)
    return model, path


def one_line_error(path, match):
    with pytest.raises(FxpsimError, match=match) as exc:
        load_model(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_round_trip_is_bit_exact(saved):
    model, path = saved
    back = load_model(path)
    a, b = model.network.state_dict(), back.network.state_dict()
    assert a.keys() == b.keys() and "1.running_mean" in a
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_array_equal(a[k], b[k])
    assert back.network.spec() == model.network.spec()
    assert back.metadata == model.metadata
    assert back.preprocess.mode == "mean-image"
    np.testing.assert_array_equal(back.preprocess.mean, model.preprocess.mean)
    x = np.random.default_rng(1).integers(0, 17, size=(5, 1, 4, 4))
    np.testing.assert_array_equal(back.network.forward(back.preprocess.apply(x)),
                                  model.network.forward(model.preprocess.apply(x)))


def test_file_loads_without_pickle_and_is_versioned(saved):
    _, path = saved
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(npz["__fxpsim__"].tobytes())
        assert all(npz[name].dtype != object for name in npz.files)
    assert header["format"] == "fxpsim-model" and header["version"] == MODEL_VERSION
    assert header["architecture"]["layers"][0]["kind"] == "conv2d"


def test_truncated(saved):
    _, path = saved
    blob = path.read_bytes()
    for cut in (len(blob) // 2, len(blob) - 10, 30):
        path.write_bytes(blob[:cut])
        one_line_error(path, "corrupt or truncated")


def test_corrupt_byte_is_caught_by_crc(saved):
    _, path = saved
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(blob))) as zf:
        info = zf.getinfo("state/0.W.npy")
    # flip a byte inside that member's compressed data (after its local header)
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    blob[pos] ^= 0xFF
    path.write_bytes(bytes(blob))
    one_line_error(path, "corrupt or truncated")


def test_foreign_npz(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, a=np.arange(3))
    one_line_error(path, "foreign archive")


def test_text_and_empty_files(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello, I am not a model\n")
    one_line_error(path, "not a zip")
    path.write_bytes(b"")
    one_line_error(path, "not a zip")


def test_pickle_file_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"W": np.zeros(3)}))
    one_line_error(path, "pickle")


def test_npy_file_is_refused(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(3))
    one_line_error(path, "single .npy")


def test_pickled_object_array_inside_npz_is_refused(saved):
    _, path = saved
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["state/0.W"] = np.array([{"evil": 1}], dtype=object)
    np.savez(path, **arrays)  # allow_pickle defaults True when saving
    one_line_error(path, "pickled object arrays")


def rewrite_header(path, change):
    with np.load(path) as npz:
        arrays = dict(npz)
    header = json.loads(arrays["__fxpsim__"].tobytes())
    text = change(header)
    if not isinstance(text, str):
        text = json.dumps(header)
    arrays["__fxpsim__"] = np.frombuffer(text.encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_bad_metadata(saved):
    _, path = saved
    rewrite_header(path, lambda h: "{not json")
    one_line_error(path, "not valid JSON")


def test_wrong_format_and_newer_version(saved):
    _, path = saved
    rewrite_header(path, lambda h: h.update(format="something-else"))
    one_line_error(path, "does not say format")
    rewrite_header(path, lambda h: h.update(format="fxpsim-model", version=MODEL_VERSION + 1))
    with pytest.raises(FxpsimError, match="newer than this fxpsim reads.*upgrade"):
        load_model(path)


def test_weights_not_matching_architecture(saved):
    _, path = saved
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["state/0.W"] = np.zeros((5, 1, 3, 3), np.float32)
    np.savez(path, **arrays)
    one_line_error(path, "shape")
    del arrays["state/0.W"]
    np.savez(path, **arrays)
    one_line_error(path, "missing")


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.npz")


def test_atomic_write_leaves_old_file_and_no_temp_on_error(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def fail(f, **arrays):
        f.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", fail)
    with pytest.raises(OSError, match="No space"):
        save_model(path, model)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


def test_unjsonable_metadata_writes_nothing(tmp_path):
    model = small_model()
    model.metadata["bad"] = np.arange(2)
    with pytest.raises(FxpsimError, match="not JSON-able"):
        save_model(tmp_path / "m.npz", model)
    assert os.listdir(tmp_path) == []


def test_unwritable_output(tmp_path):
    with pytest.raises(FxpsimError, match="does not exist"):
        check_writable(tmp_path / "no" / "m.npz")
    with pytest.raises(FxpsimError, match="is a directory"):
        check_writable(tmp_path)
    with pytest.raises(OSError):
        save_model(tmp_path / "no" / "m.npz", small_model())
    assert check_writable(tmp_path / "m.npz") == tmp_path / "m.npz" and os.listdir(tmp_path) == []


@pytest.mark.parametrize("mutate, needle", [
    ("nan", r"holds 1 NaN/inf value"),
    ("inf_std", r"'preprocess/\w+' holds \d+ NaN/inf"),
    ("bool", r"has dtype bool, not float16/32/64"),
    ("complex", r"has dtype complex128, not float16/32/64"),
    ("datetime", r"has dtype datetime64\[s\], not float16/32/64"),
])
def test_weights_that_are_not_finite_reals_are_refused(tmp_path, mutate, needle):
    """Bool weights were cast silently (61.8 % accuracy, exit 0) and one NaN weight printed 'loss nan'."""
    good = save_model(tmp_path / "good.npz", small_model())
    with np.load(good) as z:
        entries = {k: z[k] for k in z.files}
    w = next(k for k in entries if k.endswith(".W"))
    if mutate == "nan":
        entries[w] = entries[w].copy()
        entries[w].flat[3] = np.nan
    elif mutate == "inf_std":
        std = next(k for k in entries if k.startswith("preprocess/"))
        entries[std] = np.full_like(entries[std], np.inf)
    elif mutate == "bool":
        entries[w] = entries[w] > 0
    elif mutate == "complex":
        entries[w] = entries[w].astype(np.complex128)
    else:
        entries[w] = np.zeros(entries[w].shape, dtype="datetime64[s]")
    bad = tmp_path / "bad.npz"
    np.savez(bad, **entries)
    with pytest.raises(FxpsimError, match=needle):
        load_model(bad)
    load_model(good)  # the untouched file still loads


def test_every_shipped_model_holds_finite_real_weights():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "models").glob("*.npz")):
        load_model(path)


@pytest.mark.parametrize("metadata, needle", [
    ({"seed": -1}, r"metadata seed=-1 is not a whole number"),
    ({"seed": "abc"}, r"metadata seed='abc' is not a whole number"),
    ({"split": {"test_fraction": "x"}}, r"split.test_fraction='x' is not a fraction in \(0, 1\)"),
    ({"split": {"split_seed": 1.5}}, r"split.split_seed=1.5 is not a whole number"),
    ({"split": [0.25]}, r"split=\[0.25\] is not a JSON object"),
    ({"val_fraction": 1.0}, r"val_fraction=1.0 is not a fraction in \[0, 1\)"),
    ({"dataset": 7}, r"dataset=7 is not a dataset name"),
])
def test_metadata_fields_the_commands_read_are_checked_on_load(tmp_path, metadata, needle):
    """seed -1, seed "abc" and split.test_fraction "x" were ValueError/TypeError tracebacks."""
    model = small_model()
    path = save_model(tmp_path / "m.npz", Model(model.network, model.preprocess, metadata))
    with pytest.raises(FxpsimError, match=needle):
        load_model(path)


def test_a_model_without_a_dataset_is_one_line_in_the_cli(tmp_path, capsys):
    from fxpsim.cli import main

    model = small_model()
    path = save_model(tmp_path / "m.npz", Model(model.network, model.preprocess, {"seed": 0}))
    assert main(["eval", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no \"dataset\" in its metadata" in err and "\n" not in err and "Traceback" not in err
