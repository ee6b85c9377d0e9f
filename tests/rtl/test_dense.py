"""fxp_dense (fxpsim/rtl) on the first layer of the shipped digits MLP, from `fxpsim export` files.

The config (8-bit formats from a profile, a 16-bit saturating accumulator, so that many additions
overflow) is exported with `fxpsim export --vectors 100`; Verilator builds fxp_dense (12 lanes, so
the last group of the 128 neurons is partial) with the manifest's parameters, $readmemh reads the
exported weights and biases, and the testbench streams each image's inputs and compares every
output, accumulator and per-image overflow count.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fxpsim.cli import main
from fxpsim.interop.vectors import read_manifest, read_mem
from fxpsim.modelfile import load_model
from fxpsim.qformat import QFormat
from fxpsim.simulate import Simulator, config_from_profile, profile
from fxpsim.train.data import load_dataset

from .cocotb_run import build_and_test, require_verilator

MODEL = Path(__file__).resolve().parents[2] / "models" / "digits-mlp.npz"
IMAGES = 100
LANES = 12


def _testbench_spec(out: Path, layer: dict) -> dict:
    """The layer's exported inputs, outputs, accumulators and counts per image, read back with fxpsim's
    readers, for dense_tb (which imports nothing of fxpsim)."""
    files, k, n = layer["files"], layer["shape"]["K"], layer["shape"]["N"]
    x, y, acc = (read_mem(out / files[key]["mem"], QFormat.parse(files[key]["format"])).tolist()
                 for key in ("x", "y", "acc"))
    with open(out / files["stats"], newline="") as fh:
        stats = list(csv.DictReader(fh))
    assert len(stats) == IMAGES and len(x) == IMAGES * k and len(y) == len(acc) == IMAGES * n
    images = [{"x": x[i * k:(i + 1) * k], "y": y[i * n:(i + 1) * n], "acc": acc[i * n:(i + 1) * n],
               "counts": [int(s[c]) for c in ("overflow_count", "outputs_affected", "cast_overflows")]}
              for i, s in enumerate(stats)]
    params = layer["rtl_parameters"]
    return {"K": k, "N": n, "P": LANES, "W_X": params["W_X"], "Y_SIGNED": params["Y_SIGNED"], "images": images}


def _config(path: Path) -> Path:
    model = load_model(MODEL)
    data = load_dataset("digits", **model.metadata["split"])
    sim = Simulator(model)
    config = config_from_profile(profile(sim, data.x_train[:300]), weight_bits=8, data_bits=8, acc_bits=16,
                                 overflow="clip")
    return config.save(path)


def test_dense_layer_matches_export(tmp_path, monkeypatch):
    require_verilator()
    out = tmp_path / "vectors"
    assert main(["export", str(MODEL), "--config", str(_config(tmp_path / "cfg.json")),
                 "--vectors", str(IMAGES), "--out", str(out)]) == 0
    layer = read_manifest(out)["layers"][0]
    assert layer["kind"] == "dense" and layer["totals"]["overflow_count"] > 0
    files = layer["files"]
    params = {**layer["rtl_parameters"], "K": layer["shape"]["K"], "N": layer["shape"]["N"], "P": LANES,
              "W_FILE": f'"{out / files["w"]["mem"]}"', "B_FILE": f'"{out / files["b"]["mem"]}"'}
    spec, result = tmp_path / "dense.json", tmp_path / "result.json"
    spec.write_text(json.dumps(_testbench_spec(out, layer)))
    times = build_and_test(monkeypatch, sorted((out / "rtl").glob("*.v")), "fxp_dense", tmp_path / "build",
                           "dense_tb", parameters=params,
                           extra_env={"FXPSIM_DENSE": spec, "FXPSIM_DENSE_RESULT": result})
    got = json.loads(result.read_text())
    print(f"dense {layer['name']}: {got['images']} images, {got['outputs']} outputs, {got['macs']} MACs, "
          f"{layer['totals']['overflow_count']} overflows; build {times['build_seconds']:.1f} s, "
          f"run {times['run_seconds']:.1f} s")
    assert got["mismatches"] == 0, got["first"]
    assert got["images"] == IMAGES and got["outputs"] == IMAGES * layer["shape"]["N"]
