"""The bit-packed BC / BNN / TWN MNIST models shipped in ``models/binary/`` (issue 19, item 5): each
loads through the one model-file reader, stores 1 bit per binary and 2 per ternary weight, and is the
size and (with MNIST) the test error that models/README.md's binary table states; README names only
files that exist."""

import re
from pathlib import Path

import numpy as np
import pytest

from fxpsim.binary.modelpack import PACKING
from fxpsim.binary.packing import n_words
from fxpsim.binary.stages import bnn_config
from fxpsim.config import NetworkConfig
from fxpsim.modelfile import load_model
from fxpsim.simulate import Simulator
from fxpsim.train.data import load_dataset
from fxpsim.train.trainer import evaluate

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "models" / "binary"
ROW = re.compile(r"^\| `binary/(?P<file>[^`]+\.npz)` \| (?P<method>\w+) \| .*? \| (?P<kib>[0-9]+) KiB \| "
                 r"(?P<err>[0-9.]+) % \| (?P<int>[0-9.]+ %|) ?\|", re.M)


def _shipped() -> list[str]:
    """The MNIST models in models/binary/, less the float baselines ``reproduce`` also writes there
    (``*-float.npz``, git-ignored) and the digits ones README's quick ``fxpsim binary`` line makes."""
    return sorted(p.name for p in BINARY.glob("mnist-*.npz") if not p.name.endswith("-float.npz"))


def _rows() -> dict[str, dict]:
    return {m["file"]: m.groupdict() for m in ROW.finditer((ROOT / "models" / "README.md").read_text())}


def test_the_table_lists_every_shipped_file_and_readme_names_only_shipped_ones():
    shipped = _shipped()
    assert shipped and sorted(_rows()) == shipped
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"models/binary/([\w.-]+\.npz)", readme))
    assert named and named <= set(shipped)
    configs = set(re.findall(r"models/binary/([\w.-]+_config\.json)", readme))
    assert configs and all((BINARY / c).is_file() for c in configs)
    for name, kib in re.findall(r"models/binary/([\w.-]+\.npz)[^()]{0,80}\(([0-9]+) KiB", readme):
        assert int(kib) == round((BINARY / name).stat().st_size / 1024), name


@pytest.mark.parametrize("name", _shipped())
def test_shipped_model_is_packed_and_its_stated_size(name):
    row = _rows()[name]
    path = BINARY / name
    model = load_model(path)  # the one reader, with its checks
    assert round(path.stat().st_size / 1024) == int(row["kib"])
    layers = [(i, layer) for i, layer in enumerate(model.network.layers) if hasattr(layer, "codes")]
    assert layers and all(layer.method == row["method"] for _, layer in layers)
    with np.load(path) as z:
        assert not any(n.endswith(".W") and n.startswith("state/") and int(n[6:].split(".")[0]) in dict(layers)
                       for n in z.files)
        for i, layer in layers:
            words = z[f"packed/{i}.W"]
            per = 2 if PACKING[layer.method] == "ternary" else 1
            assert words.dtype == np.uint64 and len(words) == per * n_words(layer.params["W"].size)


def test_shipped_models_reproduce_their_stated_test_error(mnist_dir):
    rows = _rows()
    data = load_dataset("mnist", mnist_dir)
    for name, row in rows.items():
        model = load_model(BINARY / name)
        _, acc = evaluate(model.network, model.preprocess.apply(data.x_test), data.y_test)
        assert f"{100 - 100 * acc:.2f}" == row["err"], name
        if row["int"]:  # the BNN: the integer run on engine xnor, the default config and the shipped one
            sim = Simulator(model)
            configs = [bnn_config(sim.stages)] + [NetworkConfig.load(p) for p in
                                                  sorted(BINARY.glob(f"{Path(name).stem}*config.json"))]
            assert len(configs) == 2
            for cfg in configs:  # a compiled plan: the bits of simulate, without its float reference
                wrong = np.count_nonzero(sim.compile(cfg, max_batch=1000)(data.x_test).predictions != data.y_test)
                assert f"{100 * wrong / len(data.y_test):.2f} %" == row["int"], name
