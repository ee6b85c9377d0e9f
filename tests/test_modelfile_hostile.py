"""Hostile model files: each is refused by ``load_model`` with one FxpsimError line, nothing else.

The classes are the bullets of issue 14 ("Model files read whole", "The JSON header is trusted",
"Metadata unchecked", "Silent casts and non-finite values"), each case built in ``tmp_path`` with
zipfile/numpy or byte by byte (:func:`forge_zip`), plus deterministic hypothesis corruptions (header
fields, member shapes and dtypes, member names, truncations, flipped bytes). The 6 GiB zip bomb, the
2**40-element member and the 10**6 x 10**6 layer also run through ``python -m fxpsim eval`` in a child
under RLIMIT_AS = 1 GiB: exit 2, one line on stderr, within the time and memory targets.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxpsim import FxpsimError
from fxpsim.binary.train_layers import METHODS
from fxpsim.graph.network import layer_from_config
from fxpsim.graph.registry import LAYER_KINDS
from fxpsim.modelfile import (
    DEFAULT_MAX_MODEL_BYTES,
    LAYER_FIELDS,
    MAX_MODEL_BYTES_ENV,
    Model,
    check_architecture,
    layer_state_shapes,
    load_model,
    model_budget,
    save_model,
)
from fxpsim.network import build_network
from fxpsim.train.data import Preprocess

REPO = Path(__file__).resolve().parents[1]
FLOAT_SPEC = "conv2x3p1-bn-relu-maxpool2-conv2x3-tanh-avgpool1-dropout10-fc4-sigmoid-fc3"
BINARY_SPEC = "bconv2x3p1bnn-bn-sign-maxpool2-bfc4ttq-bn-bfc3bc"
META = "__fxpsim__"
GiB = 1 << 30


def hypo(examples: int):
    """Deterministic examples (derandomize: the same on every run, so they count as fixed cases)."""
    return settings(derandomize=True, deadline=None, max_examples=examples, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------- good files to spoil

def make_model(spec: str) -> Model:
    net = build_network(spec, (1, 8, 8), 3, seed=0)
    rng = np.random.default_rng(0)
    for _, param, _ in net.params_and_grads():
        param[...] = rng.uniform(-0.5, 0.5, param.shape)
    net.forward(rng.standard_normal((4, 1, 8, 8)).astype(np.float32), training=True)  # BN running stats
    prep = Preprocess.fit(rng.integers(0, 17, size=(20, 1, 8, 8)), "standardize")
    return Model(net, prep, {"dataset": "digits", "seed": 0, "split": {"test_fraction": 0.25, "split_seed": 0},
                             "val_fraction": 0.1, "history": [{"epoch": 1, "loss": 0.5}]})


@pytest.fixture(scope="module")
def goods(tmp_path_factory):
    """spec kind ('float', 'binary') -> (path, entries as np.load gives them, header dict)."""
    out = {}
    for name, spec in (("float", FLOAT_SPEC), ("binary", BINARY_SPEC)):
        path = save_model(tmp_path_factory.mktemp(name) / "good.npz", make_model(spec))
        with np.load(path) as z:
            entries = {k: z[k] for k in z.files}
        out[name] = (path, entries, json.loads(entries[META].tobytes()))
    return out


def refused(path, needle: str | None = None, **kwargs) -> str:
    """load_model(path) raises FxpsimError: one line naming the file (and ``needle``, a regex)."""
    with pytest.raises(FxpsimError) as exc:
        load_model(path, **kwargs)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    if needle is not None:
        assert re.search(needle, msg), f"{needle!r} not in {msg!r}"
    return msg


def write_entries(path: Path, entries: dict) -> Path:
    np.savez(path, **entries)  # stored members, object arrays pickled: the hostile writer's defaults
    return path


def with_header(entries: dict, header) -> dict:
    """A copy of ``entries`` whose JSON header is ``header`` (a dict, or the exact text/bytes)."""
    raw = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header))
    raw = raw.encode() if isinstance(raw, str) else raw
    return {**entries, META: np.frombuffer(raw, dtype=np.uint8)}


def spoil_header(goods, tmp_path, change, kind="float") -> Path:
    """The good model of ``kind`` with ``change(header)`` applied (returns a dict, text, or None: in place)."""
    _, entries, header = goods[kind]
    header = json.loads(json.dumps(header))
    result = change(header)
    return write_entries(tmp_path / "bad.npz", with_header(entries, header if result is None else result))


def drop(d: dict, key: str) -> None:
    del d[key]


def layer_index(header: dict, kind: str) -> int:
    return next(i for i, c in enumerate(header["architecture"]["layers"]) if c["kind"] == kind)


# ---------------------------------------------------------------- a zip written byte by byte

@dataclass(frozen=True)
class Forged:
    """One zip member exactly as written: ``payload`` is the (compressed) data as stored."""

    name: str
    payload: bytes
    method: int = 8
    flags: int = 0
    crc: int = 0
    file_size: int = 0


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def npy_header(dtype: str, shape: tuple, fortran: bool = False, version=(1, 0)) -> bytes:
    """The .npy header of an array of ``shape`` (no data)."""
    text = repr({"descr": dtype, "fortran_order": fortran, "shape": tuple(shape)}).encode("latin1")
    return raw_npy_header(text, version)


def raw_npy_header(text: bytes, version=(1, 0)) -> bytes:
    fmt = "<H" if version[0] == 1 else "<I"
    pad = -(8 + struct.calcsize(fmt) + len(text) + 1) % 64
    text = text + b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(text)) + text


def deflated(plain: bytes, name: str) -> Forged:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return Forged(name, c.compress(plain) + c.flush(), crc=zlib.crc32(plain), file_size=len(plain))


def forge_zip(path: Path, members: list[Forged], entries_claimed: int | None = None) -> Path:
    """Local headers, data, central directory and end record (zip64 sizes where needed), unchecked."""
    out, central = bytearray(), bytearray()
    for m in members:
        name = m.name.encode()
        big = m.file_size >= 0xFFFFFFFF or len(m.payload) >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, m.file_size, len(m.payload)) if big else b""
        csize, usize = (0xFFFFFFFF, 0xFFFFFFFF) if big else (len(m.payload), m.file_size)
        version = 45 if big else 20
        offset = len(out)
        out += struct.pack("<4s5H3I2H", b"PK\x03\x04", version, m.flags, m.method, 0, 0x21, m.crc, csize, usize,
                           len(name), len(extra)) + name + extra + m.payload
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", version, version, m.flags, m.method, 0, 0x21, m.crc,
                               csize, usize, len(name), len(extra), 0, 0, 0, 0, offset) + name + extra
    n = len(members) if entries_claimed is None else entries_claimed
    out += central + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)
    path.write_bytes(bytes(out))
    return path


def forged_members(entries: dict) -> list[Forged]:
    return [deflated(npy_bytes(arr), f"{name}.npy") for name, arr in entries.items()]


def forge_model(goods, tmp_path, name: str, change, kind="float") -> Path:
    """The good model re-written byte by byte with member ``name`` (e.g. 'state/0.W.npy') changed."""
    members = forged_members(goods[kind][1])
    members = [change(m) if m.name == name else m for m in members]
    return forge_zip(tmp_path / "forged.npz", members)


def zeros_deflate(prefix: bytes, mib: int) -> Forged:
    """A raw deflate stream of ``prefix`` and ``mib`` MiB of zeros, ~1 KiB a MiB (full-flush blocks
    repeated), its CRC left 0: a reader that inflates it spends the memory before it finds out."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    chunk = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH) == chunk  # the reset state repeats
    return Forged("", head + chunk * mib + c.flush(), file_size=len(prefix) + (mib << 20))


