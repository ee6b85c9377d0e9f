"""docs/QUICKSTART.md, executed, and the front-door API it uses (fxpsim.api).

The document cannot rot: every ```python block runs, in order, in one
namespace, in a temporary working directory holding a link to ``models/``
(so the files it writes land there); a ```text block right after a python
block is that block's printed output. In ```sh and ```console blocks every
command line (after an optional ``$ ``) that starts with ``fxpsim `` runs
through ``fxpsim.cli.main`` and must exit 0; in a console block the lines
after a command are its output. Any other command must be one of
:data:`NOT_RUN` (installation). An output line ``...`` stands for any
number of lines. ``python tests/test_quickstart.py --update`` rewrites the
outputs that no longer match with what the code prints now (trim them with
``...`` by hand afterwards).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fxpsim
from fxpsim.api import LoadedModel, calibration_split, model_dataset
from fxpsim.cli import main
from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.errors import FxpsimError
from fxpsim.modelfile import DEFAULT_MODEL, load_model
from fxpsim.simulate import Evaluator, Simulator

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "QUICKSTART.md"
NOT_RUN = ("pip install ", "pytest ", "python -m pytest ")
"""Shell lines the document may show without this test running them (set-up)."""
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass
class Block:
    lang: str
    lines: list[str]
    start: int  # line index of the opening fence
    end: int  # line index of the closing fence


@dataclass
class Step:
    """One thing the document does: python code or one fxpsim command, and the output it shows."""

    kind: str  # "python" | "cli"
    code: str
    expected: list[str] | None  # None: the document shows no output
    where: str
    block: Block
    output_block: Block | None = None


def parse_blocks(text: str) -> list[Block]:
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")), None)
        assert j is not None, f"QUICKSTART.md:{i + 1}: a code block is not closed"
        blocks.append(Block(m.group(1), lines[i + 1:j], i, j))
        i = j + 1
    return blocks


def steps(text: str) -> list[Step]:
    blocks, out = parse_blocks(text), []
    lines = text.splitlines()
    for n, b in enumerate(blocks):
        where = f"QUICKSTART.md:{b.start + 1}"
        if b.lang == "python":
            nxt = blocks[n + 1] if n + 1 < len(blocks) else None
            follows = nxt is not None and nxt.lang == "text" and not any(
                line.strip() for line in lines[b.end + 1:nxt.start])
            out.append(Step("python", "\n".join(b.lines), nxt.lines if follows else None, where, b,
                            nxt if follows else None))
        elif b.lang in ("sh", "console", "bash"):
            for k, line in enumerate(b.lines):
                cmd = line[2:] if line.startswith("$ ") else line if b.lang != "console" else None
                if cmd is None or not cmd.strip() or cmd.lstrip().startswith("#"):
                    continue
                if cmd.startswith("fxpsim "):
                    expected = None
                    if b.lang == "console":
                        rest = b.lines[k + 1:]
                        stop = next((i for i, ln in enumerate(rest) if ln.startswith("$ ")), len(rest))
                        expected = rest[:stop]
                    out.append(Step("cli", cmd, expected, f"QUICKSTART.md:{b.start + k + 2}", b))
                else:
                    assert cmd.startswith(NOT_RUN), (f"QUICKSTART.md:{b.start + k + 2}: {cmd!r} is neither an "
                                                     f"fxpsim command nor set-up ({', '.join(NOT_RUN)})")
        else:
            assert b.lang == "text", f"{where}: code block language {b.lang!r}: use python, sh, console or text"
    return out


def lines_match(expected: list[str], actual: list[str]) -> bool:
    """``expected`` equals ``actual`` line by line (trailing spaces ignored); ``...`` matches any lines."""
    exp = _trim(expected)
    act = _trim(actual)
    memo: dict = {}

    def match(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(exp):
                memo[i, j] = j == len(act)
            elif exp[i] == "...":
                memo[i, j] = any(match(i + 1, k) for k in range(j, len(act) + 1))
            else:
                memo[i, j] = j < len(act) and exp[i] == act[j] and match(i + 1, j + 1)
        return memo[i, j]

    return match(0, 0)


def _trim(lines: list[str]) -> list[str]:
    out = [ln.rstrip() for ln in lines]
    while out and not out[-1]:
        out.pop()
    return out


def run_step(step: Step, namespace: dict) -> list[str]:
    """Run one step in the current directory; its printed lines."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if step.kind == "python":
            exec(compile(step.code, step.where, "exec"), namespace)  # noqa: S102 - our own document
        else:
            argv = shlex.split(step.code, comments=True)[1:]
            rc = main(argv)
            assert rc == 0, f"{step.where}: `{step.code}` exited {rc}:\n{buf.getvalue()}"
    return buf.getvalue().splitlines()


