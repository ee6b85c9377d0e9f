"""The hostile-input suite (issue 14, item 7): bad CLI values and config files, refused cleanly.

Every case of :data:`CASES` must exit 2 with exactly one line on stderr (no traceback, never the
exit-70 catch-all), within :data:`SECONDS` and :data:`RSS_MIB`, leaving nothing in its output folder:
it fails in validation, before any training, search or simulation. The cases run in one child process
(:mod:`hostile_runner`) under an address-space limit (:data:`ADDRESS_SPACE`), as root without the
capability that ignores file modes (so a read-only folder is read-only). The classes:

- ``option-range``: every bounded numeric option of every command, stepped outside its range
  (below, above, NaN, inf, not a number), generated from the parser itself;
- ``cli``: the named cases of the issue and the checks made before any work (more PEs than rows,
  ``--shift`` beyond the image, an architecture over the memory budget, read-only or file ``--out``);
- ``config``: hostile config files given to ``eval --config`` and ``stripes --config``;
- ``config-mutation``: hypothesis-generated mutations of a good config (in-process, derandomized);
- the start-up cases in subprocesses: SIGINT during the imports, no writable Numba cache, a crash
  during an import, and the exit-70 catch-all.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxpsim.cli import build_parser, main
from fxpsim.cli.common import MAX_SEED

ROOT = Path(__file__).resolve().parents[2]
MLP, CNN = str(ROOT / "models" / "digits-mlp.npz"), str(ROOT / "models" / "digits-cnn.npz")
GOOD_CONFIG = ROOT / "reports" / "digits-cnn_acc16_act-w_wrap_config.json"
SECONDS = 2.0
"""Time limit of one case (the issue's target: refused within 2 s)."""
RSS_MIB = 500.0
"""High-water resident memory of the child after all cases (the issue's target: 500 MB)."""
ADDRESS_SPACE = 2 << 30
"""RLIMIT_AS of the child: an unbounded allocation fails there instead of eating the machine."""
TESTED = ("eval", "search", "sweep", "compress", "stripes", "prune", "train", "binary", "format", "data",
          "finetune", "export", "import")

BASE = {
    "train": ["train", "--quiet", "--out", "{out}/m.npz"],
    "binary": ["binary", "--quiet", "--methods", "float", "--out", "{out}", "--model-dir", "{out}/models"],
    "eval": ["eval", MLP, "--out", "{out}"],
    "search": ["search", MLP, "--acc-bits", "16", "--no-progress", "--out", "{out}"],
    "sweep": ["sweep", MLP, "--out", "{out}"],
    "stripes": ["stripes", CNN, "--out", "{out}"],
    "prune": ["prune", MLP, "--quality", "1", "--quiet", "--out", "{out}/p.npz", "--reports", "{out}"],
    "compress": ["compress", MLP, "--quiet", "--reports", "{out}"],
    "data": ["data", "download", "mnist", "--cache-dir", "{out}"],
    "format": ["format", "Q4.12"],
    "finetune": ["finetune", CNN, "--config", str(GOOD_CONFIG), "--quiet", "--out", "{out}/m.npz"],
    "export": ["export", CNN, "--config", str(GOOD_CONFIG), "--vectors", "1", "--out", "{out}"],
    "import": ["import", "{missing}", "--out", "{out}/m.npz"],
}
"""A valid command line of each command: a case adds (or swaps in) one hostile value."""
MODES = {"prune": ("--quality", "--target-sparsity"), "search": ("--acc-bits", "--tolerance")}
"""The mode options in BASE: a case on one of them drops BASE's mode."""


# ---------------------------------------------------------------- the cases

def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _outside(bounds) -> list[str]:
    """Texts outside an option's range: each side, NaN, infinities, too long, not a number."""
    kind, lo, hi, lo_open, hi_open = bounds
    values = ["abc", "", "nan", "inf", "-inf", "1e400"]
    if kind == "int":
        values += [str(lo - 1), "1.5", "0x10", "9" * 5000]
        if hi is not None:
            values.append(str(hi + 1))
    else:
        for end, is_open, step in ((lo, lo_open, -1), (hi, hi_open, 1)):
            beyond = end if is_open else end + step * max(abs(end) / 2, 1e-3)
            if abs(beyond) < 1e300:
                values.append(repr(float(beyond)))
    return list(dict.fromkeys(values))


def _base(command: str, option: str) -> list[str]:
    base = list(BASE[command])
    mode = MODES.get(command, ())
    if option in mode:
        i = next(i for i, a in enumerate(base) if a in mode)
        del base[i:i + 2]
    return base


def option_cases() -> list[tuple[str, list[str]]]:
    """Every bounded option of every tested command, each value outside its range."""
    cases = []
    for command, sub in _subparsers().items():
        if command not in TESTED:
            continue
        for action in sub._actions:
            bounds = getattr(action.type, "bounds", None)
            if bounds is None:
                continue
            for value in _outside(bounds):
                if action.option_strings:
                    argv = _base(command, action.option_strings[-1]) + [f"{action.option_strings[-1]}={value}"]
                else:  # a positional (format's VALUEs)
                    argv = _base(command, "") + ["--", value]
                cases.append(("option-range", argv))
    return cases


S = "--sparse"
CLI_CASES = [
    # the named cases
    ["compress", MLP, "--pes", "1000000000", "--reports", "{out}"],
    ["eval", "--sparse", "--pes", "1e9", "--out", "{out}"],
    ["eval", MLP, "--sparse", "--pes", "1000000000", "--out", "{out}"],
    ["train", "--arch", "fc999999999", "--out", "{out}/m.npz"],
    ["train", "--seed", "-1", "--out", "{out}/m.npz"],
    ["search", "--seed", "-1", "--acc-bits", "16", "--out", "{out}"],
    ["train", "--shift", "1000", "--out", "{out}/m.npz"],
    ["prune", MLP, "--quality", "1e9", "--out", "{out}/p.npz", "--reports", "{out}"],
    ["train", "--momentum", "nan", "--out", "{out}/m.npz"],
    ["train", "--weight-decay", "inf", "--out", "{out}/m.npz"],
    ["prune", MLP, "--quality", "1", "--weight-decay", "inf", "--out", "{out}/p.npz", "--reports", "{out}"],
    ["search", MLP, "--acc-bits", "16", "--out", "{ro}"],
    ["search", MLP, "--tolerance", "0.01", "--out", "{ro}/reports"],
    ["sweep", MLP, "--out", "{ro}"],
    ["eval", MLP, "--config", "{cfg:other-model}", "--out", "{out}"],
    ["eval", "{tweaked}", "--config", "{cfg:recorded}", "--out", "{out}"],
    # no command, unknown ones, unknown options
    [], ["bogus"], ["evl"], ["eval", MLP, "--no-such-option"],
    # eval
    ["eval", "{missing}"], ["eval", "{out}"], ["eval", "{file}"],
    ["eval", MLP, S, "--pes", "129", "--out", "{out}"], ["eval", MLP, S, "--pes", "4097", "--out", "{out}"],
    ["eval", MLP, S, "--pes", "0"], ["eval", MLP, S, "--pes", "-64"], ["eval", MLP, S, "--pes", "64.0"],
    ["eval", MLP, S, "--index-bits", "0"], ["eval", MLP, S, "--index-bits", "17"],
    ["eval", MLP, S, "--index-bits", "four"], ["eval", MLP, "--pes", "8"], ["eval", MLP, "--prefix-stats"],
    ["eval", MLP, "--report", "--out", "{out}"], ["eval", MLP, S, "--report", "--out", "{ro}"],
    ["eval", MLP, S, "--report", "--out", "{file}"], ["eval", MLP, S, "--report", "--out", "{file}/sub"],
    ["eval", MLP, "--force"], ["eval", MLP, "--config", "{missing}"], ["eval", MLP, "--config", "{out}"],
    ["eval", MLP, "--config", "{file}"],
    # search
    *[["search", MLP, "--acc-bits", v, "--out", "{out}"] for v in ("0", "63", "70", "abc", "16.5", "-1", "")],
    *[["search", MLP, "--tolerance", v, "--out", "{out}"] for v in ("0", "1", "1.5", "-0.1", "nan", "inf", "x")],
    ["search", MLP, "--acc-bits", "16", "--tolerance", "0.01", "--out", "{out}"], ["search", MLP, "--out", "{out}"],
    ["search", MLP, "--acc-bits", "16", "--constraint", "bogus", "--out", "{out}"],
    ["search", MLP, "--acc-bits", "16", "--overflow", "ideal", "--out", "{out}"],
    ["search", MLP, "--acc-bits", "16", "--out", "{file}"], ["search", MLP, "--acc-bits", "16", "--out", "{file}/x"],
    ["search", MLP, "--acc-table", "--out", "{ro}"], ["search", "{missing}", "--acc-bits", "16", "--out", "{out}"],
    ["search", MLP, "--acc-bits", "16", "--seed", str(MAX_SEED + 1), "--out", "{out}"],
    # sweep
    *[["sweep", MLP, f"--bits={v}", "--out", "{out}"] for v in ("5:1", "1:100", "-20:0", "abc", "1:2:3", "", ":")],
    ["sweep", MLP, "--what", "bogus", "--out", "{out}"], ["sweep", MLP, "--out", "{file}"],
    ["sweep", "{missing}", "--out", "{out}"],
    # stripes
    *[["stripes", CNN, "--profile", v, "--out", "{out}"] for v in ("0", "99", "8-x", "", "8--8", "-8")],
    *[["stripes", CNN, "--weight-bits", v, "--out", "{out}"] for v in ("0", "63", "abc", "16.5")],
    *[["stripes", CNN, "--tolerance", v, "--out", "{out}"] for v in ("1", "-0.1", "nan", "abc", "0,,1",
                                                                        ",".join(f"0.0{i}" for i in range(9)))],
    ["stripes", "--shapes", "fc999999999", "--input-shape", "1x28x28", "--profile", "8", "--out", "{out}"],
    ["stripes", "--shapes", "conv99999999x99", "--input-shape", "1x28x28", "--profile", "8", "--out", "{out}"],
    ["stripes", "--shapes", "bogus-token", "--input-shape", "1x28x28", "--profile", "8", "--out", "{out}"],
    ["stripes", "--shapes", "lenet5", "--profile", "8", "--out", "{out}"],
    ["stripes", CNN, "--shapes", "lenet-caffe", "--profile", "8", "--out", "{out}"],
    ["stripes", CNN, "--input-shape", "1x28x28", "--out", "{out}"],
    ["stripes", "--shapes", "lenet5", "--input-shape", "0x28x28", "--profile", "8", "--out", "{out}"],
    ["stripes", "--shapes", "lenet-caffe", "--profile", "8", "--simulate", "--out", "{out}"],
    ["stripes", "--shapes", "lenet-caffe", "--out", "{out}"],
    *[["stripes", CNN, "--name", v, "--out", "{out}"] for v in ("../x", "", "a/b", ".hidden", "x" * 101)],
    ["stripes", CNN, "--out", "{ro}"], ["stripes", CNN, "--out", "{file}"], ["stripes", CNN, "--force", "--out", "{out}"],
    ["stripes", CNN, "--config", "{cfg:other-model}", "--out", "{out}"],
    ["stripes", "{tweaked}", "--config", "{cfg:recorded}", "--out", "{out}"],
    # compress
    *[["compress", MLP, "--pes", v, "--reports", "{out}"] for v in ("0", "129", "4097", "-1", "abc", "1e9", "")],
    *[["compress", MLP, o, v, "--reports", "{out}"] for o in ("--index-bits", "--conv-index-bits")
      for v in ("0", "17", "x")],
    *[["compress", MLP, "--clusters", v, "--reports", "{out}"] for v in ("1", "5000", "1" + "0" * 30, "-3")],
    ["compress", MLP, "--conv-clusters", "1", "--reports", "{out}"],
    ["compress", MLP, "--rank", "100000", "--reports", "{out}"], ["compress", MLP, "--rank", "64", "--reports", "{out}"],
    ["compress", MLP, "--save", "{out}/x.txt", "--reports", "{out}"],
    ["compress", MLP, "--save", "{ro}/x.npz", "--reports", "{out}"],
    ["compress", MLP, "--save", "{missing}/x.npz", "--reports", "{out}"], ["compress", MLP, "--reports", "{ro}"],
    ["compress", MLP, "--reports", "{file}"], ["compress", MLP, "--layers", "conv1", "--reports", "{out}"],
    *[["compress", MLP, "--prune", v, "--reports", "{out}"] for v in ("1.5", "-0.1", "fc9=0.5", "abc", "fc1=")],
    ["compress", "{missing}", "--reports", "{out}"],
    # prune
    ["prune", MLP, "--out", "{out}/p.npz", "--reports", "{out}"],
    ["prune", MLP, "--quality", "1", "--target-sparsity", "0.5", "--out", "{out}/p.npz", "--reports", "{out}"],
    *[["prune", MLP, "--target-sparsity", v, "--out", "{out}/p.npz", "--reports", "{out}"]
      for v in ("1.0", "-0.1", "fc9=0.5", "abc", "fc1=", "nan", "fc1=0.5,fc1")],
    ["prune", MLP, "--quality", "1", "--out", "{out}/p.txt", "--reports", "{out}"],
    ["prune", MLP, "--quality", "1", "--out", "{ro}/p.npz", "--reports", "{out}"],
    ["prune", MLP, "--quality", "1", "--out", "{out}", "--reports", "{out}"],
    ["prune", MLP, "--quality", "1", "--out", "{out}/p.npz", "--reports", "{ro}"],
    ["prune", MLP, "--quality", "1", "--layers", "conv1", "--out", "{out}/p.npz", "--reports", "{out}"],
    ["prune", "{missing}", "--quality", "1", "--out", "{out}/p.npz", "--reports", "{out}"],
    # train
    *[["train", "--arch", v, "--out", "{out}/m.npz"] for v in (
        "bogus", "", "fc0", "fc99999999999999999999", "conv999999x999-fc10", "fc10-" * 50 + "bogus",
        "fc9999999-fc9999999-fc10", "conv8x99-fc10", "maxpool99-fc10", "dropout100-fc10")],
    *[["train", o, "bogus", "--out", "{out}/m.npz"] for o in ("--dataset", "--optimizer", "--schedule", "--init",
                                                              "--preprocess", "--method")],
    ["train", "--shift", "8", "--out", "{out}/m.npz"], ["train", "--out", "{ro}/m.npz"], ["train", "--out", "{out}"],
    ["train", "--out", "{missing}/m.npz"], ["train", "--dataset", "mnist", "--data-dir", "{out}", "--out", "{out}/m.npz"],
    # binary
    *[["binary", "--arch", v, "--out", "{out}", "--model-dir", "{out}/m"] for v in ("fc999999999", "bogus", "")],
    *[["binary", "--methods", v, "--out", "{out}", "--model-dir", "{out}/m"] for v in ("bogus", "", ",", "bnn,foo")],
    *[["binary", "--report", v, "--out", "{out}", "--model-dir", "{out}/m"] for v in ("../x", "", "a/b")],
    ["binary", "--loss", "bogus", "--out", "{out}", "--model-dir", "{out}/m"],
    ["binary", "--dataset", "bogus", "--out", "{out}", "--model-dir", "{out}/m"],
    ["binary", "--shift", "8", "--out", "{out}", "--model-dir", "{out}/m"],
    ["binary", "--out", "{ro}", "--model-dir", "{out}/m"], ["binary", "--out", "{out}", "--model-dir", "{ro}"],
    ["binary", "--out", "{file}", "--model-dir", "{out}/m"],
    # format
    *[["format", v] for v in ("Q999.999", "Qabc", "", "Q4.-4", "Q0.0", "UQ0.0", "Q4.12.1", "Q" + "9" * 5000 + ".1")],
    ["format", "Q4.12", "1", "--rounding", "foo"], ["format", "Q4.12", "1", "--overflow", "ideal"],
    ["format", "Q4.12", "--", "1e999"], ["format"],
    # data
    ["data", "download", "mnist", "--cache-dir", "{ro}"], ["data", "download", "mnist", "--cache-dir", "{file}"],
    ["data", "download", "cifar"], ["data", "bogus"], ["data"],
]
"""Hand-written cases: the issue's named ones and the run-time checks made before any work."""

CONFIG_COMMANDS = (["eval", CNN, "--out", "{out}", "--config"], ["stripes", CNN, "--out", "{out}", "--config"])


def hostile_configs(good: dict, text: str, other: dict) -> dict[str, bytes]:
    """Bad config files (name -> bytes), each one thing wrong with the good config ``good``."""
    def edit(change):
        data = json.loads(text)
        change(data)
        return json.dumps(data, indent=2).encode()

    def layer(key, value):
        return edit(lambda d: d["layers"][0].__setitem__(key, value))

    out = {
        "empty": b"", "not-json": b"hello", "truncated": text[: len(text) // 2].encode(),
        "bom": b"\xef\xbb\xbf" + text.encode(), "non-utf8": text.encode() + b"\xff\xfe",
        "latin1": text.replace('"fmt_w"', '"fmt_\xe9"').encode("latin-1"),
        "nan": text.replace('"acc_bits": 16', '"acc_bits": NaN', 1).encode(),
        "infinity": text.replace('"acc_bits": 16', '"acc_bits": Infinity', 1).encode(),
        "huge-int": text.replace('"acc_bits": 16', '"acc_bits": ' + "9" * 5000, 1).encode(),
        "huge-float": text.replace('"acc_bits": 16', '"acc_bits": 1e400', 1).encode(),
        "deep-list": b"[" * 100_000, "deep-object": b'{"a":' * 50_000,
        "array": b"[]", "string": b'"config"', "null": b"null",
        "no-format": edit(lambda d: d.pop("format")), "other-format": edit(lambda d: d.update(format="fxpsim-model")),
        "version-2": edit(lambda d: d.update(version=2)), "version-true": edit(lambda d: d.update(version=True)),
        "version-text": edit(lambda d: d.update(version="1")), "no-layers": edit(lambda d: d.pop("layers")),
        "layers-empty": edit(lambda d: d.update(layers=[])), "layers-object": edit(lambda d: d.update(layers={})),
        "layers-2000": edit(lambda d: d.update(layers=d["layers"][:1] * 2000)),
        "layer-number": edit(lambda d: d["layers"].__setitem__(0, 5)),
        "no-acc-bits": edit(lambda d: d["layers"][0].pop("acc_bits")),
        "no-name": edit(lambda d: d["layers"][0].pop("name")),
        "unknown-layer-key": layer("acc_bitz", 16), "unknown-key": edit(lambda d: d.update(comment="x")),
        "layer-names": layer("name", "fc9"), "layer-count": edit(lambda d: d["layers"].pop()),
        "layer-order": edit(lambda d: d["layers"].reverse()),
        "other-model": edit(lambda d: d.update(model=other)),
        "record-file": edit(lambda d: d.update(model=dict(other, file="../x.npz"))),
        "record-sha": edit(lambda d: d.update(model=dict(other, weights_sha256="abc"))),
        "record-layers": edit(lambda d: d.update(model=dict(other, layers=[]))),
        "record-null": edit(lambda d: d.update(model=None)),
    }
    values = {
        "acc_bits": (16.9, True, "16", None, -1, 0, 63, [16], 1e3),
        "a2q": ("false", 0, None, "true"),
        "fmt_w": ("Q4.", "Q100.100", 12, "", "Q4.12x", "Q0.0", "Q40.40", None),
        "fmt_x": ("Qx", "Q-3.2", 1.5), "fmt_y": ("Q", "Q99.-99"),
        "overflow": ("saturate", 1, None, ""), "rounding": ("round", None, "NEAREST EVEN"),
        "engine": ("xnor", "gpu", 5), "engine_options": ([], "pes=64", {"lanes": 1}),
        "name": (None, 7, ["fc1"]),
    }
    for key, vals in values.items():
        for v in vals:
            out[f"{key}={json.dumps(v)}"] = layer(key, v)
    for opts in ({"pes": 0}, {"pes": "64"}, {"pes": 10**9}, {"index_bits": 99}):
        out[f"sparse{json.dumps(opts)}"] = edit(lambda d, o=opts: d["layers"][0].update(engine="sparse",
                                                                                         engine_options=o))
    return out


CONFIG_NAMES = tuple(hostile_configs({}, GOOD_CONFIG.read_text(), {"file": "x"}))
STRIPES_CONFIGS = ("empty", "not-json", "deep-list", "non-utf8", "version-2", "layers-empty", "layer-names",
                   "other-model", "record-sha", "acc_bits=16.9", "fmt_w=\"Q4.\"", "a2q=\"false\"")


def all_cases() -> list[tuple[str, str, list[str]]]:
    """(id, class, argv) of every case the child runs."""
    raw = option_cases() + [("cli", argv) for argv in CLI_CASES]
    raw += [("config", CONFIG_COMMANDS[0] + [f"{{cfg:{name}}}"]) for name in CONFIG_NAMES]
    raw += [("config", CONFIG_COMMANDS[1] + [f"{{cfg:{name}}}"]) for name in STRIPES_CONFIGS]
    raw += [("config", CONFIG_COMMANDS[0] + [f"{{cfg:{name}}}"]) for name in ("missing", "directory", "too-big")]
    seen, cases = set(), []
    for cls, argv in raw:
        key = json.dumps(argv)
        if key in seen:
            continue
        seen.add(key)
        label = " ".join(a.replace(str(ROOT) + "/", "") for a in argv)
        cases.append((f"{len(cases):03d} {label[:90]}", cls, argv))
    return cases


CASES = all_cases()


# ---------------------------------------------------------------- running them in a limited child

def _limits():
    """In the child before exec: an address-space limit, and (as root) no CAP_DAC_OVERRIDE, so a
    folder without write permission refuses writes as it would for any other user."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    if os.geteuid() == 0:
        ctypes.CDLL(None).prctl(24, 1, 0, 0, 0)  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE: exec drops it


def _materialize(tmp: Path) -> tuple[list[dict], Path]:
    from fxpsim.cli.common import model_record
    from fxpsim.config import NetworkConfig
    from fxpsim.modelfile import load_model, save_model

    ro, afile = tmp / "read-only", tmp / "a-file"
    ro.mkdir()
    afile.write_text("not a folder\n")
    cfg_dir = tmp / "configs"
    cfg_dir.mkdir()
    good = NetworkConfig.load(GOOD_CONFIG)
    other = model_record(MLP, load_model(MLP)).to_dict()
    made = hostile_configs(json.loads(GOOD_CONFIG.read_text()), GOOD_CONFIG.read_text(), other)
    files = {name: cfg_dir / f"{i:03d}.json" for i, name in enumerate([*made, "directory", "too-big", "recorded"])}
    files["missing"] = cfg_dir / "missing.json"
    for name, data in made.items():
        files[name].write_bytes(data)
    files["directory"].mkdir()
    with open(files["too-big"], "wb") as f:
        f.truncate((16 << 20) + 1)  # sparse: no disk, refused by its size unread
    good.for_model(model_record(CNN, load_model(CNN))).save(files["recorded"])
    model = load_model(CNN)
    model.network.layers[0].params["W"][0, 0, 0, 0] += 0.25
    (tmp / "tweaked").mkdir()
    tweaked = save_model(tmp / "tweaked" / "digits-cnn.npz", model)  # the CNN's name, other weights
    fill = {"{ro}": str(ro), "{file}": str(afile), "{missing}": str(tmp / "missing"), "{tweaked}": str(tweaked)}
    cases = []
    for i, (cid, _, argv) in enumerate(CASES):
        out = tmp / f"out{i:03d}"
        out.mkdir()
        words = []
        for a in argv:
            a = a.replace("{out}", str(out))
            for k, v in fill.items():
                a = a.replace(k, v)
            a = re.sub(r"\{cfg:(.*)\}", lambda m: str(files[m[1]]), a)
            words.append(a)
        cases.append({"id": cid, "argv": words, "out": str(out)})
    os.chmod(ro, 0o555)
    return cases, ro


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case's result, from one child process under :func:`_limits`."""
    tmp = tmp_path_factory.mktemp("hostile")
    cases, ro = _materialize(tmp)
    (tmp / "cases.json").write_text(json.dumps(cases))
    runner = Path(__file__).with_name("hostile_runner.py")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(runner), str(tmp / "cases.json"), str(tmp / "results.json"), "10"],
                          preexec_fn=_limits, env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp / "results.json").read_text())
    ro_probe = subprocess.run([sys.executable, "-c", f"open({str(ro / 'probe')!r}, 'w')"], preexec_fn=_limits,
                              capture_output=True)
    os.chmod(ro, 0o755)
    out["_ro_effective"] = ro_probe.returncode != 0
    out["_ro_left"] = sorted(p.name for p in ro.iterdir())
    return out


