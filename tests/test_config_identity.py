"""A config records the model it was made for (issue 14, item 2): file name, weights digest, layers.

``search`` (and ``stripes``) write the record; ``eval --config`` (and ``stripes --config``) refuse a
config made for another model in one line, unless ``--force``; a config without the record (written
by hand, or before the record existed) runs as before.
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fxpsim.cli import main
from fxpsim.cli.common import model_record
from fxpsim.config import ModelRecord, NetworkConfig, weights_sha256
from fxpsim.errors import FxpsimError
from fxpsim.modelfile import load_model, save_model
from fxpsim.simulate import Simulator, config_from_profile, profile
from fxpsim.train.data import load_dataset

MODELS = Path(__file__).resolve().parents[1] / "models"
CNN, MLP = MODELS / "digits-cnn.npz", MODELS / "digits-mlp.npz"


@pytest.fixture(scope="module")
def cnn_config():
    """A 16-bit profiled config of the digits CNN (fast, and what eval --sparse would make)."""
    model = load_model(CNN)
    sim = Simulator(model)
    x = load_dataset("digits").x_train[:100]
    return config_from_profile(profile(sim, x), weight_bits=16, data_bits=16, acc_bits=32, overflow="wrap")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------- the record and its digest

def test_the_digest_is_of_the_arrays_not_of_the_file(tmp_path):
    """Same weights, another zip (other timestamps, stored instead of deflated): same digest."""
    model = load_model(CNN)
    other = tmp_path / "copy.npz"
    with zipfile.ZipFile(CNN) as src, zipfile.ZipFile(other, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(zipfile.ZipInfo(name, date_time=(2001, 2, 3, 4, 5, 6)), src.read(name))
    assert other.read_bytes() != CNN.read_bytes()
    a, b = model_record(CNN, model), model_record(other, load_model(other))
    assert a.weights_sha256 == b.weights_sha256 and a.layers == b.layers
    assert (a.file, b.file) == ("digits-cnn.npz", "copy.npz")  # the name only, never a folder
    assert a.layers == (("conv1", (16, 1, 3, 3)), ("conv2", (16, 16, 3, 3)), ("fc1", (256, 64)), ("fc2", (64, 10)))


def test_one_changed_weight_a_dtype_or_a_key_changes_the_digest():
    state = load_model(CNN).network.state_dict()
    base = weights_sha256(state)
    assert weights_sha256(dict(reversed(list(state.items())))) == base  # key order does not matter
    key = next(iter(state))
    bumped = dict(state, **{key: state[key].copy()})
    bumped[key].flat[0] = np.nextafter(bumped[key].flat[0], np.float32(np.inf))
    assert weights_sha256(bumped) != base
    assert weights_sha256(dict(state, **{key: state[key].astype(np.float64)})) != base
    assert weights_sha256({f"x{k}": v for k, v in state.items()}) != base


def test_the_record_round_trips_through_json_and_survives_with_changes(cnn_config):
    record = model_record(CNN, load_model(CNN))
    cfg = cnn_config.for_model(record)
    again = NetworkConfig.from_json(cfg.to_json())
    assert again == cfg and again.model == record and again.to_json() == cfg.to_json()
    data = json.loads(cfg.to_json())
    assert list(data) == ["format", "version", "model", "layers"]
    assert data["model"]["layers"][0] == {"name": "conv1", "weight_shape": "16x1x3x3"}
    for changed in (cfg.with_layer(0, acc_bits=20), cfg.with_all(acc_bits=24), cfg.with_engine("bitserial")):
        assert changed.model == record
    assert cfg.for_model(None).model is None
    assert "model" not in json.loads(cnn_config.to_json())  # no record: the JSON of before


@pytest.mark.parametrize("change, needle", [
    (lambda m: m.pop("file"), "is not {\"file\""),
    (lambda m: m.update(extra=1), "is not {\"file\""),
    (lambda m: m.update(file="../models/x.npz"), "is not a model file name"),
    (lambda m: m.update(file=7), "is not a model file name"),
    (lambda m: m.update(weights_sha256="ABC"), "is not 64 lowercase hex digits"),
    (lambda m: m.update(weights_sha256="g" * 64), "is not 64 lowercase hex digits"),
    (lambda m: m.update(layers=[]), "is not a list of 1 to 1024 layers"),
    (lambda m: m.update(layers={"conv1": "1x1"}), "is not a list of 1 to 1024 layers"),
    (lambda m: m["layers"][0].update(weight_shape=[16, 1, 3, 3]), "is not {\"name\": \"fc1\""),
    (lambda m: m["layers"][0].update(weight_shape="16x0x3x3"), "is not {\"name\": \"fc1\""),
    (lambda m: m["layers"][0].update(weight_shape="1x2x3x4x5"), "is not {\"name\": \"fc1\""),
    (lambda m: m["layers"][0].update(name=None), "is not {\"name\": \"fc1\""),
    (lambda m: m["layers"][0].pop("name"), "is not {\"name\": \"fc1\""),
])
def test_a_damaged_record_is_one_line(cnn_config, change, needle):
    data = json.loads(cnn_config.for_model(model_record(CNN, load_model(CNN))).to_json())
    change(data["model"])
    with pytest.raises(FxpsimError, match="its \"model\" entry") as err:
        NetworkConfig.from_json(json.dumps(data), "c.json")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_top_level_keys_and_a_boolean_version_are_refused(cnn_config):
    data = json.loads(cnn_config.to_json())
    with pytest.raises(FxpsimError, match="unknown key 'modle'"):
        NetworkConfig.from_json(json.dumps(dict(data, modle={})))
    with pytest.raises(FxpsimError, match="configuration version True"):
        NetworkConfig.from_json(json.dumps(dict(data, version=True)))


def test_check_model_refuses_other_weights_and_other_layers(cnn_config):
    record = model_record(CNN, load_model(CNN))
    cfg = cnn_config.for_model(record)
    cfg.check_model(record)  # its own model
    cnn_config.check_model(model_record(MLP, load_model(MLP)))  # no record: nothing to check
    same_layers = ModelRecord("x.npz", "0" * 64, record.layers)
    with pytest.raises(FxpsimError, match=r"made for the model digits-cnn.npz .*the model given is x.npz .*"
                                          r"\(other weights\): give a config made for this model"):
        cfg.check_model(same_layers, "c.json")
    with pytest.raises(FxpsimError, match=r"\(other layers\).*, or add --force") as err:
        cfg.check_model(model_record(MLP, load_model(MLP)), "c.json", "or add --force")
    assert "layers fc1 64x128" in str(err.value) and "conv1 16x1x3x3" in str(err.value)


# ---------------------------------------------------------------- the commands

@pytest.fixture(scope="module")
def recorded(tmp_path_factory, cnn_config):
    """The CNN's config with its record, and a copy of the CNN with one weight changed."""
    d = tmp_path_factory.mktemp("identity")
    cfg = cnn_config.for_model(model_record(CNN, load_model(CNN))).save(d / "cnn_config.json")
    model = load_model(CNN)
    model.network.layers[0].params["W"][0, 0, 0, 0] += 0.25
    tweaked = save_model(d / "digits-cnn.npz", model)  # same file name, other weights
    return cfg, tweaked