def workdir(path: Path) -> Path:
    """A working directory like a checkout's root: ``models/`` linked in, nothing else."""
    (path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    return path


def run_document(text: str, cwd: Path):
    """Every step of the document, in order: yields (step, printed lines)."""
    namespace: dict = {"__name__": "__quickstart__"}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        for step in steps(text):
            yield step, run_step(step, namespace)
    finally:
        os.chdir(old)


# --- the document --------------------------------------------------------------------------------
def test_quickstart_runs_and_prints_what_it_shows(tmp_path):
    text = QUICKSTART.read_text(encoding="utf-8")
    ran = {"python": 0, "cli": 0}
    for step, printed in run_document(text, workdir(tmp_path)):
        ran[step.kind] += 1
        if step.expected is not None:
            assert lines_match(step.expected, printed), (
                f"{step.where}: the output shown is not what the code prints now (run `python "
                f"tests/test_quickstart.py --update`):\n" + "\n".join(printed))
    assert ran["python"] >= 8 and ran["cli"] >= 2, ran
    assert (tmp_path / "my_config.json").is_file()  # the document saves its config and re-runs it


def test_document_parser():
    doc = "\n".join(["```python", "print(1)", "```", "", "```text", "1", "```", "prose", "```console",
                     "$ fxpsim format Q4.12  # a comment", "range", "$ fxpsim format Q1.7", "```", "```sh",
                     "pip install -e .", "fxpsim eval", "```"])
    s = steps(doc)
    assert [(x.kind, x.code, x.expected) for x in s] == [
        ("python", "print(1)", ["1"]), ("cli", "fxpsim format Q4.12  # a comment", ["range"]),
        ("cli", "fxpsim format Q1.7", []), ("cli", "fxpsim eval", None)]
    with pytest.raises(AssertionError, match="neither an fxpsim command"):
        steps("```sh\nrm -rf reports\n```")
    with pytest.raises(AssertionError, match="language"):
        steps("```js\nx\n```")
    assert lines_match(["a", "...", "d"], ["a", "b", "c", "d  "])
    assert lines_match(["a", "..."], ["a"])
    assert not lines_match(["a", "...", "d"], ["a", "b"])
    assert not lines_match(["a"], ["a", "b"])


# --- the API -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    return fxpsim.load()


@pytest.fixture(scope="module")
def cfg(cnn):
    return fxpsim.Config.uniform(cnn, fmt_w="Q2.6", fmt_x="Q5.5", acc_bits=16, overflow="clip")


def test_load_default_is_the_shipped_cnn_and_loads_its_data_lazily():
    m = fxpsim.load()
    assert m.path == DEFAULT_MODEL
    assert "data" not in m.__dict__  # nothing read until asked
    ref = load_model(DEFAULT_MODEL)
    assert m.metadata == ref.metadata and m.network.spec() == ref.network.spec()
    assert m.layers == Simulator(ref).names == ["conv1", "conv2", "fc1", "fc2"]
    data = m.data
    assert data.split == ref.metadata["split"] and len(data.y_test) == ref.metadata["n_test"]
    assert m.data is data


def test_load_explicit_path_and_its_errors(tmp_path):
    m = fxpsim.load(ROOT / "models" / "digits-mlp.npz")
    assert m.layers == ["fc1", "fc2", "fc3"] and "digits-mlp.npz" in repr(m)
    with pytest.raises(FxpsimError, match="is not a file"):
        fxpsim.load(tmp_path / "none.npz")
    with pytest.raises(FxpsimError, match="seed=-1"):
        fxpsim.load(seed=-1)


def test_data_and_calibration_are_the_clis():
    """The library versions of cli/common's load_model_and_data and calibration_set give its arrays."""
    from fxpsim.cli.common import calibration_set, load_model_and_data

    class Args:
        model, data_dir = None, None

    _, model, data = load_model_and_data(Args)
    mine = model_dataset(model)
    np.testing.assert_array_equal(mine.x_test, data.x_test)
    for samples, seed in ((None, 0), (50, 0), (50, 3), (10_000, 0)):
        x, y = calibration_split(model, mine, samples, seed)
        x2, y2 = calibration_set(model, data, samples, seed)
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_config_uniform_has_one_layer_per_compute_layer(cnn):
    c = fxpsim.Config.uniform(cnn, fmt_w="Q1.7", fmt_x="Q4.12", acc_bits=24, overflow="clip")
    assert isinstance(c, NetworkConfig) and isinstance(c, fxpsim.Config)
    assert c.names == cnn.layers
    assert all(layer == LayerConfig(layer.name, "Q1.7", "Q4.12", "Q4.12", 24, "clip") for layer in c)
    assert cnn.config_uniform("Q1.7", "Q4.12", acc_bits=24, overflow="clip") == c
    assert fxpsim.Config.uniform(cnn.model, "Q1.7", "Q4.12", acc_bits=24, overflow="clip") == c
    assert fxpsim.Config.uniform(["a", "b"], "Q1.7", "Q4.4", "Q8.0").names == ["a", "b"]
    d = fxpsim.Config.uniform(cnn, "Q1.7", "Q4.4")
    assert d[0].acc_bits == LayerConfig("x", "Q1.7", "Q4.4", "Q4.4").acc_bits and d[0].overflow.value == "wrap"
    assert fxpsim.Config.from_json(c.to_json()) == c
    with pytest.raises(FxpsimError, match="not instantiated"):
        fxpsim.Config()
    with pytest.raises(FxpsimError, match="is not a model"):
        fxpsim.Config.uniform(3, "Q1.7", "Q4.4")
    with pytest.raises(FxpsimError, match="bad format"):
        fxpsim.Config.uniform(cnn, "Q1.x", "Q4.4")


def test_simulate_equals_the_evaluator_and_the_cli(cnn, cfg, tmp_path, capsys):
    r = cnn.simulate(cfg)
    data = cnn.data
    ev = Evaluator(Simulator(load_model(DEFAULT_MODEL)), data.x_test, data.y_test)
    assert r.accuracy == ev.accuracy(cfg) and r.float_accuracy == ev.float_accuracy
    assert r.images == len(data.y_test)
    cfg.save(tmp_path / "c.json")
    assert main(["eval", "--config", str(tmp_path / "c.json")]) == 0
    assert f"fixed-point accuracy {r.accuracy * 100:.2f} %" in capsys.readouterr().out
    assert cnn.simulate(tmp_path / "c.json").accuracy == r.accuracy  # a path is loaded
    few = cnn.simulate(cfg, samples=40)
    assert few.images == 40
    np.testing.assert_array_equal(few.raw.logits, r.raw.logits[:40])


def test_layers_table_is_the_config_beside_the_stats(cnn, cfg):
    r = cnn.simulate(cfg, samples=100)
    t = r.layers
    assert list(t["layer"]) == cnn.layers
    stats, table = r.raw.stats_table(), cfg.table()
    assert list(t.columns) == list(table.columns) + list(stats.columns[1:])
    pd.testing.assert_frame_equal(t[stats.columns], stats)
    pd.testing.assert_frame_equal(t[table.columns], table)
    assert (t["max_abs_acc_lsb"] == [s.max_abs_acc for s in r.raw.layer_stats]).all()
    assert "overflow_count=" in repr(r)


def test_layers_csv_round_trip(cnn, cfg, tmp_path):
    r = cnn.simulate(cfg, samples=100)
    path = r.to_csv(tmp_path / "layers.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == list(r.layers.columns)
    for col in r.layers.columns:
        if pd.api.types.is_float_dtype(r.layers[col]):
            np.testing.assert_allclose(back[col], r.layers[col], rtol=5e-6)  # %.6g
        else:
            assert list(back[col]) == list(r.layers[col]), col
    assert path.read_bytes() == r.to_csv(tmp_path / "again.csv").read_bytes()


def test_simulate_on_another_engine_and_bad_arguments(cnn, cfg):
    dense = cnn.simulate(cfg, samples=30)
    sparse = cnn.simulate(cfg, samples=30, engine="sparse", pes=4)
    assert list(sparse.layers["engine"]) == ["sparse"] * 4
    np.testing.assert_array_equal(sparse.raw.logits, dense.raw.logits)  # DESIGN: sparse == dense
    prefix = cnn.simulate(cfg, samples=30, prefix_stats=True)
    assert (prefix.layers["max_abs_prefix_lsb"] >= 0).all()
    for call, match in [(lambda: cnn.simulate(cfg, samples=0), "samples=0"),
                        (lambda: cnn.simulate(cfg, samples=2.5), "samples=2.5"),
                        (lambda: cnn.simulate(cfg, pes=4), "need an engine"),
                        (lambda: cnn.simulate("none.json"), "is not a file"),
                        (lambda: cnn.simulate(3), "is not a NetworkConfig"),
                        (lambda: fxpsim.load(ROOT / "models" / "digits-mlp.npz").simulate(cfg), "3 compute"),
                        (lambda: cnn.search(overflow="ideal"), "overflow mode 'ideal'"),
                        (lambda: cnn.search(constraint="none"), "unknown constraint")]:
        with pytest.raises(FxpsimError, match=match):
            call()


def test_search_equals_the_clis(cnn, tmp_path):
    s = cnn.search(acc_bits=16, constraint="act-y", overflow="clip", test_samples=100)
    assert main(["search", "--acc-bits", "16", "--constraint", "act-y", "--overflow", "clip", "--out",
                 str(tmp_path), "--no-progress"]) == 0
    assert NetworkConfig.load(tmp_path / "digits-cnn_acc16_act-y_clip_config.json") == s.config
    cli = pd.read_csv(tmp_path / "digits-cnn_acc16_act-y_clip.csv")
    assert list(cli["weights"]) == list(s.table["weights"]) and list(cli["data"]) == list(s.table["data"])
    assert s.test.images == 100 and s.test.config == s.config
    np.testing.assert_array_equal(s.test.raw.logits, cnn.simulate(s.config, 100).raw.logits)


def test_summary_names_every_layer_with_its_integer_bits(cnn):
    t = cnn.summary(samples=60)
    assert list(t["layer"]) == cnn.layers
    assert list(t["fan_in"]) == [s.fan_in for s in cnn.simulator.stages]
    assert (2.0 ** (t["int_bits_w"] - 1) > t["max_abs_w"]).all()  # the sign bit counted in int_bits
    assert (2.0 ** (t["int_bits_w"] - 2) <= t["max_abs_w"]).all()  # and no bit more


def test_import_fxpsim_stays_light():
    """The front door loads on first use: `import fxpsim` (every CLI start) pays for no pandas/simulator."""
    code = ("import sys, fxpsim; assert 'pandas' not in sys.modules and 'fxpsim.api' not in sys.modules; "
            "assert fxpsim.load is __import__('fxpsim.api').api.load; "
            "print(sorted(set(fxpsim.__all__) - set(dir(fxpsim))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# --- regenerating the outputs shown ---------------------------------------------------------------
def update(path: Path = QUICKSTART) -> int:
    """Rewrite the output blocks that no longer match what the code prints; returns how many."""
    import tempfile

    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    edits = []  # (first line, last line exclusive, new lines)
    console: dict[int, list[str]] = {}  # block start -> the rebuilt block body
    changed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for step, printed in run_document(text, workdir(Path(tmp))):
            if step.kind == "python" and step.output_block is not None:
                if not lines_match(step.expected, printed):
                    b = step.output_block
                    edits.append((b.start + 1, b.end, _trim(printed)))
                    changed += 1
            elif step.kind == "cli" and step.block.lang == "console":
                body = console.setdefault(step.block.start, [])
                keep = step.expected if lines_match(step.expected, printed) else _trim(printed)
                changed += keep is not step.expected
                body += [f"$ {step.code}"] + list(keep)
    for start, body in console.items():
        end = next(k for k in range(start + 1, len(lines)) if lines[k].startswith("```"))
        edits.append((start + 1, end, body))
    for first, last, new in sorted(edits, reverse=True):
        lines[first:last] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return changed


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_quickstart.py --update")
    print(f"{update()} output block(s) rewritten in {QUICKSTART}")