def _line(result) -> str:
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1, f"stderr has {len(lines)} lines: {result['stderr'][-2000:]}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_case_is_refused_in_one_line_before_any_work(case, results):
    cid, cls, argv = case
    r = results[cid]
    if any("{ro}" in a for a in argv) and not results["_ro_effective"]:
        pytest.skip("no read-only folder can be made here (root with CAP_DAC_OVERRIDE)")
    line = _line(r)
    assert r["rc"] == 2, f"exit {r['rc']}: {line}"
    assert "Traceback" not in r["stderr"] and line.startswith("fxpsim") and ": error: " in line, line
    assert r["seconds"] < SECONDS, f"{r['seconds']:.2f} s: {line}"
    assert r["left"] == [], f"left behind: {r['left']}"


def test_no_case_reaches_the_catch_all_and_the_limits_hold(results):
    """Exit 70 is for bugs only; the child's memory high-water stays under the target."""
    reached = [cid for cid, _, _ in CASES if results[cid]["rc"] == 70]
    assert reached == []
    assert max(results[cid]["rss_mib"] for cid, _, _ in CASES) < RSS_MIB
    assert results["_ro_left"] == []


def test_the_suite_counts_its_classes():
    """At least 250 distinct hostile command lines and config files (the issue asks 400 over all of
    issue 14's suites; the model-file suite is tests/test_modelfile_hostile.py)."""
    counts = Counter(cls for _, cls, _ in CASES)
    print(dict(counts))
    assert sum(counts.values()) == len({json.dumps(argv) for _, _, argv in CASES}) >= 250
    assert counts["option-range"] >= 150 and counts["cli"] >= 100 and counts["config"] >= 60