# ---------------------------------------------------------------- the memory-bounded CLI (child processes)

def run_limited(argvs: list[list[str]], limit: int = GiB, timeout: float = 60.0) -> list[tuple[int, str, float, int]]:
    """Run ``python -m fxpsim *argv`` for each argv at once under RLIMIT_AS = ``limit``:
    [(exit status, stderr, CPU seconds, peak RSS bytes)], from each child's own rusage (wall time
    on a shared machine measures the other processes)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(MAX_MODEL_BYTES_ENV, None)
    running = []
    probe = Path(__file__).with_name("peak_rss.py")  # the child's own peak: ru_maxrss holds pytest's too
    for argv in argvs:
        err = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, once read)
        rss = tempfile.NamedTemporaryFile(delete=False)  # noqa: SIM115 (removed below, once read)
        rss.close()
        proc = subprocess.Popen([sys.executable, str(probe), rss.name, "-m", "fxpsim", *argv],
                                stdout=subprocess.DEVNULL, stderr=err, preexec_fn=cap,  # noqa: PLW1509 (no threads)
                                cwd=REPO, env=env)
        running.append((proc, err, time.monotonic(), Path(rss.name)))
    results = []
    for proc, err, start, rss in running:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                pytest.fail(f"fxpsim {proc.args[3:]} ran past {timeout} s")
            time.sleep(0.01)
        seconds = usage.ru_utime + usage.ru_stime
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        results.append((proc.returncode, err.read().decode(), seconds, int(rss.read_text() or 0)))
        err.close()
        rss.unlink()
    return results


@pytest.fixture(scope="module")
def bombs(tmp_path_factory, goods):
    """name -> file: the issue's three memory cases and the 10**6 x 10**6 layer, each a few MB at most."""
    folder = tmp_path_factory.mktemp("bombs")
    good = forged_members(goods["float"][1])
    w = next(m for m in good if m.name == "state/0.W.npy")
    junk = replace(zeros_deflate(npy_header("|u1", (6 * GiB,)), 6 * 1024), name="junk.npy")
    in_w = replace(zeros_deflate(npy_header("<f4", (2, 1, 3, 3)), 6 * 1024), name=w.name)
    huge_shape = deflated(npy_header("<f4", (2**40,)) + bytes(64), w.name)
    header = json.loads(json.dumps(goods["float"][2]))
    header["architecture"]["layers"][layer_index(header, "dense")].update(n_in=10**6, n_out=10**6)
    huge_fc = deflated(npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8)), f"{META}.npy")
    return {
        "bomb": forge_zip(folder / "bomb.npz", [*good, junk]),
        "bomb-in-weights": forge_zip(folder / "bomb-w.npz", [m if m is not w else in_w for m in good]),
        "shape-2**40": forge_zip(folder / "huge-shape.npz", [m if m is not w else huge_shape for m in good]),
        "fc-10**6": forge_zip(folder / "huge-fc.npz", [huge_fc if m.name == f"{META}.npy" else m for m in good]),
    }


BOMB_NEEDLES = {
    "bomb": r"unknown entry 'junk'",
    "bomb-in-weights": r"members declare 6\.0 GiB uncompressed, more than the 2\.0 GiB model budget "
                       r"\(nothing was inflated\)",
    "shape-2**40": r"member 'state/0\.W\.npy' declares 192 bytes uncompressed, but its \.npy header says 128 \+ "
                   r"4398046511104",
    "fc-10**6": r"needs 7\.3 TiB .*layer 9 dense W\(1000000, 1000000\).*more than the 2\.0 GiB model budget",
}


def test_the_bombs_are_real(bombs):
    """The bomb member does inflate: its declared 6 GiB (zip64) and the first 64 MiB come out as zeros."""
    import zipfile

    assert bombs["bomb"].stat().st_size < 8 << 20
    with zipfile.ZipFile(bombs["bomb"]) as zf:
        info = zf.getinfo("junk.npy")
        assert info.file_size == 6 * GiB + 128
        with zf.open(info) as fh:
            assert fh.read(128).startswith(b"\x93NUMPY")
            for _ in range(64):
                assert fh.read(1 << 20) == bytes(1 << 20)


@pytest.mark.parametrize("case", list(BOMB_NEEDLES))
def test_memory_cases_are_refused_in_process_fast(bombs, case):
    start = time.perf_counter()
    refused(bombs[case], BOMB_NEEDLES[case])
    assert time.perf_counter() - start < 5  # a guard that nothing inflates (measured: < 10 ms), not a timing


def test_memory_cases_through_the_cli_under_a_memory_limit(bombs):
    """6 GB bomb, 2**40 shape, 3.6 TiB layer: exit 2 and one line, never inflated (RLIMIT_AS 1 GiB),
    within 2 s of CPU (the child's start-up and imports included: ~1.2 s measured) and 500 MB RSS."""
    results = run_limited([["eval", str(bombs[case])] for case in BOMB_NEEDLES])
    for case, (code, err, seconds, rss) in zip(BOMB_NEEDLES, results):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (case, code, err)
        assert lines[0].startswith("fxpsim eval: error: ") and re.search(BOMB_NEEDLES[case], lines[0]), lines[0]
        assert rss < 500 << 20, (case, rss)
        assert seconds < 10, (case, seconds)  # a hang guard; measured ~1.2 s CPU, the refusal itself < 10 ms


# ---------------------------------------------------------------- the archive (class: "read whole")

def _flag(bits):
    return lambda m: replace(m, flags=m.flags | bits)


def _method(method):
    return lambda m: replace(m, method=method)