@pytest.mark.parametrize("model, needle", [
    (MLP, "(other layers)"),
    ("tweaked", "(other weights)"),
])
def test_eval_refuses_a_config_made_for_another_model_unless_forced(recorded, model, needle, capsys):
    cfg, tweaked = recorded
    model = str(tweaked if model == "tweaked" else model)
    assert main(["eval", model, "--config", str(cfg), "--images", "50"]) == 2
    line = _one_line(capsys)
    assert needle in line and "was made for the model digits-cnn.npz" in line and "--force" in line
    forced = main(["eval", model, "--config", str(cfg), "--images", "50", "--force"])
    if model == str(MLP):  # forced, the layer check of old still refuses it
        assert forced == 2 and "the config has 4 layers but the model has 3" in _one_line(capsys)
    else:
        assert forced == 0 and "fixed-point accuracy" in capsys.readouterr().out


def test_eval_runs_its_own_model_and_configs_without_a_record(recorded, cnn_config, tmp_path, capsys):
    cfg, _ = recorded
    assert main(["eval", str(CNN), "--config", str(cfg), "--images", "50"]) == 0
    plain = cnn_config.save(tmp_path / "plain.json")  # hand-written or older: no record
    assert main(["eval", str(CNN), "--config", str(plain), "--images", "50"]) == 0
    capsys.readouterr()


def test_stripes_refuses_a_config_made_for_another_model_unless_forced(recorded, tmp_path, capsys):
    cfg, tweaked = recorded
    argv = ["stripes", str(tweaked), "--config", str(cfg), "--out", str(tmp_path)]
    assert main(argv) == 2 and "(other weights)" in _one_line(capsys)
    assert not any(tmp_path.iterdir())
    assert main(argv + ["--force"]) == 0


def test_search_records_the_model_in_the_configs_it_writes(tmp_path, capsys):
    assert main(["search", str(MLP), "--tolerance", "0.05", "--samples", "60", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    files = sorted(tmp_path.glob("*_config.json"))
    assert files
    want = model_record(MLP, load_model(MLP))
    for f in files:
        assert NetworkConfig.load(f).model == want
        assert str(tmp_path) not in f.read_text() and str(MODELS) not in f.read_text()  # no folder