def test_every_numeric_option_of_every_command_has_a_range():
    """No plain ``type=int``/``type=float``: each number is checked against a range with a reason."""
    loose = [(command, action.option_strings or action.dest) for command, sub in _subparsers().items()
             for action in sub._actions if action.type in (int, float)]
    assert loose == []


# ---------------------------------------------------------------- config mutations (hypothesis)

GOOD = json.loads(GOOD_CONFIG.read_text())
LAYER_BAD = {
    "acc_bits": st.one_of(st.integers(max_value=0), st.integers(min_value=63), st.floats(allow_nan=True),
                          st.booleans(), st.text(max_size=8), st.none(), st.lists(st.integers(), max_size=2)),
    "a2q": st.one_of(st.integers(), st.text(max_size=8), st.none(), st.floats()),
    "fmt_w": st.one_of(st.integers(), st.none(), st.builds(lambda i, f: f"Q{i}.{f}", st.integers(32, 999),
                                                           st.integers(32, 999)),
                       st.text(alphabet="Q.x-0123456789", max_size=6).filter(lambda t: not re.fullmatch(
                           r"U?Q-?\d+\.-?\d+n?", t))),
    "overflow": st.one_of(st.integers(), st.none(), st.sampled_from(["saturate", "", "WRAPS", "clip "])),
    "rounding": st.one_of(st.integers(), st.none(), st.sampled_from(["round", "", "even", "floor2"])),
    "engine": st.one_of(st.integers(), st.none(), st.sampled_from(["xnor", "gpu", "", "Dense"])),
}
_seen_mutations: set[str] = set()