ARCHIVE_CASES = {
    "encrypted-weights": ("state/0.W.npy", _flag(0x1), r"member 'state/0\.W\.npy' is encrypted"),
    "encrypted-header": (f"{META}.npy", _flag(0x1), r"member '__fxpsim__\.npy' is encrypted"),
    "strong-encryption": ("state/0.b.npy", _flag(0x40), r"is encrypted"),
    "method-shrink": ("state/0.W.npy", _method(1), r"zip method 1 \(shrink\)"),
    "method-implode": ("state/0.W.npy", _method(6), r"zip method 6 \(implode\)"),
    "method-deflate64": ("state/0.W.npy", _method(9), r"zip method 9 \(deflate64\)"),
    "method-bzip2": ("state/0.W.npy", _method(12), r"zip method 12 \(bzip2\)"),
    "method-lzma": ("state/0.W.npy", _method(14), r"zip method 14 \(lzma\)"),
    "method-zstd": ("state/0.W.npy", _method(93), r"zip method 93 \(zstandard\)"),
    "method-aes": ("state/0.W.npy", _method(99), r"zip method 99 \(AES-encrypted\)"),
    "method-unknown": ("state/0.W.npy", _method(77), r"zip method 77 \(unknown\)"),
    "stored-but-deflated": ("state/0.W.npy", _method(0), r"not a readable \.npy array|corrupt"),
    "bad-crc": ("state/0.W.npy", lambda m: replace(m, crc=m.crc ^ 1), r"corrupt or truncated.*CRC"),
    "size-declared-larger": ("state/0.W.npy", lambda m: replace(m, file_size=m.file_size + 4),
                             r"declares 204 bytes uncompressed, but its \.npy header says 128 \+ 72"),
    "size-declared-smaller": ("state/0.W.npy", lambda m: replace(m, file_size=m.file_size - 4),
                              r"Bad CRC-32"),  # zipfile checks the CRC at the declared end
    "size-declared-tiny": ("state/0.W.npy", lambda m: replace(m, file_size=20), r"Bad CRC-32"),
    "size-declared-4TiB": ("state/0.W.npy", lambda m: replace(m, file_size=1 << 42),
                           r"declare 4\.0 TiB uncompressed, more than the 2\.0 GiB model budget"),
    "payload-cut": ("state/0.W.npy", lambda m: replace(m, payload=m.payload[:20]), r"corrupt or truncated"),
    "payload-garbage": ("state/0.W.npy", lambda m: replace(m, payload=bytes(range(256)) * 4), r"corrupt|not a readable"),
    "header-6GiB": (f"{META}.npy", lambda m: replace(zeros_deflate(npy_header("|u1", (6 * GiB,)), 0), name=m.name,
                                                     file_size=6 * GiB + 128), r"declare 6\.0 GiB uncompressed"),
    "header-2MiB": (f"{META}.npy", lambda m: replace(zeros_deflate(npy_header("|u1", (2 << 20,)), 2), name=m.name),
                    r"'__fxpsim__' entry is 2\.0 MiB, more than the 1\.0 MiB a header may have"),
}


@pytest.mark.parametrize("case", list(ARCHIVE_CASES))
def test_archive_level_forgeries(goods, tmp_path, case):
    name, change, needle = ARCHIVE_CASES[case]
    refused(forge_model(goods, tmp_path, name, change), needle)


NPY_HEADERS = {
    "magic": (b"\x93NUMPX\x01\x00" + b" " * 120, r"not a readable \.npy array \(the magic string is not correct"),
    "version-3": (npy_header("<f4", (2, 1, 3, 3), version=(3, 0)), r"\.npy format version \(3, 0\)"),
    "version-9": (npy_header("<f4", (2, 1, 3, 3), version=(9, 9)), r"\.npy format version \(9, 9\)"),
    "v1-header-60k": (raw_npy_header(b"{" + b" " * 60000 + b"}"), r"\.npy header longer than 16384 bytes"),
    "v2-length-4GB": (b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{" * 100,
                      r"declares 184 bytes uncompressed, fewer than its own \.npy header"),
    "v2-header-20k": (raw_npy_header(b"{" + b" " * 20000 + b"}", (2, 0)), r"\.npy header longer than 16384"),
    "not-a-dict": (raw_npy_header(b"[1, 2, 3]"), r"Header is not a dictionary"),
    "missing-keys": (raw_npy_header(b"{'descr': '<f4', 'shape': (2, 1, 3, 3)}"), r"correct keys"),
    "extra-key": (raw_npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}"),
                  r"correct keys"),
    "shape-not-tuple": (raw_npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 1, 3, 3]}"),
                        r"shape is not valid"),
    "shape-float": (raw_npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2.0, 1, 3, 3)}"),
                    r"shape is not valid"),
    "shape-negative": (npy_header("<f4", (-2, 1, 3, 3)), r"negative shape"),
    "shape-5000-digits": (raw_npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (" + b"9" * 5000
                                         + b",)}"), r"not a readable \.npy array"),
    "fortran-not-bool": (raw_npy_header(b"{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 1, 3, 3)}"),
                         r"fortran_order is not a valid bool"),
    "descr-bogus": (npy_header("<q9", (2, 1, 3, 3)), r"not a readable \.npy array"),
    "descr-int": (raw_npy_header(b"{'descr': 5, 'fortran_order': False, 'shape': (2, 1, 3, 3)}"),
                  r"not a readable \.npy array"),
    "descr-subarray-huge": (raw_npy_header(b"{'descr': ('<f4', (65536, 65536, 65536)), 'fortran_order': False, "
                                           b"'shape': (2, 1, 3, 3)}"), r"not a readable|dtype"),
    "descr-object": (npy_header("|O", (2, 1, 3, 3)), r"holds pickled object arrays \(dtype object\)"),
    "descr-nested-object": (raw_npy_header(b"{'descr': [('a', '|O')], 'fortran_order': False, "
                                           b"'shape': (2, 1, 3, 3)}"), r"holds pickled object arrays"),
    "nested-parens": (raw_npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': " + b"(" * 3000
                                     + b")" * 3000 + b"}"), r"not a readable \.npy array"),
    "not-latin1-literal": (raw_npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': __import__('os')}"),
                           r"not a readable \.npy array"),
}


@pytest.mark.parametrize("case", list(NPY_HEADERS))
def test_forged_npy_headers(goods, tmp_path, case):
    head, needle = NPY_HEADERS[case]
    w = goods["float"][1]["state/0.W"]
    refused(forge_model(goods, tmp_path, "state/0.W.npy", lambda m: replace(deflated(head + w.tobytes(), m.name))),
            needle)


