"""Golden vectors (fxpsim.interop.vectors, ``fxpsim export --vectors``): files that parse back to
the same raw values, word widths and two's complement at the edges, the manifest, the C++ header,
byte-identical repeats, and one-line refusals."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxpsim import __version__
from fxpsim.cli import main
from fxpsim.config import NetworkConfig
from fxpsim.datapath import reference
from fxpsim.errors import FxpsimError
from fxpsim.interop import vectors as V
from fxpsim.modelfile import load_model
from fxpsim.qformat import Overflow, QFormat, Rounding, dequantize
from fxpsim.simulate import Simulator, config_from_profile, profile
from fxpsim.train.data import load_dataset

from strategies import qformat_st, raw_array_st

from .test_apfixed import ap_types_dir

MODELS = Path(__file__).resolve().parents[2] / "models"
MLP, CNN = MODELS / "digits-mlp.npz", MODELS / "digits-cnn.npz"
IMAGES = 6


def _setup(path: Path):
    model = load_model(path)
    data = load_dataset("digits", **model.metadata["split"])
    config = config_from_profile(profile(Simulator(model), data.x_train[:100]), weight_bits=8, data_bits=8,
                                 acc_bits=16, overflow="clip")
    return model, data, config


@pytest.fixture(scope="module")
def mlp():
    return _setup(MLP)


@pytest.fixture(scope="module")
def exported(mlp, tmp_path_factory):
    """The MLP's first layer with the issue-16 knobs (a 12-bit accumulator 2 fraction bits short of
    FL_w + FL_x, cast products, wrapping output, an 8-bit bias with one more fraction bit), the
    others as profiled, exported by the CLI."""
    model, data, config = mlp
    fl_acc = config[0].frac_acc - 2
    config = config.with_layer(0, acc_bits=12, frac_acc=fl_acc, product="cast", output_overflow="wrap",
                               fmt_bias=QFormat.from_width(8, 8 - (fl_acc + 1)))
    root = tmp_path_factory.mktemp("vectors")
    cfg = config.save(root / "cfg.json")
    assert main(["export", str(MLP), "--config", str(cfg), "--vectors", str(IMAGES),
                 "--out", str(root / "a")]) == 0
    layers = V.golden_vectors(model, config, data.x_test[:IMAGES])
    return root, config, layers, V.read_manifest(root / "a")


# ----------------------------------------------------------------- words

def test_word_digits_and_edges():
    assert [V.word_digits(w) for w in (1, 4, 5, 8, 9, 16, 62)] == [1, 1, 2, 2, 3, 4, 16]
    cases = [("Q1.7", [-128, 127, -1, 0], ["80", "7f", "ff", "00"]),
             ("Q2.1", [-4, -1, 3], ["4", "7", "3"]),  # 3 bits in one digit: the pad bit is zero
             ("Q1.0", [-1, 0], ["1", "0"]),
             ("UQ8.0", [0, 255], ["00", "ff"]),
             ("Q31.31", [-(1 << 61), (1 << 61) - 1], ["2000000000000000", "1fffffffffffffff"])]
    for fmt, raw, words in cases:
        fmt = QFormat.parse(fmt)
        assert V.mem_text(np.array(raw), fmt).splitlines() == words
        np.testing.assert_array_equal(V.parse_mem(V.mem_text(np.array(raw), fmt), fmt), raw)


@given(st.data())
def test_mem_and_coe_round_trip(data):
    fmt = data.draw(qformat_st())
    raw = data.draw(raw_array_st(fmt, (data.draw(st.integers(0, 40)),)))
    text = V.mem_text(raw, fmt)
    assert all(len(line) == V.word_digits(fmt.width) for line in text.splitlines())
    np.testing.assert_array_equal(V.parse_mem(text, fmt), raw)
    np.testing.assert_array_equal(V.parse_coe(V.coe_text(raw, fmt, "a\nb"), fmt), raw)


def test_bad_words_are_one_line():
    fmt = QFormat.parse("Q2.1")
    for text in ("8\n", "g\n", "07\n"):  # a bit above the width, not hex, too many digits
        with pytest.raises(FxpsimError, match="word 0") as exc:
            V.parse_mem(text, fmt)
        assert "\n" not in str(exc.value)
    with pytest.raises(FxpsimError, match="raw values"):
        V.mem_text(np.array([4]), fmt)  # outside Q2.1
    with pytest.raises(FxpsimError, match="not a radix-16 .coe"):
        V.parse_coe("memory_initialization_vector=1;", fmt)


def test_ap_types():
    assert V.ap_type(QFormat.parse("Q4.12")) == "ap_fixed<16, 4>"
    assert V.ap_type(QFormat.parse("UQ8.0"), Rounding.NEAREST, Overflow.CLIP) \
        == "ap_ufixed<8, 8, AP_RND_INF, AP_SAT>"
    assert V.ap_type(QFormat.parse("Q-2.10"), Rounding.NEAREST_EVEN, Overflow.WRAP) \
        == "ap_fixed<8, -2, AP_RND_CONV, AP_WRAP>"


# ----------------------------------------------------------------- the export

def test_files_parse_back(exported):
    root, config, layers, manifest = exported
    out = root / "a"
    assert [e["name"] for e in manifest["layers"]] == [lv.name for lv in layers] == config.names
    for entry, lv in zip(manifest["layers"], layers):
        files = entry["files"]
        for key, want in (("w", lv.w_words), ("b", lv.b), ("x", lv.x), ("y", lv.y), ("acc", lv.acc)):
            fmt = QFormat.parse(files[key]["format"])
            got = V.read_mem(out / files[key]["mem"], fmt)
            np.testing.assert_array_equal(got, np.asarray(want).reshape(-1))
            assert files[key]["words"] == got.size and files[key]["width"] == fmt.width
            if "coe" in files[key]:
                np.testing.assert_array_equal(V.parse_coe((out / files[key]["coe"]).read_text(), fmt), got)
        # dense word n*K + k is w[k][n]
        k, n = entry["shape"]["K"], entry["shape"]["N"]
        w = V.read_mem(out / files["w"]["mem"], lv.cfg.fmt_w)
        assert w[1 * k + 2] == lv.w[2, 1] and w[(n - 1) * k] == lv.w[0, n - 1]
        stats = (out / files["stats"]).read_text().splitlines()
        assert stats[0] == "image,additions,overflow_count,outputs_affected,cast_overflows,max_abs_acc"
        for line, s in zip(stats[1:], lv.stats):
            want = [s.overflow_count, s.outputs_affected, s.cast_overflows]
            assert [int(v) for v in line.split(",")[2:5]] == want
        header = (out / files["header"]).read_text()
        arrays = dict(re.findall(r"static const \w+ (\w+)\[\d+\] = \{([^}]*)\}", header))
        for name, want in (("w", lv.w_words.reshape(-1)), ("b", lv.b)):
            np.testing.assert_array_equal([int(v) for v in arrays[f"{lv.name}_{name}_raw"].split(",")], want)
    assert sum(s.cast_overflows for s in layers[0].stats) > 0  # the knobs are at work
    assert sum(s.overflow_count for s in layers[0].stats) > 0


def test_vectors_are_the_simulation(exported, mlp):
    """The expected values are the simulator's (last layer = its logits) and the Python-int twin's."""
    _, config, layers, _ = exported
    model, data, _ = mlp
    images = data.x_test[:IMAGES]
    twin = V.golden_vectors(model, config, images, backend=reference)
    for a, b in zip(layers, twin):
        for key in ("x", "y", "acc", "w", "b"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert a.stats == b.stats
    logits = Simulator(model).simulate(images, config).logits
    np.testing.assert_array_equal(dequantize(layers[-1].y, config[-1].fmt_y), logits)


def test_manifest(exported):
    root, config, layers, manifest = exported
    out = root / "a"
    assert manifest["format"] == "fxpsim-vectors" and manifest["version"] == 1
    assert manifest["fxpsim_version"] == __version__
    assert manifest["model"] == {"file": MLP.name, "sha256": hashlib.sha256(MLP.read_bytes()).hexdigest(),
                                 "architecture": "fc128-relu-fc64-relu-fc10"}
    assert manifest["inputs"]["images"] == IMAGES and manifest["inputs"]["split"] == "test"
    first = manifest["layers"][0]
    cfg = config[0]
    assert first["config"] == cfg.to_dict() and "fmt_bias" in first["config"]
    assert (first["product"], first["output_overflow"], first["order"], first["overflow"]) == \
        ("cast", "wrap", "sequential", "clip")
    assert (first["bw_acc"], first["fl_acc"], first["shift"]) == (12, cfg.frac_acc, cfg.shift)
    assert first["formats"] == {"w": str(cfg.fmt_w), "x": str(cfg.fmt_x), "y": str(cfg.fmt_y),
                                "bias": str(cfg.fmt_acc), "acc": str(cfg.fmt_acc)}
    assert first["shape"] == {"K": 64, "N": 128} and first["activation"] == "relu"
    params = first["rtl_parameters"]
    assert params == V.rtl_parameters(cfg, True)
    assert [params[k] for k in ("PRODUCT_CAST", "PRODUCT_SHIFT", "OUT_WRAP", "OVERFLOW")] == [1, 2, 1, 1]
    assert first["totals"]["overflow_count"] == sum(s.overflow_count for s in layers[0].stats)
    for entry in manifest["layers"]:
        for f in entry["files"].values():
            for name in ([f] if isinstance(f, str) else [f["mem"], *([f["coe"]] if "coe" in f else [])]):
                assert (out / name).is_file(), name
    assert manifest["rtl"] == [f"rtl/{p.name}" for p in V.rtl_sources()] + ["rtl/README.md"]
    for src in V.rtl_sources():
        assert (out / "rtl" / src.name).read_bytes() == src.read_bytes()


def test_byte_identical_twice(exported):
    root, _, _, _ = exported
    args = ["export", str(MLP), "--config", str(root / "cfg.json"), "--vectors", str(IMAGES), "--out"]
    assert main(args + [str(root / "b")]) == 0
    assert main(args + [str(root / "a")]) == 0  # over the first one
    a, b = (sorted(p.relative_to(root / d) for p in (root / d).rglob("*") if p.is_file()) for d in ("a", "b"))
    assert a == b and len(a) > 20
    for rel in a:
        assert (root / "a" / rel).read_bytes() == (root / "b" / rel).read_bytes(), rel


def test_conv_model(tmp_path):
    """Conv layers: weights in (F, C, kh, kw) C order, inputs NCHW, outputs (F, OH, OW) per image."""
    model, data, config = _setup(CNN)
    V.write_vectors(tmp_path, model, config, data.x_test[:2], model_file=CNN, dataset="digits")
    manifest = V.read_manifest(tmp_path)
    conv = manifest["layers"][0]
    assert conv["kind"] == "conv2d" and conv["shape"] == {"C": 1, "H": 8, "W": 8, "F": 16, "kh": 3, "kw": 3,
                                                          "stride": 1, "padding": 1, "OH": 8, "OW": 8, "K": 9}
    lv = V.golden_vectors(model, config, data.x_test[:2])[0]
    np.testing.assert_array_equal(V.read_mem(tmp_path / "conv1.w.mem", config[0].fmt_w), lv.w.reshape(-1))
    assert lv.x.shape == (2, 1, 8, 8) and lv.y.shape == (2, 16, 8, 8)
    np.testing.assert_array_equal(V.read_mem(tmp_path / "conv1.y.mem", config[0].fmt_y), lv.y.reshape(-1))


# ----------------------------------------------------------------- the C++ header

_CHECK = r"""
#include <cstdio>
#include "{name}.h"
int main() {{
    {name}_accum_t a = 0; {name}_result_t r = 0; {name}_input_t i = 0; (void)a; (void)r; (void)i;
    for (unsigned j = 0; j < sizeof({name}_w_raw) / sizeof({name}_w_raw[0]); ++j) {{
        {name}_weight_t v;
        v.range({name}_weight_t::width - 1, 0) = {name}_w_raw[j];
        std::printf("%.17g\n", v.to_double());
    }}
    for (unsigned j = 0; j < sizeof({name}_b_raw) / sizeof({name}_b_raw[0]); ++j) {{
        {name}_bias_t v;
        v.range({name}_bias_t::width - 1, 0) = {name}_b_raw[j];
        std::printf("%.17g\n", v.to_double());
    }}
}}
"""


@pytest.mark.skipif(shutil.which("g++") is None or ap_types_dir() is None,
                    reason="needs g++ and the ap_types headers of the hls4ml wheel")
def test_header_loads_into_ap_fixed(exported, tmp_path):
    """fc3's header compiled with hls4ml's ap_fixed: each raw word loaded by .range() is its value."""
    root, config, layers, _ = exported
    lv, cfg = layers[-1], config[-1]
    (tmp_path / "check.cpp").write_text(_CHECK.format(name=lv.name))
    exe = tmp_path / "check"
    subprocess.run(["g++", "-O0", "-std=c++14", "-w", f"-I{ap_types_dir()}", f"-I{root / 'a'}",
                    str(tmp_path / "check.cpp"), "-o", str(exe)], check=True, timeout=120)
    run = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60)
    got = [float(v) for v in run.stdout.split()]
    want = np.concatenate([dequantize(lv.w_words.reshape(-1), cfg.fmt_w), dequantize(lv.b, cfg.fmt_acc)])
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------- refusals

def _refused(capsys, args) -> str:
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fxpsim export: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_refusals(exported, tmp_path, capsys):
    root = exported[0]
    cfg = str(root / "cfg.json")
    base = [str(MLP), "--config", cfg]
    assert "whole number >= 1" in _refused(capsys, base + ["--vectors", "0", "--out", str(tmp_path)])
    assert "at most 450" in _refused(capsys, base + ["--vectors", "451", "--out", str(tmp_path)])
    assert "add --out DIR" in _refused(capsys, base + ["--vectors", "3"])
    assert "add --vectors N" in _refused(capsys, base + ["--out", str(tmp_path)])
    assert "nothing to export" in _refused(capsys, base)
    (tmp_path / "file").write_text("x")
    assert "is a file" in _refused(capsys, base + ["--vectors", "3", "--out", str(tmp_path / "file")])
    config = NetworkConfig.load(cfg)
    for change, words in ((dict(rounding="stochastic"), "rounding=stochastic has no RTL"),
                          (dict(overflow="ideal"), "overflow=ideal"),
                          (dict(order="strided:2"), "order=strided:2")):
        bad = config.with_layer(1, **change).save(tmp_path / "bad.json")
        err = _refused(capsys, [str(MLP), "--config", str(bad), "--vectors", "2", "--out", str(tmp_path / "o")])
        assert "layer fc2" in err and words in err, err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_a_config_made_for_another_model_is_refused_unless_forced(exported, tmp_path, capsys):
    """export checks the config's model record like eval: a config recording other weights is refused
    before anything is written, and runs with --force."""
    from fxpsim.config import ModelRecord

    config = NetworkConfig.load(exported[0] / "cfg.json")
    other = ModelRecord("other.npz", "0" * 64, tuple((c.name, (1,)) for c in config))
    cfg = config.for_model(other).save(tmp_path / "other.json")
    args = [str(MLP), "--config", str(cfg), "--vectors", "2", "--out", str(tmp_path / "v")]
    err = _refused(capsys, args)
    assert "made for the model other.npz" in err and "--force" in err
    assert not (tmp_path / "v").exists()
    assert main(["export", *args, "--force"]) == 0
    assert "vectors: wrote" in capsys.readouterr().out and (tmp_path / "v" / "manifest.json").is_file()


def test_manifest_refusals(tmp_path):
    with pytest.raises(FxpsimError, match="not a file"):
        V.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(FxpsimError, match="not an fxpsim vectors manifest"):
        V.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(FxpsimError, match="not JSON"):
        V.read_manifest(tmp_path / "manifest.json")