@st.composite
def mutated_config_st(draw) -> bytes:
    """One hostile change to the good config: a field's type or range, a key removed, the text cut
    short, or a byte that is not UTF-8."""
    data = json.loads(json.dumps(GOOD))
    kind = draw(st.sampled_from(["field", "drop", "cut", "byte"]))
    if kind == "field":
        i = draw(st.integers(0, len(data["layers"]) - 1))
        key = draw(st.sampled_from(sorted(LAYER_BAD)))
        data["layers"][i][key] = draw(LAYER_BAD[key])
    elif kind == "drop":
        i = draw(st.integers(0, len(data["layers"]) - 1))
        data["layers"][i].pop(draw(st.sampled_from(["name", "fmt_w", "fmt_x", "fmt_y", "acc_bits"])))
    text = json.dumps(data, indent=2).encode()
    if kind == "cut":
        text = text[: draw(st.integers(0, len(text) - 2))]
    elif kind == "byte":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + text[at:]
    return text


@settings(max_examples=120, derandomize=True, deadline=None)
@given(mutated_config_st())
def test_config_mutations_are_refused_in_one_line(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "mutated_config.json"
    path.write_bytes(text)
    _seen_mutations.add(text.hex())
    import contextlib
    import io

    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["eval", CNN, "--config", str(path)])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()[-1500:]
    assert time.perf_counter() - t0 < SECONDS