MEMBER_NAMES = {
    "junk.npy": r"unknown entry 'junk'",
    "state/99.W.npy": r"unexpected \['state/99\.W'\]",
    "state/0.W.extra.npy": r"unknown entry 'state/0\.W\.extra'",
    "state/0.evil-name.npy": r"unknown entry",
    "../escape.npy": r"unknown entry '\.\./escape'",
    "/absolute.npy": r"unknown entry",
    "preprocess/var.npy": r"unknown entry 'preprocess/var'",
    "STATE/0.W.npy": r"unknown entry 'STATE/0\.W'",
    "state/0.W": r"member 'state/0\.W' is not an \.npy array",
    "notes.txt": r"member 'notes\.txt' is not an \.npy array",
    "__fxpsim__.npy": r"appears twice",
    "state/1.running_var.npy": r"appears twice",
    "state/0.W.npy.npy": r"unknown entry",
    "state/1.W.npy": r"unexpected \['state/1\.W'\]",
}


@pytest.mark.parametrize("extra", list(MEMBER_NAMES))
def test_extra_or_repeated_members(goods, tmp_path, extra):
    members = forged_members(goods["float"][1]) + [deflated(npy_bytes(np.zeros(3, np.float32)), extra)]
    refused(forge_zip(tmp_path / "x.npz", members), MEMBER_NAMES[extra])


def test_missing_members(goods, tmp_path):
    for name in goods["float"][1]:
        entries = {k: v for k, v in goods["float"][1].items() if k != name}
        needle = "foreign archive" if name == META else rf"missing \['{re.escape(name)}'\]"
        refused(write_entries(tmp_path / "m.npz", entries), needle)


def test_too_many_members(goods, tmp_path):
    members = forged_members(goods["float"][1])
    refused(forge_zip(tmp_path / "claims.npz", members, entries_claimed=60000),
            r"lists 60000 members .* more than the 4099 members")
    many = members + [deflated(b"", f"state/{i}.x.npy") for i in range(4200)]
    refused(forge_zip(tmp_path / "many.npz", many), r"lists 4215 members")


