"""LayerConfig / NetworkConfig: the engine a layer runs on, its options, and their JSON."""

import json
from pathlib import Path

import pytest

from fxpsim.config import ENGINE_OPTIONS, MAX_CONFIG_BYTES, LayerConfig, NetworkConfig
from fxpsim.datapath.engines import ENGINES
from fxpsim.errors import FxpsimError

REPORTS = Path(__file__).resolve().parents[1] / "reports"
FMT = dict(fmt_w="Q1.7", fmt_x="Q2.6", fmt_y="Q3.5")


def _layer(**kw):
    return LayerConfig("fc1", **FMT, acc_bits=20, **kw)


def test_every_registered_engine_declares_its_options_and_the_reverse():
    assert set(ENGINES) == set(ENGINE_OPTIONS) == {"dense", "sparse", "bitserial", "xnor"}
    for name, engine in ENGINES.items():
        assert engine.name == name and engine.options == ENGINE_OPTIONS[name]


def test_default_engine_writes_exactly_the_json_of_before():
    """A dense layer (the default) writes the same keys as before engines existed, so every
    committed config stays byte-identical when loaded and saved again."""
    assert list(_layer().to_dict()) == ["name", "fmt_w", "fmt_x", "fmt_y", "acc_bits", "overflow",
                                        "rounding", "a2q"]
    assert _layer(engine="dense", engine_options={}) == _layer()
    files = sorted(REPORTS.glob("*config*.json"))
    assert files
    for path in files:
        cfg = NetworkConfig.load(path)
        assert all(c.engine == "dense" and c.engine_options == () for c in cfg)
        assert cfg.to_json() + "\n" == path.read_text(), path.name
        assert "engine" not in cfg.table().columns


def test_engine_options_are_filled_sorted_frozen_and_round_trip(tmp_path):
    s = _layer(engine="sparse", engine_options={"pes": 8})
    assert s.engine_options == (("index_bits", 4), ("pes", 8)) and s.options == {"index_bits": 4, "pes": 8}
    assert s == _layer(engine="sparse", engine_options=(("index_bits", 4), ("pes", 8)))
    assert hash(s) == hash(_layer().with_engine("sparse", pes=8)) and s != _layer()
    b = _layer().with_engine("bitserial", lanes=1, msb_first=True)
    assert b.options == {"brick_order": "datapath", "lanes": 1, "msb_first": 1}
    cfg = NetworkConfig((s, b, _layer()))
    text = cfg.to_json()
    layers = json.loads(text)["layers"]
    assert layers[0]["engine"] == "sparse" and layers[0]["engine_options"] == {"index_bits": 4, "pes": 8}
    assert layers[1]["engine_options"] == {"brick_order": "datapath", "lanes": 1, "msb_first": 1}
    assert "engine" not in layers[2] and "engine_options" not in layers[2]
    assert NetworkConfig.load(cfg.save(tmp_path / "c.json")) == cfg
    assert list(cfg.table()["engine"]) == ["sparse", "bitserial", "dense"]
    # changing the engine of some layers; options of the old engine do not follow
    names = NetworkConfig((_layer(), LayerConfig("fc2", **FMT))).with_engine("sparse", ["fc2"], pes=2)
    assert [c.engine for c in names] == ["dense", "sparse"] and names[1].options["pes"] == 2
    assert names.with_engine("dense") == NetworkConfig((_layer(), LayerConfig("fc2", **FMT)))


@pytest.mark.parametrize("kw, needle", [
    (dict(engine="xnor", engine_options={"pool_on": "rows"}), "engine xnor: pool_on='rows' is not one of dots, bits"),
    (dict(engine="xnor", engine_options={"scale_bits": 61}), "engine xnor: scale_bits=61 is outside [2, 60]"),
    (dict(engine="simd"), "engine='simd' is not a datapath engine: use one of dense, sparse, bitserial, xnor"),
    (dict(engine=None), "engine=None is not a datapath engine"),
    (dict(engine="dense", engine_options={"pes": 4}), "engine dense has no option 'pes' (its options: none)"),
    (dict(engine="sparse", engine_options={"lanes": 4}), "engine sparse has no option 'lanes' (its options: "
                                                         "index_bits, pes)"),
    (dict(engine="sparse", engine_options={"pes": 0}), "engine sparse: pes=0 is outside [1, 4096]"),
    (dict(engine="sparse", engine_options={"pes": 5000}), "pes=5000 is outside [1, 4096]"),
    (dict(engine="sparse", engine_options={"pes": 2.5}), "pes=2.5 is not a whole number in [1, 4096]"),
    (dict(engine="sparse", engine_options={"pes": True}), "pes=True is not a whole number"),
    (dict(engine="sparse", engine_options={"index_bits": 17}), "index_bits=17 is outside [1, 16]: EIE uses 4 or 5"),
    (dict(engine="bitserial", engine_options={"lanes": 0}), "engine bitserial: lanes=0 is outside [1, 4096]"),
    (dict(engine="bitserial", engine_options={"msb_first": 2}), "msb_first=2 is outside [0, 1]"),
    (dict(engine="bitserial", engine_options={"brick_order": "rows"}),
     "brick_order='rows' is not one of datapath, stripes"),
    (dict(engine="sparse", engine_options=7), "engine_options=7 is not a mapping of option names to values"),
])
def test_bad_engines_and_options_are_one_line_errors(kw, needle):
    with pytest.raises(FxpsimError) as info:
        _layer(**kw)
    msg = str(info.value)
    assert msg.startswith("layer fc1: ") and needle in msg and "\n" not in msg