def test_config_mutations_are_distinct_and_many():
    assert len(_seen_mutations) >= 100  # runs after the property above (file order)


# ---------------------------------------------------------------- start-up: SIGINT, Numba's cache, crashes

def test_a_command_that_crashes_is_one_line_exit_70(monkeypatch, capsys):
    import fxpsim.cli.formats as formats

    def boom(args):
        raise RuntimeError("kernel exploded\nsecond line of the message")

    monkeypatch.setattr(formats, "run", boom)
    assert main(["format", "Q4.12"]) == 70
    line = _line({"stderr": capsys.readouterr().err})
    assert line.startswith("fxpsim format: internal error: RuntimeError: kernel exploded second line")
    assert "bug" in line and "report" in line


def test_ctrl_c_inside_a_command_is_interrupted_130(monkeypatch, capsys):
    import fxpsim.cli.formats as formats

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(formats, "run", stop)
    assert main(["format", "Q4.12"]) == 130
    assert _line({"stderr": capsys.readouterr().err}) == "fxpsim format: interrupted"


def _child_env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


ENTRIES = {"python -m fxpsim": [sys.executable, "-m", "fxpsim"]}
if shutil.which("fxpsim", path=str(Path(sys.executable).parent)):
    ENTRIES["fxpsim script"] = [shutil.which("fxpsim", path=str(Path(sys.executable).parent))]