def test_zip_level_oddities(goods, tmp_path):
    path, _, _ = goods["float"]
    blob = path.read_bytes()
    cases = {
        "empty-zip": b"PK\x05\x06" + bytes(18),
        "magic-only": b"PK\x03\x04",
        "no-end-record": blob[:-22],
        "end-record-only-kept": blob[-22:],
        "central-dir-bytes": blob[: len(blob) // 2] + bytes(len(blob) - len(blob) // 2),
    }
    for name, data in cases.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(data)
        msg = refused(p)
        assert "is not a readable fxpsim model file" in msg, (name, msg)


# ---------------------------------------------------------------- the JSON header (class: "trusted")

def _raw(text_change):
    """A change that edits the header's JSON text (for what json.dumps cannot write)."""
    return lambda h: text_change(json.dumps(h))


def _nest(depth):
    return lambda h: json.dumps(h)[:-1] + ', "metadata": {"deep": ' + "[" * depth + "]" * depth + "}}"


def _sub(old, new):
    def change(text):
        assert old in text, old
        return text.replace(old, new, 1)
    return _raw(change)


JSON_CASES = {
    "nesting-100k": (_nest(100_000), r"nests JSON deeper than 32 levels"),
    "nesting-40": (_nest(40), r"nests JSON deeper than 32 levels"),
    "int-5000-digits": (_sub('"seed": 0', '"seed": ' + "7" * 5000), r"holds a 5000-digit integer"),
    "int-25-digits": (_sub('"seed": 0', '"seed": ' + "1" * 25), r"holds a 25-digit integer"),
    "negative-int-5000-digits": (_sub('"seed": 0', '"seed": -' + "7" * 5000), r"5000-digit integer"),
    "n_in-1e400": (_sub('"n_in": 8', '"n_in": 1e400'), r"holds the number 1e400, beyond the float range"),
    "n_in-minus-1e400": (_sub('"n_in": 8', '"n_in": -1e400'), r"beyond the float range"),
    "eps-1e309": (_sub('"eps": 1e-05', '"eps": 1e309'), r"beyond the float range"),
    "n_in-NaN": (_sub('"n_in": 8', '"n_in": NaN'), r"holds NaN, which no field takes"),
    "n_in-Infinity": (_sub('"n_in": 8', '"n_in": Infinity'), r"holds Infinity"),
    "seed-minus-Infinity": (_sub('"seed": 0', '"seed": -Infinity'), r"holds -Infinity"),
    "long-float": (_sub('"eps": 1e-05', '"eps": 1' + "0" * 400 + ".5"), r"beyond the float range"),
    "not-json": (lambda h: "{not json", r"not valid JSON"),
    "truncated-json": (lambda h: json.dumps(h)[:-5], r"not valid JSON"),
    "trailing-garbage": (lambda h: json.dumps(h) + " x", r"not valid JSON"),
    "empty": (lambda h: "", r"not valid JSON"),
    "not-utf8": (lambda h: json.dumps(h).encode() + b"\xff\xfe", r"not UTF-8 text \(byte"),
    "latin1": (lambda h: json.dumps({**h, "metadata": {"dataset": "d\u00e9"}}, ensure_ascii=False).encode("latin1"),
               r"not UTF-8"),
    "utf16": (lambda h: json.dumps(h).encode("utf-16"), r"not UTF-8"),
    "list": (lambda h: [h], r"does not say format"),
    "string": (lambda h: '"fxpsim-model"', r"does not say format"),
    "number": (lambda h: "5", r"does not say format"),
    "null": (lambda h: "null", r"does not say format"),
    "fc-10**6x10**6": (lambda h: h["architecture"]["layers"][layer_index(h, "dense")].update(n_in=10**6, n_out=10**6),
                       r"needs 7\.3 TiB for parameters, gradients and buffers"),
    "conv-65536-channels": (lambda h: h["architecture"]["layers"][4].update(c_in=65536, c_out=65536, k=64),
                            r"needs .* TiB .*layer 4 conv2d"),
    "bn-2**31-1-features": (lambda h: h["architecture"]["layers"][1].update(num_features=2**31 - 1),
                            r"needs 48\.0 GiB"),
    "input-2**20-square": (lambda h: h["architecture"].update(input_shape=[1, 2**20, 2**20]),
                           r"input_shape=\[1, 1048576, 1048576\] needs 4\.0 TiB per image"),
    "padding-10**6": (lambda h: h["architecture"]["layers"][0].update(padding=10**6),
                      r"layer 0 \(conv2d\) outputs shape \(2, 2000006, 2000006\), 29\.1 TiB per image"),
    "2000-layers": (lambda h: h["architecture"].update(layers=[{"kind": "relu"}] * 2000),
                    r"not a list of 1 to 1024 layers"),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_json_header_limits(goods, tmp_path, case):
    change, needle = JSON_CASES[case]
    start = time.perf_counter()
    refused(spoil_header(goods, tmp_path, change), needle)
    assert time.perf_counter() - start < 2


SIZE_BAD = (0, -1, 2**31, 16.9, 16.0, True, "sixteen", None, [3], {"v": 3})
FIELD_BAD = {
    ("dense", "n_in"): SIZE_BAD, ("dense", "n_out"): SIZE_BAD,
    ("conv2d", "c_in"): SIZE_BAD, ("conv2d", "c_out"): SIZE_BAD, ("conv2d", "k"): SIZE_BAD,
    ("conv2d", "stride"): SIZE_BAD, ("conv2d", "padding"): (-1, 2**31, 1.5, True, "0", None, [0]),
    ("batchnorm", "num_features"): SIZE_BAD,
    ("batchnorm", "eps"): (0, -1e-5, True, "1e-5", None, [1e-5]),
    ("batchnorm", "momentum"): (1, 1.5, -0.1, True, "0.9", None),
    ("dropout", "p"): (1, -0.5, 2, "0.1", True, None),
    ("maxpool2d", "size"): SIZE_BAD, ("maxpool2d", "stride"): (0, -1, 1.5, True, "2", [2]),
    ("avgpool2d", "size"): SIZE_BAD,
    ("bdense", "n_out"): SIZE_BAD, ("bconv2d", "c_out"): SIZE_BAD, ("bconv2d", "k"): SIZE_BAD,
    ("bdense", "method"): ("bogus", "BC", "", 1, None, True, ["ttq"]),
    ("bconv2d", "method"): ("bogus", "XNOR", 0, None),
}
FIELD_CASES = [(kind, name, value) for (kind, name), values in FIELD_BAD.items() for value in values]


@pytest.mark.parametrize("kind, name, value", FIELD_CASES, ids=[f"{k}.{n}={v!r}" for k, n, v in FIELD_CASES])
def test_every_architecture_field_is_typed_and_in_range(goods, tmp_path, kind, name, value):
    """'acc_bits: true becomes 1'-style coercions: a bool, a string, 16.9 or 16.0 for a size, all refused."""
    base = "binary" if kind.startswith("b") and kind != "batchnorm" else "float"
    path = spoil_header(goods, tmp_path, lambda h: h["architecture"]["layers"][layer_index(h, kind)].update(
        {name: value}), kind=base)
    refused(path, rf"\({kind}\): {name}=")


STRUCTURE_CASES = {
    "unknown-kind": (lambda h: h["architecture"]["layers"].append({"kind": "lstm"}), r"kind is one of"),
    "kind-missing": (lambda h: h["architecture"]["layers"].append({"n_in": 3}), r"layer 12 is \{'n_in': 3\}"),
    "kind-int": (lambda h: h["architecture"]["layers"].append({"kind": 3}), r"kind is one of"),
    "layer-null": (lambda h: h["architecture"]["layers"].append(None), r"layer 12 is None"),
    "layer-string": (lambda h: h["architecture"]["layers"].append("relu"), r"layer 12 is 'relu'"),
    "layer-base-kind": (lambda h: h["architecture"]["layers"].append({"kind": "layer"}), r"kind is one of"),
    "unknown-field": (lambda h: h["architecture"]["layers"][0].update(bias=False), r"unknown field 'bias'"),
    "field-on-relu": (lambda h: h["architecture"]["layers"][2].update(inplace=True), r"\(relu\) has the unknown"),
    "field-on-flatten": (lambda h: h["architecture"]["layers"][8].update(dims=2), r"\(flatten\) has the unknown"),
    "missing-n_in": (lambda h: drop(h["architecture"]["layers"][9], "n_in"), r"has no 'n_in' field"),
    "missing-c_out": (lambda h: drop(h["architecture"]["layers"][0], "c_out"), r"has no 'c_out' field"),
    "missing-p": (lambda h: drop(h["architecture"]["layers"][7], "p"), r"has no 'p' field"),
    "missing-size": (lambda h: drop(h["architecture"]["layers"][3], "size"), r"has no 'size' field"),
    "missing-num_features": (lambda h: drop(h["architecture"]["layers"][1], "num_features"), r"no 'num_features'"),
    "n_in-mismatch": (lambda h: h["architecture"]["layers"][9].update(n_in=9), r"shape|n_in=9"),
    "c_in-mismatch": (lambda h: h["architecture"]["layers"][4].update(c_in=3), r"shape"),
    "bn-features-mismatch": (lambda h: h["architecture"]["layers"][1].update(num_features=3), r"shape"),
    "kernel-too-big": (lambda h: h["architecture"]["layers"][4].update(k=9), r"shape"),
    "pool-too-big": (lambda h: h["architecture"]["layers"][3].update(size=50), r"does not fit|shape"),
    "layers-empty": (lambda h: h["architecture"].update(layers=[]), r"not a list of 1 to 1024"),
    "layers-null": (lambda h: h["architecture"].update(layers=None), r"layers=None"),
    "layers-dict": (lambda h: h["architecture"].update(layers={"0": {"kind": "relu"}}), r"not a list"),
    "layers-missing": (lambda h: drop(h["architecture"], "layers"), r"layers=None"),
    "input-2d": (lambda h: h["architecture"].update(input_shape=[8, 8]), r"input_shape=\[8, 8\] is not \[C, H, W\]"),
    "input-4d": (lambda h: h["architecture"].update(input_shape=[1, 1, 8, 8]), r"not \[C, H, W\]"),
    "input-zero": (lambda h: h["architecture"].update(input_shape=[0, 8, 8]), r"not \[C, H, W\]"),
    "input-negative": (lambda h: h["architecture"].update(input_shape=[1, -8, 8]), r"not \[C, H, W\]"),
    "input-float": (lambda h: h["architecture"].update(input_shape=[1, 8.0, 8]), r"not \[C, H, W\]"),
    "input-bool": (lambda h: h["architecture"].update(input_shape=[True, 8, 8]), r"not \[C, H, W\]"),
    "input-string": (lambda h: h["architecture"].update(input_shape="1x8x8"), r"not \[C, H, W\]"),
    "input-nested": (lambda h: h["architecture"].update(input_shape=[[1], 8, 8]), r"not \[C, H, W\]"),
    "input-2**31": (lambda h: h["architecture"].update(input_shape=[1, 2**31, 8]), r"not \[C, H, W\]"),
    "input-missing": (lambda h: drop(h["architecture"], "input_shape"), r"input_shape=None"),
    "input-channels-mismatch": (lambda h: h["architecture"].update(input_shape=[2, 8, 8]),
                                r"'preprocess/mean' has shape \(1, 1, 1\)"),
    "input-size-mismatch": (lambda h: h["architecture"].update(input_shape=[1, 12, 12]),
                            r"dense layer with n_in=8 got input shape \(32,\)"),
    "seed-negative": (lambda h: h["architecture"].update(seed=-1), r"seed=-1 is not null or a whole number"),
    "seed-string": (lambda h: h["architecture"].update(seed="abc"), r"seed='abc'"),
    "seed-float": (lambda h: h["architecture"].update(seed=1.5), r"seed=1\.5"),
    "seed-bool": (lambda h: h["architecture"].update(seed=True), r"seed=True"),
    "seed-2**64": (lambda h: h["architecture"].update(seed=2**64), r"seed=18446744073709551616"),
    "arch-unknown-key": (lambda h: h["architecture"].update(dtype="float64"), r"architecture has the unknown key"),
    "arch-list": (lambda h: h.update(architecture=[1]), r"'architecture' is \[1\], not a JSON object"),
    "arch-missing": (lambda h: drop(h, "architecture"), r"'architecture' is None"),
    "arch-string": (lambda h: h.update(architecture="fc10"), r"not a JSON object"),
    "format-other": (lambda h: h.update(format="something-else"), r"does not say format"),
    "format-missing": (lambda h: drop(h, "format"), r"does not say format"),
    "format-null": (lambda h: h.update(format=None), r"does not say format"),
    "version-0": (lambda h: h.update(version=0), r"bad format version 0"),
    "version-negative": (lambda h: h.update(version=-1), r"bad format version -1"),
    "version-string": (lambda h: h.update(version="1"), r"bad format version '1'"),
    "version-float": (lambda h: h.update(version=1.0), r"bad format version 1\.0"),
    "version-bool": (lambda h: h.update(version=True), r"bad format version True"),
    "version-missing": (lambda h: drop(h, "version"), r"bad format version None"),
    "version-newer": (lambda h: h.update(version=2), r"has model format version 2, newer .* upgrade fxpsim"),
    "version-huge": (lambda h: h.update(version=10**20), r"newer than this fxpsim reads"),
    "header-unknown-key": (lambda h: h.update(weights_url="http://x"), r"unknown key 'weights_url'"),
    "preprocess-missing": (lambda h: drop(h, "preprocess"), r"'preprocess' is None"),
    "preprocess-list": (lambda h: h.update(preprocess=["none"]), r"'preprocess' is \['none'\]"),
    "preprocess-mode-int": (lambda h: h.update(preprocess={"mode": 5}), r"preprocess entry \{'mode': 5\}"),
    "preprocess-mode-bogus": (lambda h: h.update(preprocess={"mode": "whiten"}), r"unknown preprocessing 'whiten'"),
    "preprocess-extra-key": (lambda h: h["preprocess"].update(eps=1), r"preprocess entry"),
    "preprocess-empty": (lambda h: h.update(preprocess={}), r"preprocess entry \{\}"),
}


@pytest.mark.parametrize("case", list(STRUCTURE_CASES))
def test_architecture_and_header_structure(goods, tmp_path, case):
    change, needle = STRUCTURE_CASES[case]
    refused(spoil_header(goods, tmp_path, change), needle)


# ---------------------------------------------------------------- metadata (class: "unchecked")

METADATA_CASES = [
    ("seed", -1), ("seed", "abc"), ("seed", 1.5), ("seed", True), ("seed", 2**63), ("seed", None), ("seed", [0]),
    ("dataset", 7), ("dataset", None), ("dataset", ["digits"]), ("dataset", {"name": "digits"}), ("dataset", True),
    ("split", [0.25]), ("split", "x"), ("split", 5),
    ("split.test_fraction", "x"), ("split.test_fraction", 0), ("split.test_fraction", 1),
    ("split.test_fraction", -0.1), ("split.test_fraction", True), ("split.test_fraction", None),
    ("split.test_fraction", 1.5), ("split.split_seed", -1), ("split.split_seed", "1"), ("split.split_seed", 1.5),
    ("split.split_seed", True), ("split.split_seed", None),
    ("val_fraction", 1.0), ("val_fraction", -0.1), ("val_fraction", "0.1"), ("val_fraction", True),
    ("val_fraction", 2), ("metadata", []), ("metadata", "x"), ("metadata", 5), ("metadata", None),
]


@pytest.mark.parametrize("field, value", METADATA_CASES, ids=[f"{f}={v!r}" for f, v in METADATA_CASES])
def test_metadata_fields_are_typed(goods, tmp_path, field, value):
    def change(h):
        if field == "metadata":
            h["metadata"] = value
        elif field.startswith("split."):
            h["metadata"]["split"][field[len("split."):]] = value
        else:
            h["metadata"][field] = value

    needle = "training metadata is not a JSON object" if field == "metadata" else rf"metadata {re.escape(field)}="
    refused(spoil_header(goods, tmp_path, change), needle)


# ---------------------------------------------------------------- silent casts and non-finite values

ENTRIES = ("state/0.W", "state/0.b", "state/1.gamma", "state/1.running_var", "preprocess/mean", "preprocess/std")
BAD_DTYPES = ("bool", "int8", "uint8", "int32", "int64", "complex64", "complex128", "datetime64[s]",
              "timedelta64[s]", "U3", "S3", "longdouble", "struct", "object")


def cast(arr: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "struct":
        return np.zeros(arr.shape, dtype=[("a", "<f4")])
    if dtype == "object":
        return np.full(arr.shape, {"evil": 1}, dtype=object)
    if dtype[0] in "US" or dtype.startswith(("datetime", "timedelta")):
        return np.zeros(arr.shape, dtype=dtype)
    return arr.astype(dtype)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_no_silent_casts(goods, tmp_path, entry, dtype):
    """Bool weights were cast silently (61.8 % accuracy, exit 0): every non-float dtype is refused, named."""
    entries = dict(goods["float"][1])
    entries[entry] = cast(entries[entry], dtype)
    shown = {"struct": "[('a', '<f4')]", "longdouble": "float128", "U3": "<U3", "S3": "|S3"}.get(dtype, dtype)
    needle = r"holds pickled object arrays \(dtype object\)" if dtype == "object" else \
        rf"entry '{entry}' has dtype {re.escape(shown)}, not float16/32/64"
    refused(write_entries(tmp_path / "bad.npz", entries), needle)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e300], ids=["nan", "inf", "-inf", "1e300"])
def test_non_finite_values(goods, tmp_path, entry, value):
    """One NaN weight printed 'loss nan' with exit 0; std = inf made every input 0; 1e300 is inf as float32."""
    entries = dict(goods["float"][1])
    arr = entries[entry].astype(np.float64 if value == 1e300 else entries[entry].dtype)
    arr.flat[-1] = value
    entries[entry] = arr
    refused(write_entries(tmp_path / "bad.npz", entries), rf"entry '{entry}' holds 1 NaN/inf value")


STAT_CASES = {
    "std-zero": ("preprocess/std", lambda a: np.zeros_like(a), r"std shape or value"),
    "std-negative": ("preprocess/std", lambda a: -np.ones_like(a), r"std shape or value"),
    "std-shape": ("preprocess/std", lambda a: np.ones((1, 8, 8), a.dtype), r"'preprocess/std' has shape \(1, 8, 8\)"),
    "mean-shape": ("preprocess/mean", lambda a: np.zeros((8, 8), a.dtype), r"'preprocess/mean' has shape \(8, 8\)"),
    "mean-scalar": ("preprocess/mean", lambda a: np.float32(0), r"'preprocess/mean' has shape \(\)"),
    "header-int16": (META, lambda a: a.astype(np.int16), r"'__fxpsim__' entry has dtype int16"),
    "header-2d": (META, lambda a: a[: len(a) // 2 * 2].reshape(2, -1), r"'__fxpsim__' entry has dtype uint8 and shape"),
    "header-float": (META, lambda a: a.astype(np.float32), r"'__fxpsim__' entry has dtype float32"),
    "weights-float16-wrong-shape": ("state/0.W", lambda a: a.astype(np.float16).T, r"has shape \(3, 3, 1, 2\)"),
    "weights-flat": ("state/0.W", lambda a: a.ravel(), r"'state/0\.W' has shape \(18,\)"),
    "bias-2d": ("state/0.b", lambda a: a[None], r"'state/0\.b' has shape \(1, 2\)"),
}


@pytest.mark.parametrize("case", list(STAT_CASES))
def test_statistics_and_header_entries(goods, tmp_path, case):
    name, change, needle = STAT_CASES[case]
    entries = dict(goods["float"][1])
    entries[name] = change(entries[name])
    refused(write_entries(tmp_path / "bad.npz", entries), needle)


# ---------------------------------------------------------------- hypothesis: random corruptions

_not_a_number_st = st.one_of(st.booleans(), st.text(max_size=5), st.lists(st.integers(0, 3), max_size=2),
                            st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()))
size_bad_st = st.one_of(_not_a_number_st, st.none(), st.integers(max_value=0), st.integers(2**31, 10**20))
seed_bad_st = st.one_of(_not_a_number_st, st.integers(max_value=-1), st.integers(2**63, 10**20))
SIZE_FIELDS = ["dense.n_in", "dense.n_out", "conv2d.c_in", "conv2d.c_out", "conv2d.k", "conv2d.stride",
               "batchnorm.num_features", "maxpool2d.size", "avgpool2d.size"]
header_field_st = st.one_of(
    st.tuples(st.sampled_from(SIZE_FIELDS), size_bad_st),
    st.tuples(st.sampled_from(["metadata.seed", "metadata.split.split_seed"]), st.one_of(seed_bad_st, st.none())),
    st.tuples(st.just("architecture.seed"), seed_bad_st),  # null is a valid architecture seed
)


@hypo(60)
@given(field_value=header_field_st)
def test_random_bad_header_fields(goods, tmp_path, field_value):
    field, value = field_value

    def change(h):
        if field.startswith("metadata."):
            target = h["metadata"]
            *path, last = field.split(".")[1:]
            for p in path:
                target = target[p]
            target[last] = value
        elif field == "architecture.seed":
            h["architecture"]["seed"] = value
        else:
            kind, name = field.split(".")
            h["architecture"]["layers"][layer_index(h, kind)][name] = value

    refused(spoil_header(goods, tmp_path, change), re.escape(field.split(".")[-1]) + "=")


shape_st = st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple)
dtype_st = st.sampled_from(["<f2", "<f4", "<f8", ">f4", "|b1", "<i4", "<u2", "<c8", "<M8[D]", "|S2", "<U1"])


@hypo(60)
@given(entry=st.sampled_from(ENTRIES[:4]), shape=shape_st, dtype=dtype_st, fortran=st.booleans())
def test_random_member_shapes_and_dtypes(goods, tmp_path, entry, shape, dtype, fortran):
    """A member of any other shape, or of any non-float dtype, is refused from its header alone."""
    good = goods["float"][1][entry]
    if shape == good.shape and np.dtype(dtype).kind == "f":
        shape = good.shape + (1,)
    arr = np.zeros(shape, dtype=dtype, order="F" if fortran else "C")
    entries = {**goods["float"][1], entry: arr}
    refused(write_entries(tmp_path / "bad.npz", entries), rf"'{re.escape(entry)}' has (shape|dtype)")


name_st = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)


