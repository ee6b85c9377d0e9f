"""README's "Bring your own model" (issue 15, item 6): the committed PyTorch residual CNN
(``examples/pytorch_resnet_digits.py`` made it; no torch here) imports as a float DAG equal to
onnxruntime, and README's ``fxpsim search`` / ``fxpsim eval`` lines, run as written in a
temporary folder, print every table line README shows."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from fxpsim.cli import main
from fxpsim.interop.onnx_import import import_onnx
from fxpsim.simulate import Simulator
from fxpsim.train.data import load_dataset

from .test_onnx_import import _wide_config

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "digits-resnet-torch.onnx"
SECTION = "### Bring your own model: a residual CNN from PyTorch"


def _readme_blocks() -> tuple[list[list[str]], list[list[str]]]:
    """The section's ``bash`` commands and its ``text`` output blocks, as lines."""
    text = (ROOT / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = {"bash": [], "text": []}
    for chunk in text.split("```")[1::2]:
        kind, _, body = chunk.partition("\n")
        blocks[kind].append([line for line in body.splitlines() if line.strip()])
    return blocks["bash"], blocks["text"]


def test_the_example_imports_as_a_residual_dag_equal_to_onnxruntime():
    digits = load_dataset("digits")
    imp = import_onnx(MODEL)
    assert imp.config is None and imp.model.metadata["dataset"] == "digits"
    assert imp.model.metadata["source"]["producer"].startswith("pytorch")
    net = imp.model.network
    assert [layer.kind for layer in net.layers].count("add") == 1 and net.is_dag
    ref = ort.InferenceSession(str(MODEL)).run(None, {"x": digits.x_test.astype(np.float32)})[0]
    got = net.forward(imp.model.preprocess.apply(digits.x_test))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    # wide ideal formats (logits Q16.16): onnxruntime's argmax; logits within one lsb of the float64
    # network, and of onnxruntime up to its own float32 error (measured 8.3e-6, 0.55 lsb, on this model)
    sim = Simulator(imp.model)
    res = sim.simulate(digits.x_test, _wide_config(sim), digits.y_test)
    exact = imp.model.network.astype(np.float64).forward(imp.model.preprocess.apply(digits.x_test).astype(np.float64))
    assert np.array_equal(res.predictions, ref.argmax(1))
    assert np.abs(res.logits - exact).max() <= 2.0 ** -16
    assert np.abs(res.logits - ref).max() <= 2.0 ** -16 + np.abs(ref - exact).max()


@pytest.mark.slow
def test_readme_search_and_eval_print_what_readme_shows(tmp_path, monkeypatch, capsys):
    commands, outputs = _readme_blocks()
    assert len(commands) == 1 and len(commands[0]) == 2 and len(outputs) == 2 and min(map(len, outputs)) > 5
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for line, want in zip(commands[0], outputs):
        cmd = shlex.split(line)
        assert cmd[0] == "fxpsim" and main(cmd[1:]) == 0, line
        got = [out.rstrip() for out in capsys.readouterr().out.splitlines()]
        missing = [w for w in want if w.rstrip() not in got]
        assert not missing, f"{line}: README shows lines the run did not print: {missing}"