@pytest.mark.parametrize("entry", ENTRIES, ids=list(ENTRIES))
@pytest.mark.parametrize("delay", [0.0, 0.15])
def test_sigint_during_start_up_is_one_line_exit_130(entry, delay):
    """SIGINT once the guard is in (the import-time log shows fxpsim.jitcache imported), while
    Numba and the kernels are still being imported: "fxpsim: interrupted", exit 130."""
    proc = subprocess.Popen(ENTRIES[entry] + ["format", "Q4.12"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_child_env(PYTHONPROFILEIMPORTTIME="1"))
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.rstrip().endswith(" fxpsim.jitcache"):
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    lines = [x for x in seen + err.splitlines(True) if not x.startswith("import time:")]
    if proc.returncode == 0:  # the command finished before the signal landed: nothing to see
        assert out.startswith("Q4.12") and lines == []
        return
    assert proc.returncode == 130 and [x.strip() for x in lines] == ["fxpsim: interrupted"], lines


def test_sigint_during_training_leaves_no_model_file(tmp_path):
    out = tmp_path / "m.npz"
    proc = subprocess.Popen([sys.executable, "-m", "fxpsim", "train", "--arch", "mlp", "--epochs", "10000", "--quiet",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_child_env())
    for line in proc.stdout:
        if line.startswith("training "):
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "fxpsim train: interrupted", err[-2000:]
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_a_crash_during_the_imports_is_one_line_exit_70():
    code = ("import sys; sys.argv[0] = 'fxpsim'; import fxpsim; "
            "raise RuntimeError('an import failed\\nwith two lines')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=_child_env())
    assert proc.returncode == 70
    assert proc.stderr.strip().splitlines() == [
        "fxpsim: internal error: RuntimeError: an import failed with two lines (this is a bug in fxpsim: please "
        "report it with the command line that caused it)"]


def test_as_a_library_fxpsim_leaves_sigint_and_excepthook_alone():
    code = ("import signal, sys; hook = sys.excepthook; import fxpsim; "
            "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler; "
            "assert sys.excepthook is hook; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=_child_env())
    assert proc.stdout.strip() == "ok", proc.stderr


def _read_only_install(tmp: Path) -> dict:
    """A copy of the package and a HOME and NUMBA_CACHE_DIR that are all read-only."""
    site, home, cache = tmp / "site", tmp / "home", tmp / "numba-cache"
    shutil.copytree(ROOT / "fxpsim", site / "fxpsim", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "probe_kernel.py").write_text("from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x\n")
    home.mkdir()
    cache.mkdir()
    for p in (site, home, cache):
        for q in [p, *p.rglob("*")]:
            q.chmod(0o555 if q.is_dir() else 0o444)
    return dict(os.environ, PYTHONPATH=str(site), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
                NUMBA_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")


def _drop_dac():
    if os.geteuid() == 0:
        ctypes.CDLL(None).prctl(24, 1, 0, 0, 0)  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE


@pytest.mark.parametrize("fallback", ["temp-folder", "uncached"])
def test_no_writable_numba_cache_is_one_line_not_a_failed_import(tmp_path, fallback):
    env = _read_only_install(tmp_path / "install")
    try:
        # the control: Numba itself cannot cache here ("no locator available")
        control = subprocess.run([sys.executable, "-c", "import probe_kernel"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, preexec_fn=_drop_dac)
        assert control.returncode != 0 and "no locator available" in control.stderr
        code = ("import sys, tempfile; " + ("tempfile.tempdir = sys.argv[1]; " if fallback == "uncached" else "")
                + "sys.argv = ['fxpsim', 'format', 'Q4.12', '1.5']; from fxpsim.cli import main; sys.exit(main())")
        proc = subprocess.run([sys.executable, "-c", code, env["HOME"]], env=env, cwd=tmp_path,
                              capture_output=True, text=True, preexec_fn=_drop_dac, timeout=300)
    finally:
        for q in tmp_path.rglob("*"):
            q.chmod(0o755) if q.is_dir() else None
    assert proc.returncode == 0 and proc.stdout.startswith("Q4.12: 16 bits"), proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fxpsim: no writable Numba cache folder"), lines
    assert ("caching compiled kernels in" if fallback == "temp-folder" else "kernels compile on every run") in lines[0]