@hypo(50)
@given(name=name_st, npy=st.booleans())
def test_random_member_names(goods, tmp_path, name, npy):
    member = name + (".npy" if npy else "")
    members = forged_members(goods["float"][1]) + [deflated(npy_bytes(np.zeros(2, np.float32)), member)]
    refused(forge_zip(tmp_path / "named.npz", members))


@hypo(50)
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_random_truncations(goods, tmp_path, fraction):
    blob = goods["float"][0].read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(blob[: int(fraction * len(blob))])
    refused(path)


FLIP_SEEDS = range(120)


def test_random_flipped_bytes(goods, tmp_path):
    """120 seeded single-byte corruptions: each is refused, or (a byte no reader looks at, such as a
    timestamp) loads bit-identical to the original; never another exception, never other weights."""
    path, entries, _ = goods["float"]
    blob = path.read_bytes()
    target = tmp_path / "flipped.npz"
    refusals = 0
    for seed in FLIP_SEEDS:
        rng = np.random.default_rng(seed)
        data = bytearray(blob)
        pos = int(rng.integers(len(data)))
        data[pos] ^= int(rng.integers(1, 256))
        target.write_bytes(bytes(data))
        try:
            model = load_model(target)
        except FxpsimError as exc:
            assert "\n" not in str(exc)
            refusals += 1
            continue
        state = model.network.state_dict()
        for key, arr in state.items():
            np.testing.assert_array_equal(arr, entries[f"state/{key}"])
    assert refusals >= 80  # most bytes of a small deflated archive matter (94 of 120 with zlib 1.2)