def test_switching_engine_keeps_stale_options_out():
    s = _layer().with_engine("sparse")
    with pytest.raises(FxpsimError, match="engine bitserial has no option 'index_bits'"):
        LayerConfig(**{**{f: getattr(s, f) for f in LayerConfig.__slots__}, "engine": "bitserial"})
    assert s.with_engine("bitserial").options["lanes"] == 16


@pytest.mark.parametrize("layer, needle", [
    ({"engine": "sparse", "engine_options": [["pes", 4]]}, "engine_options=[['pes', 4]] is not a JSON object"),
    ({"engine": "sparse", "engine_options": {"pes": "64"}}, "pes='64' is not a whole number"),
    ({"engine": "xnor", "engine_options": {"pool_on": 1}}, "pool_on=1 is not one of dots, bits"),
])
def test_bad_engines_in_json_are_one_line_errors(tmp_path, layer, needle):
    d = {"name": "fc1", **FMT, "acc_bits": 20, **layer}
    (tmp_path / "c.json").write_text(json.dumps({"format": "fxpsim-config", "version": 1, "layers": [d]}))
    with pytest.raises(FxpsimError) as info:
        NetworkConfig.load(tmp_path / "c.json")
    assert needle in str(info.value) and "\n" not in str(info.value)


# --- config files are read strictly: no coercion, no traceback --------------------------------

def _with_layer0(**changes) -> str:
    data = json.loads((REPORTS / "digits-cnn_acc16_act-w_wrap_config.json").read_text())
    data["layers"][0].update(changes)
    return json.dumps(data)


@pytest.mark.parametrize("changes, needle", [
    ({"a2q": "false"}, r"a2q='false' is not true or false"),
    ({"a2q": 1}, r"a2q=1 is not true or false"),
    ({"acc_bits": 16.9}, r"acc_bits=16.9 is not a whole number"),
    ({"acc_bits": True}, r"acc_bits=True is not a whole number"),
    ({"acc_bits": "sixteen"}, r"acc_bits='sixteen' is not a whole number"),
    ({"acc_bits": 10 ** 30}, r"is outside 1\.\.62"),
    ({"fmt_w": 4}, r"fmt_w=4 is not a string"),
    ({"acc_bitz": 3}, r"unknown key\(s\) 'acc_bitz'"),
])
def test_config_fields_are_never_coerced(changes, needle):
    """"a2q": "false" was read as True and acc_bits 16.9 as 16 (bool() and int() coerced them)."""
    with pytest.raises(FxpsimError, match=needle):
        NetworkConfig.from_json(_with_layer0(**changes))


@pytest.mark.parametrize("text, needle", [
    ('{"a": ' * 100000 + "1" + "}" * 100000, "nests JSON too deeply"),
    ('{"format": "fxpsim-config", "version": 1, "layers": [{"acc_bits": Infinity}]}', "holds Infinity"),
    ('{"x": ' + "9" * 5000 + "}", "a number too long"),
    ("[1, 2]", "not an fxpsim configuration"),
    ('{"format": "fxpsim-config", "version": 1, "layers": [3]}', "is not a JSON object"),
])
def test_hostile_config_text_is_one_line(text, needle):
    with pytest.raises(FxpsimError, match=needle) as err:
        NetworkConfig.from_json(text)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_config_files_that_are_not_text_or_too_big_are_refused_unread(tmp_path):
    binary = tmp_path / "c.json"
    binary.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(FxpsimError, match="not UTF-8 text"):
        NetworkConfig.load(binary)
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(MAX_CONFIG_BYTES + 1)  # sparse file: nothing is written or read
    with pytest.raises(FxpsimError, match="MiB limit"):
        NetworkConfig.load(big)
    with pytest.raises(FxpsimError, match="is not a file"):
        NetworkConfig.load(tmp_path)


def test_every_committed_config_still_loads_and_round_trips():
    for path in sorted(REPORTS.glob("*config*.json")):
        cfg = NetworkConfig.load(path)
        assert cfg.to_json() + "\n" == path.read_text()