# ---------------------------------------------------------------- what is valid still loads

@pytest.mark.parametrize("path", sorted((REPO / "models").glob("*.npz")), ids=lambda p: p.name)
def test_every_shipped_model_loads_as_np_load_reads_it(path):
    model = load_model(path)
    with np.load(path, allow_pickle=False) as z:
        for key, arr in model.network.state_dict().items():
            np.testing.assert_array_equal(arr, z[f"state/{key}"])
        np.testing.assert_array_equal(model.preprocess.mean, z["preprocess/mean"])
        np.testing.assert_array_equal(model.preprocess.std, z["preprocess/std"])


@pytest.mark.parametrize("kind", ["float", "binary"])
def test_good_files_round_trip(goods, kind):
    path, entries, header = goods[kind]
    model = load_model(path)
    assert model.network.spec() == (FLOAT_SPEC if kind == "float" else BINARY_SPEC)
    for key, arr in model.network.state_dict().items():
        if f"packed/{key}" in entries:  # bit-packed binary weights: tests/binary/test_modelpack.py
            continue
        np.testing.assert_array_equal(arr, entries[f"state/{key}"])
    assert model.metadata == header["metadata"]
    assert model.preprocess.mean.flags.writeable


def test_float16_float64_big_endian_and_fortran_weights_load(goods, tmp_path):
    """The float dtypes other writers use are read (and cast to the network's float32), not refused."""
    entries = dict(goods["float"][1])
    entries["state/0.W"] = entries["state/0.W"].astype(np.float16)
    entries["state/4.W"] = np.asfortranarray(entries["state/4.W"].astype(np.float64))
    entries["state/9.W"] = entries["state/9.W"].astype(">f4")
    model = load_model(write_entries(tmp_path / "m.npz", entries))
    state = model.network.state_dict()
    for key in ("0.W", "4.W", "9.W"):
        np.testing.assert_array_equal(state[key], entries[f"state/{key}"].astype(np.float32))


def test_stored_and_deflated_archives_read_alike(goods, tmp_path):
    entries = goods["float"][1]
    a = load_model(write_entries(tmp_path / "stored.npz", entries))
    np.savez_compressed(tmp_path / "deflated.npz", **entries)
    b = load_model(tmp_path / "deflated.npz")
    for key, arr in a.network.state_dict().items():
        np.testing.assert_array_equal(arr, b.network.state_dict()[key])


# ---------------------------------------------------------------- the budget

def test_budget_default_env_and_argument(goods, monkeypatch):
    path = goods["float"][0]
    monkeypatch.delenv(MAX_MODEL_BYTES_ENV, raising=False)
    assert model_budget() == DEFAULT_MAX_MODEL_BYTES == 2 << 30
    refused(path, r"needs \d+ bytes for parameters, gradients and buffers .*more than the 300 bytes model budget",
            max_bytes=300)
    refused(path, r"input_shape=\[1, 8, 8\] needs 256 bytes per image, more than the 100 bytes", max_bytes=100)
    monkeypatch.setenv(MAX_MODEL_BYTES_ENV, "300")
    refused(path, r"more than the 300 bytes model budget")
    load_model(path, max_bytes=10**6)  # the argument wins over the environment
    monkeypatch.setenv(MAX_MODEL_BYTES_ENV, "1000000")
    load_model(path)


@pytest.mark.parametrize("text", ["abc", "-1", "0", "1e9", "2.5", "1" * 30, "0x100"])
def test_bad_budget_environment(goods, monkeypatch, text):
    monkeypatch.setenv(MAX_MODEL_BYTES_ENV, text)
    with pytest.raises(FxpsimError, match=rf"{MAX_MODEL_BYTES_ENV}=.* is not a whole number of bytes >= 1"):
        load_model(goods["float"][0])


@pytest.mark.parametrize("value", [0, -5, 1.5, True, "10", [1]])
def test_bad_budget_argument(goods, value):
    with pytest.raises(FxpsimError, match=r"max_bytes=.* is not a whole number of bytes >= 1"):
        load_model(goods["float"][0], max_bytes=value)


# ---------------------------------------------------------------- the layer table against the layers

def test_the_layer_table_covers_every_registered_kind():
    assert set(LAYER_FIELDS) == set(LAYER_KINDS)


layer_cfg_st = st.one_of(
    st.builds(lambda n, m: {"kind": "dense", "n_in": n, "n_out": m}, st.integers(1, 9), st.integers(1, 9)),
    st.builds(lambda c, d, k, s, p: {"kind": "conv2d", "c_in": c, "c_out": d, "k": k, "stride": s, "padding": p},
              st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2)),
    st.builds(lambda n, m, meth: {"kind": "bdense", "n_in": n, "n_out": m, "method": meth},
              st.integers(1, 9), st.integers(1, 9), st.sampled_from(METHODS)),
    st.builds(lambda c, d, k, meth: {"kind": "bconv2d", "c_in": c, "c_out": d, "k": k, "method": meth},
              st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),
              st.sampled_from(METHODS)),
    st.builds(lambda n: {"kind": "batchnorm", "num_features": n}, st.integers(1, 9)),
    st.sampled_from([{"kind": k} for k in ("relu", "tanh", "sigmoid", "flatten", "sign")]
                    + [{"kind": "dropout", "p": 0.5}, {"kind": "maxpool2d", "size": 2},
                       {"kind": "avgpool2d", "size": 3, "stride": 1}]),
)


@hypo(80)
@given(cfg=layer_cfg_st)
def test_layer_state_shapes_twin_the_layers(cfg):
    """The shapes the reader expects (no allocation) == the arrays the layer class allocates."""
    params, buffers = layer_state_shapes(cfg)
    layer = layer_from_config(cfg)
    assert params == {k: v.shape for k, v in layer.params.items()}
    assert buffers == {k: v.shape for k, v in layer.buffers.items()}


@pytest.mark.parametrize("spec, shape", [(FLOAT_SPEC, (1, 8, 8)), (BINARY_SPEC, (1, 8, 8)),
                                         ("fc300-relu-fc100-relu-fc3", (1, 28, 28)),
                                         ("bfc16bnn-bn-sign-bfc8xnor-bn-bfc3twn", (1, 8, 8)),
                                         ("conv6x5s2p1-bn-relu-fc32-relu-fc3", (3, 15, 13))])
def test_check_architecture_twins_the_network(spec, shape):
    net = build_network(spec, shape, 3, seed=1)
    assert check_architecture(net.to_config(), 2 << 30) == {k: v.shape for k, v in net.state_dict().items()}
