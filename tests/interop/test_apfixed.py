"""fxpsim against Xilinx's ap_fixed, bit for bit (issue 16, item 2; the mapping: docs/APFIXED.md).

``apfixed_check.cpp`` is compiled (once per source, job list, flags and headers: cached in the temp
directory under their hash) against the ap_types headers the hls4ml wheel ships (Apache-2.0,
found without importing hls4ml), and every case goes to it in bulk, one process per test. Cases
come from NumPy with fixed seeds, at least 10,000 per ap_q_mode / ap_o_mode pair, compared as raw
integers (DESIGN.md, "Fixed-point semantics"):

(a) quantize: ``ap_fixed<W, I, Q, O> v = d`` (and ap_ufixed) vs ``qformat.quantize(d,
    QFormat(I, W - I), rounding, overflow)``: I counts the sign bit in both;
(b) accumulation: ``ap_fixed<BW_acc, BW_acc - FL_acc, AP_TRN, O> acc = bias; acc += x * w`` and
    hls4ml's ``accum_t p = x * w; acc += p`` vs ``datapath.dense.dense`` and its reference twin
    (final accumulators and overflow counts);
(c) requantization: ``ap_fixed<W_y, I_y, Q, O> y = acc`` vs ``datapath.core.requantize`` and
    ``datapath.reference.requantize_one``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fxpsim.config import LayerConfig
from fxpsim.datapath import core, dense, reference
from fxpsim.qformat import Overflow, QFormat, Rounding, quantize

# ----------------------------------------------------------------- the mapping under test

AP_Q_MODE = {Rounding.NEAREST_EVEN: "AP_RND_CONV", Rounding.NEAREST: "AP_RND_INF",
             Rounding.FLOOR: "AP_TRN", Rounding.TOWARD_ZERO: "AP_TRN_ZERO"}
"""fxpsim rounding -> ap_q_mode (stochastic has none)."""
AP_O_MODE = {Overflow.WRAP: "AP_WRAP", Overflow.CLIP: "AP_SAT"}
"""fxpsim overflow -> ap_o_mode (ideal has none)."""
MODE_PAIRS = [(r, o) for r in AP_Q_MODE for o in AP_O_MODE]
PAIR_IDS = [f"{AP_Q_MODE[r]}-{AP_O_MODE[o]}" for r, o in MODE_PAIRS]
UNMAPPED = [("AP_RND", "AP_SAT"), ("AP_RND_ZERO", "AP_SAT"), ("AP_RND_MIN_INF", "AP_SAT"),
            ("AP_TRN", "AP_SAT_SYM"), ("AP_RND_CONV", "AP_SAT_SYM"), ("AP_TRN", "AP_SAT_ZERO")]
"""ap_fixed modes fxpsim has no name for, checked against the models in docs/APFIXED.md."""
MIN_CASES = 10_000
"""Cases per mode pair (issue 16's target)."""


# ----------------------------------------------------------------- where the tools are

SOURCE = Path(__file__).with_name("apfixed_check.cpp")
CXX = shutil.which("g++")
CXX_FLAGS = [os.environ.get("FXPSIM_APFIXED_OPT", "-O0"), "-std=c++14", "-w"]
"""-O0 by default (the ~330 ap_fixed instantiations take 20-30 s of CPU, ~1.3x that at -O2); set
FXPSIM_APFIXED_OPT=-O3 to build as hls4ml's compile() does (the results are the same)."""


def ap_types_dir() -> Path | None:
    """hls4ml's bundled ap_types headers, found without importing hls4ml (it pulls heavy things)."""
    spec = importlib.util.find_spec("hls4ml")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "templates" / "vivado" / "ap_types"
        if (path / "ap_fixed.h").is_file():
            return path
    return None


AP_TYPES = ap_types_dir()
pytestmark = pytest.mark.skipif(
    CXX is None or AP_TYPES is None,
    reason="needs g++ and the ap_types headers of the hls4ml wheel (pip install hls4ml; in CI both are "
           "present)")


def ap_type(fmt: QFormat, q: str = "AP_TRN", o: str = "AP_WRAP") -> str:
    """``ap_fixed<W, I, Q, O>`` (``ap_ufixed`` when unsigned) for ``fmt``: I = fmt.int_bits."""
    return f"ap_{'' if fmt.signed else 'u'}fixed<{fmt.width}, {fmt.int_bits}, {q}, {o}>"


# ----------------------------------------------------------------- the cases (fixed seeds)

SEED = 16


def _quantize_formats() -> list[QFormat]:
    """Edge formats (W = 1, negative I, I > W, W = 62) and random ones (W 1..32, I -8..W+8)."""
    rng = np.random.default_rng(SEED)
    edges = [(1, 1), (1, 0), (1, -3), (2, 5), (8, -3), (8, 12), (16, 16), (32, 1), (40, 45),
             (48, 20), (62, 62), (62, 0), (62, -4)]
    random = [(int(w), int(rng.integers(-8, w + 9))) for w in rng.integers(1, 33, size=3)]
    unsigned = [(1, 1), (8, -2), (16, 20), (62, 40)]
    return ([QFormat(i, w - i) for w, i in edges + random]
            + [QFormat(i, w - i, signed=False) for w, i in unsigned])


def _requantize_pairs() -> list[tuple[QFormat, QFormat]]:
    """(accumulator, output) formats: right shifts (ties), none, left shifts; y narrower or wider."""
    rng = np.random.default_rng(SEED + 1)
    pairs = [(QFormat(16, 16), QFormat(8, 8)), (QFormat(20, 12), QFormat(4, 4)),
             (QFormat(62, 0), QFormat(18, -10)), (QFormat(2, 60), QFormat(1, 31)),
             (QFormat(8, 8), QFormat(4, 12)), (QFormat(10, 6), QFormat(6, 6)),
             (QFormat(6, -4), QFormat(2, 2)), (QFormat(1, 1), QFormat(1, 0))]
    while len(pairs) < 10:
        bw = int(rng.integers(2, 63))
        fa = int(rng.integers(-4, bw + 5))
        wy = int(rng.integers(1, 33))
        fy = fa - int(rng.integers(-6, 21))
        pairs.append((QFormat(bw - fa, fa), QFormat(wy - fy, fy)))
    return pairs


@dataclasses.dataclass(frozen=True)
class AccCase:
    """One layer of (b): formats, BW_acc, K, B x N outputs; the knobs as LayerConfig fields."""

    fmt_x: QFormat
    fmt_w: QFormat
    acc_bits: int
    k: int
    batch: int = 25
    n_out: int = 42
    knobs: tuple = ()

    @property
    def frac_acc(self) -> int:
        return dict(self.knobs).get("frac_acc", self.fmt_x.frac_bits + self.fmt_w.frac_bits)

    @property
    def fmt_acc(self) -> QFormat:
        return QFormat(self.acc_bits - self.frac_acc, self.frac_acc)

    @property
    def product_fits(self) -> bool:
        """Every exact product inside BW_acc (so hls4ml's cast into accum_t changes nothing)."""
        shift = self.frac_acc - self.fmt_x.frac_bits - self.fmt_w.frac_bits
        return shift >= 0 and self.fmt_x.width + self.fmt_w.width + shift <= self.acc_bits

    def config(self, overflow: Overflow) -> LayerConfig:
        return LayerConfig("apfixed", fmt_w=self.fmt_w, fmt_x=self.fmt_x, fmt_y=QFormat(8, 8),
                           acc_bits=self.acc_bits, overflow=overflow, **dict(self.knobs))

    def jobs(self, overflow: Overflow) -> list[str]:
        """The C++ jobs: ``accum_t p = x * w; acc += p`` for ``product="cast"`` (accum_t's
        ap_q_mode = product_rounding), else ``acc += x * w`` (AP_TRN: ap_fixed rounds the sum,
        which equals rounding each product only for floor) and, when every product fits BW_acc,
        the cast form too (then it changes nothing)."""
        knobs = dict(self.knobs)
        rounding = Rounding(knobs.get("product_rounding", Rounding.FLOOR))
        cast = knobs.get("product") == "cast"
        assert cast or rounding is Rounding.FLOOR, "acc += x * w rounds the sum, not each product"
        forms = [cast] + ([True] if not cast and self.product_fits and not self.knobs else [])
        return [f"accumulate<{ap_type(self.fmt_x)}, {ap_type(self.fmt_w)}, "
                f"{ap_type(self.fmt_acc, AP_Q_MODE[rounding], AP_O_MODE[overflow])}, {str(c).lower()}>"
                for c in forms]


def _acc_cases() -> list[AccCase]:
    """Exact products (FL_acc = FL_w + FL_x): narrow and wide accumulators, W 1..31, K 1..48."""
    rng = np.random.default_rng(SEED + 2)
    cases = [AccCase(QFormat(1, 0), QFormat(1, 0), 1, 7), AccCase(QFormat(1, 3), QFormat(2, 0), 2, 16),
             AccCase(QFormat(31, 0), QFormat(31, 0), 62, 4, n_out=10),
             AccCase(QFormat(10, -2), QFormat(-1, 5), 9, 32)]
    while len(cases) < 11:
        wx, ww = (int(v) for v in rng.integers(1, 17, size=2))
        ix, iw = int(rng.integers(-3, wx + 4)), int(rng.integers(-3, ww + 4))
        bits = int(rng.integers(max(1, wx + ww - 4), min(62, wx + ww + 6) + 1))
        cases.append(AccCase(QFormat(ix, wx - ix), QFormat(iw, ww - iw), bits, int(rng.integers(1, 49))))
    return cases


def _cast_cases() -> list[AccCase]:
    """hls4ml's accum_t: FL_acc below (and above) FL_w + FL_x, products cast or exact, every
    product rounding (the exact form only with floor: ap_fixed's ``acc += x*w`` rounds the sum)."""
    rng = np.random.default_rng(SEED + 3)
    modes = [("cast", r) for r in AP_Q_MODE] + [("exact", Rounding.FLOOR)] * 2
    cases = []
    for i in range(12):
        product, rounding = modes[i % len(modes)]
        wx, ww = (int(v) for v in rng.integers(2, 17, size=2))
        ix, iw = int(rng.integers(-2, wx + 3)), int(rng.integers(-2, ww + 3))
        fl = (wx - ix) + (ww - iw)
        d = -int(rng.integers(1, 4)) if i in (5, 7) else int(rng.integers(1, 9))  # FL_acc = FL - d
        bits = int(rng.integers(max(1, wx + ww - d - 4), min(62, wx + ww - d + 5) + 1))
        cases.append(AccCase(QFormat(ix, wx - ix), QFormat(iw, ww - iw), bits, int(rng.integers(1, 49)),
                             knobs=(("frac_acc", fl - d), ("product", product),
                                    ("product_rounding", rounding))))
    return cases


QUANTIZE_FORMATS = _quantize_formats()
REQUANTIZE_PAIRS = _requantize_pairs()
ACC_CASES = _acc_cases()
CAST_CASES = _cast_cases()
UNMAPPED_FORMATS = [QUANTIZE_FORMATS[i] for i in (0, 4, 5, 9, -2)]
SYM_FORMATS = [f for f in QUANTIZE_FORMATS if f.signed and f.width >= 2]
"""Signed formats of 2 bits and more: fxpsim's narrow ones saturate as ``AP_SAT_SYM``."""


def _quantize_job(fmt: QFormat, q: str, o: str) -> str:
    return f"quantize<{ap_type(fmt, q, o)} >"


def _requantize_job(fmt_acc: QFormat, fmt_y: QFormat, q: str, o: str) -> str:
    return f"requantize<{ap_type(fmt_acc)}, {ap_type(fmt_y, q, o)} >"


def _all_jobs() -> list[str]:
    jobs = [_quantize_job(f, AP_Q_MODE[r], AP_O_MODE[o]) for f in QUANTIZE_FORMATS for r, o in MODE_PAIRS]
    jobs += [_quantize_job(f, q, o) for f in UNMAPPED_FORMATS for q, o in UNMAPPED]
    jobs += [_requantize_job(a, y, AP_Q_MODE[r], AP_O_MODE[o]) for a, y in REQUANTIZE_PAIRS
             for r, o in MODE_PAIRS]
    jobs += [job for case in ACC_CASES + CAST_CASES for o in AP_O_MODE for job in case.jobs(o)]
    jobs += [_quantize_job(f, q, "AP_SAT_SYM") for f in SYM_FORMATS for q in AP_Q_MODE.values()]
    return list(dict.fromkeys(jobs))


JOBS = _all_jobs()
JOB_INDEX = {job: i for i, job in enumerate(JOBS)}


# ----------------------------------------------------------------- building and running the checker

def _build() -> Path:
    """The checker binary, compiled once per (source, jobs, compiler, flags, headers) hash: the jobs
    split over up to 4 parts compiled in parallel (ap_fixed's templates make each type slow)."""
    version = subprocess.run([CXX, "--version"], check=False, capture_output=True, text=True).stdout
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), "\n".join(JOBS).encode(), " ".join(CXX_FLAGS).encode(),
                 version.encode()):
        key.update(part)
    for header in sorted(AP_TYPES.rglob("*.h")):
        key.update(header.read_bytes())
    where = Path(tempfile.gettempdir()) / f"fxpsim-apfixed-{key.hexdigest()[:16]}"
    exe = where / "apfixed_check"
    if exe.is_file():
        return exe
    where.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}"
    parts = min(4, os.cpu_count() or 1, len(JOBS))
    procs = []
    for p in range(parts):
        cases = where / f"part{p}.{tag}.inc"
        cases.write_text("".join(f"JOB({i}, {job})\n" for i, job in enumerate(JOBS) if i % parts == p))
        cmd = [CXX, *CXX_FLAGS, f"-I{AP_TYPES}", f'-DAPFIXED_CASES="{cases}"', "-c", str(SOURCE),
               "-o", str(where / f"part{p}.{tag}.o")] + (["-DAPFIXED_MAIN"] if p == 0 else [])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errors = [err for proc in procs for err in [proc.communicate()[1]] if proc.returncode]
    tmp = where / f"apfixed_check.{tag}"
    if not errors:
        objects = [str(where / f"part{p}.{tag}.o") for p in range(parts)]
        link = subprocess.run([CXX, *objects, "-o", str(tmp)], check=False, capture_output=True, text=True)
        errors += [link.stderr] if link.returncode else []
    for p in range(parts):
        for suffix in ("inc", "o"):
            (where / f"part{p}.{tag}.{suffix}").unlink(missing_ok=True)
    if errors:
        pytest.fail(f"compiling {SOURCE.name} failed: {errors[0][-2000:]}")
    os.replace(tmp, exe)  # atomic: a concurrent session sees the whole binary or none
    return exe


@pytest.fixture(scope="module")
def apfixed():
    """``run(blocks) -> [int64 array per block]``, blocks ``(job, n, k, payload)``, one process."""
    exe = _build()

    def run(blocks):
        data, sizes = [], []
        for job, n, k, payload in blocks:
            payload = np.ascontiguousarray(payload, dtype=np.int64).ravel()
            data += [np.array([JOB_INDEX[job], n, k, payload.size], dtype=np.int64).tobytes(),
                     payload.tobytes()]
            sizes.append(2 * n if job.startswith("accumulate") else n)
        proc = subprocess.run([str(exe)], input=b"".join(data), check=False, capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        out = np.frombuffer(proc.stdout, dtype=np.int64)
        assert out.size == sum(sizes), f"checker wrote {out.size} values, expected {sum(sizes)}"
        return np.split(out, np.cumsum(sizes)[:-1])

    return run


def assert_same(ours, theirs, inputs, what: str) -> None:
    """Equal raw integers, or the first mismatches with their inputs (a minimal case to report)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    bad = np.flatnonzero(ours.ravel() != theirs.ravel())
    if bad.size:
        shown = "; ".join(f"input {_show(np.asarray(inputs).ravel()[i])}: fxpsim {ours.ravel()[i]}, "
                          f"ap_fixed {theirs.ravel()[i]}" for i in bad[:5])
        pytest.fail(f"{what}: {bad.size}/{ours.size} differ: {shown}")


def _show(v) -> str:
    return f"{float(v)!r} ({float(v).hex()})" if isinstance(v, (float, np.floating)) else repr(int(v))


# ----------------------------------------------------------------- (a) quantize

def _doubles(fmt: QFormat, n: int, rng) -> np.ndarray:
    """``n`` doubles for ``fmt`` (plus fixed edges): ties at half an lsb of both signs (near 0,
    the rails and at random), codes, values between codes, far outside the range, tiny values,
    the rails, subnormals and the double range's ends."""
    f, lo, hi = fmt.frac_bits, fmt.raw_min, fmt.raw_max
    span = hi - lo + 1
    tie_ok = 1 << 51  # k + 0.5 is an exact double for |k| < 2**52

    def lsbs(k):
        return np.ldexp(np.asarray(k, dtype=np.float64), -f)

    near = [lo, hi, 0, 1, -1, lo - 1, hi + 1, 2 * lo, 2 * hi + 2]
    ties = [k + d for k in (lo - 1, lo, hi - 1, hi, -2, -1, 0, 1) if abs(k) < tie_ok
            for d in (0.5, 0.25, 0.75)]
    special = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, -2.2250738585072014e-308,
               1e-300, -1e-300, 1e300, -1e300, 1.7976931348623157e308, -1.7976931348623157e308]
    fixed = np.concatenate([lsbs(near), lsbs(ties), special])
    m = max(n - fixed.size, 0) // 5
    k = rng.integers(lo - span // 2 - 2, hi + span // 2 + 2, size=m, endpoint=True)
    grid = lsbs(k)
    half = lsbs(np.clip(rng.integers(lo - span // 2 - 2, hi + span // 2 + 2, size=m, endpoint=True),
                        -tie_ok, tie_ok).astype(np.float64) + 0.5)
    between = lsbs(k.astype(np.float64) + rng.random(m))
    e = rng.integers(-f - 70, fmt.int_bits + 70, size=m, endpoint=True)
    spread = np.ldexp(1.0 + rng.random(m), e) * rng.choice([-1.0, 1.0], size=m)
    rest = max(n - fixed.size - 4 * m, 0)  # big exact integers of lsbs: wrap keeps their low bits
    big = lsbs(rng.integers(1, 1 << 53, size=rest) * rng.choice([-1.0, 1.0], size=rest)) \
        * np.ldexp(1.0, rng.integers(0, 12, size=rest))
    return np.concatenate([fixed, grid, half, between, spread, big])


def _quantize_values() -> list[np.ndarray]:
    rng = np.random.default_rng(SEED + 4)
    per_format = -(-MIN_CASES // len(QUANTIZE_FORMATS))
    return [_doubles(fmt, per_format, rng) for fmt in QUANTIZE_FORMATS]


@pytest.mark.parametrize("rounding,overflow", MODE_PAIRS, ids=PAIR_IDS)
def test_quantize_matches_ap_fixed(apfixed, rounding, overflow):
    """(a) ``ap_fixed<W, I, Q, O> v = d`` == ``quantize(d, QFormat(I, W - I), rounding, overflow)``."""
    values = _quantize_values()
    q, o = AP_Q_MODE[rounding], AP_O_MODE[overflow]
    outs = apfixed([(_quantize_job(f, q, o), v.size, 0, v.view(np.int64))
                    for f, v in zip(QUANTIZE_FORMATS, values)])
    assert sum(v.size for v in values) >= MIN_CASES
    for fmt, v, theirs in zip(QUANTIZE_FORMATS, values, outs):
        what = f"quantize to {ap_type(fmt, q, o)} ({fmt}, {rounding.value}, {overflow.value})"
        assert_same(quantize(v, fmt, rounding, overflow), theirs, v, what)
        plain = np.abs(v) < 1e200  # without the values that take quantize's stand-in paths
        assert_same(quantize(v[plain], fmt, rounding, overflow), theirs[plain], v[plain], what)


@pytest.mark.parametrize("rounding", list(AP_Q_MODE), ids=list(AP_Q_MODE.values()))
def test_narrow_quantize_matches_ap_sat_sym(apfixed, rounding):
    """``ap_fixed<W, I, Q, AP_SAT_SYM> v = d`` == ``quantize(d, QFormat(I, W - I, narrow=True), rounding,
    "clip")``, the mapping :func:`fxpsim.interop.hls4ml.precision` writes for a narrow format."""
    from fxpsim.interop.hls4ml import precision
    rng = np.random.default_rng(SEED + 6)
    q = AP_Q_MODE[rounding]
    values = [_doubles(fmt, -(-MIN_CASES // len(SYM_FORMATS)), rng) for fmt in SYM_FORMATS]
    outs = apfixed([(_quantize_job(f, q, "AP_SAT_SYM"), v.size, 0, v.view(np.int64)) for f, v in zip(SYM_FORMATS, values)])
    assert sum(v.size for v in values) >= MIN_CASES
    for fmt, v, theirs in zip(SYM_FORMATS, values, outs):
        narrow = QFormat(fmt.int_bits, fmt.frac_bits, narrow=True)
        assert precision(narrow, rounding, Overflow.CLIP).endswith(f",{q},AP_SAT_SYM>")
        assert_same(quantize(v, narrow, rounding, "clip"), theirs, v, f"quantize to {ap_type(fmt, q, 'AP_SAT_SYM')}")
        assert (theirs >= -fmt.raw_max).all()


def _ap_model(x: float, fmt: QFormat, q: str, o: str) -> int:
    """docs/APFIXED.md's model of an ap_fixed conversion, on exact rationals."""
    s = Fraction(x) * Fraction(2) ** fmt.frac_bits
    low = math.floor(s)
    rem = s - low
    half = Fraction(1, 2)
    up = {"AP_TRN": False, "AP_RND": rem >= half, "AP_RND_MIN_INF": rem > half,
          "AP_RND_ZERO": rem > half or (rem == half and s < 0),
          "AP_RND_CONV": rem > half or (rem == half and low % 2 == 1)}[q]
    r = low + up
    symmetric = o == "AP_SAT_SYM" and fmt.signed and fmt.width > 1  # 1 bit: -1 stays (no +1)
    lo, hi = (-fmt.raw_max if symmetric else fmt.raw_min), fmt.raw_max
    if o == "AP_SAT_ZERO":
        return r if lo <= r <= hi else 0
    return max(lo, min(hi, r))


@pytest.mark.parametrize("q,o", UNMAPPED, ids=[f"{q}-{o}" for q, o in UNMAPPED])
def test_unmapped_modes_are_what_the_docs_say(apfixed, q, o):
    """ap_fixed's modes without an fxpsim name behave as docs/APFIXED.md models them; AP_RND is
    fxpsim's ``nearest`` except at negative ties (which it sends up: why nearest is AP_RND_INF)."""
    rng = np.random.default_rng(SEED + 5)
    values = [_doubles(fmt, 400, rng) for fmt in UNMAPPED_FORMATS]
    outs = apfixed([(_quantize_job(f, q, o), v.size, 0, v.view(np.int64))
                    for f, v in zip(UNMAPPED_FORMATS, values)])
    negative_ties = 0
    for fmt, v, theirs in zip(UNMAPPED_FORMATS, values, outs):
        model = [_ap_model(float(x), fmt, q, o) for x in v]
        assert_same(model, theirs, v, f"the model of {ap_type(fmt, q, o)} (the test's, not fxpsim's)")
        if q == "AP_RND":
            ours = quantize(v, fmt, Rounding.NEAREST, Overflow.CLIP)
            scaled = [Fraction(float(x)) * Fraction(2) ** fmt.frac_bits for x in v]
            tie = np.array([s < 0 and s - math.floor(s) == Fraction(1, 2) for s in scaled])
            differ = ours != theirs
            assert not (differ & ~tie).any(), f"{fmt}: AP_RND and nearest differ off negative ties"
            negative_ties += int((differ & tie).sum())
    assert q != "AP_RND" or negative_ties > 0


# ----------------------------------------------------------------- (c) requantization

def _accumulators(fmt_acc: QFormat, fmt_y: QFormat, n: int, rng) -> np.ndarray:
    """``n`` raw accumulators (plus edges): uniform, the rails, ties of the shift of both signs,
    values next to where the output saturates, small values."""
    lo, hi = fmt_acc.raw_min, fmt_acc.raw_max
    s = fmt_acc.frac_bits - fmt_y.frac_bits
    edges = [lo, hi, 0, 1, -1]
    if s > 0:
        half = 1 << (s - 1)
        for rail in (fmt_y.raw_max << s, fmt_y.raw_min << s, 0, 1 << s, -(1 << s)):
            edges += [rail + d for d in (-half - 1, -half, -half + 1, half - 1, half, half + 1)]
    else:
        edges += [fmt_y.raw_max >> -s, (fmt_y.raw_max >> -s) + 1, -((-fmt_y.raw_min) >> -s),
                  -((-fmt_y.raw_min) >> -s) - 1]
    m = max(n - len(edges), 0) // 3
    uniform = rng.integers(lo, hi, size=m, endpoint=True)
    small = rng.integers(max(lo, -(1 << max(s, 0) + 6)), min(hi, 1 << max(s, 0) + 6), size=m, endpoint=True)
    if s > 0:
        codes = rng.integers(lo >> s, hi >> s, size=n - len(edges) - 2 * m, endpoint=True)
        ties = (codes << s) + (1 << (s - 1))
    else:
        ties = rng.integers(lo, hi, size=n - len(edges) - 2 * m, endpoint=True)
    edges = np.array([min(max(e, lo), hi) for e in edges], dtype=np.int64)
    return np.clip(np.concatenate([edges, uniform, small, ties]), lo, hi)


def _requantize_config(fmt_acc: QFormat, fmt_y: QFormat, rounding: Rounding, overflow: Overflow):
    """A layer whose accumulator is ``fmt_acc`` (1-bit operands with FL_x + FL_w = FL_acc)."""
    a = fmt_acc.frac_bits // 2
    b = fmt_acc.frac_bits - a
    knobs = {"output_overflow": overflow}
    return LayerConfig("apfixed", fmt_w=QFormat(1 - a, a), fmt_x=QFormat(1 - b, b), fmt_y=fmt_y,
                       acc_bits=fmt_acc.width, rounding=rounding, **knobs)


@pytest.mark.parametrize("rounding,overflow", MODE_PAIRS, ids=PAIR_IDS)
def test_requantize_matches_ap_fixed(apfixed, rounding, overflow):
    """(c) ``ap_fixed<W_y, I_y, Q, O> y = acc`` == core.requantize == reference.requantize_one."""
    rng = np.random.default_rng(SEED + 6)
    per_pair = -(-MIN_CASES // len(REQUANTIZE_PAIRS))
    accs = [_accumulators(a, y, per_pair, rng) for a, y in REQUANTIZE_PAIRS]
    q, o = AP_Q_MODE[rounding], AP_O_MODE[overflow]
    outs = apfixed([(_requantize_job(a, y, q, o), v.size, 0, v) for (a, y), v in zip(REQUANTIZE_PAIRS, accs)])
    assert sum(v.size for v in accs) >= MIN_CASES
    for (fmt_acc, fmt_y), v, theirs in zip(REQUANTIZE_PAIRS, accs, outs):
        cfg = _requantize_config(fmt_acc, fmt_y, rounding, overflow)
        what = f"requantize {fmt_acc} -> {ap_type(fmt_y, q, o)}"
        assert_same(core.requantize(v, cfg), theirs, v, what)
        assert_same([reference.requantize_one(int(a), i, cfg) for i, a in enumerate(v)], theirs, v,
                    f"{what} (reference)")


# ----------------------------------------------------------------- (b) accumulation

def _layer(case: AccCase, rng):
    """Raw x (B, K), w (K, N) with their rails often and some zeros, bias (N,) small or at rails."""
    def raws(fmt, shape):
        v = rng.integers(fmt.raw_min, fmt.raw_max, size=shape, endpoint=True)
        pick = rng.random(shape)
        v[pick < 0.15] = fmt.raw_max
        v[(pick >= 0.15) & (pick < 0.3)] = fmt.raw_min
        v[(pick >= 0.3) & (pick < 0.4)] = 0
        return v
    x = raws(case.fmt_x, (case.batch, case.k))
    w = raws(case.fmt_w, (case.k, case.n_out))
    acc = case.fmt_acc
    small = raws(acc, case.n_out) >> (acc.width // 2)
    bias = np.where(rng.random(case.n_out) < 0.8, small, raws(acc, case.n_out))
    return x, w, bias


def _sequences(x, w, bias) -> np.ndarray:
    """The checker's payload: per output (b, n) ``[bias_n, x_b0, w_0n, x_b1, w_1n, ...]``."""
    bsz, k = x.shape
    n = w.shape[1]
    seq = np.empty((bsz, n, 1 + 2 * k), dtype=np.int64)
    seq[:, :, 0] = bias[None, :]
    seq[:, :, 1::2] = x[:, None, :]
    seq[:, :, 2::2] = w.T[None, :, :]
    return seq


def _check_layer(apfixed, cases, overflow: Overflow, seed: int) -> int:
    """Run each case's layer through ap_fixed (each of its jobs) and fxpsim's dense engine and
    reference twin; compare final accumulators and overflow counts. Returns the outputs checked."""
    rng = np.random.default_rng(seed)
    layers = [_layer(case, rng) for case in cases]
    jobs = [case.jobs(overflow) for case in cases]
    outs = iter(apfixed([(job, x.shape[0] * w.shape[1], x.shape[1], _sequences(x, w, bias))
                         for (x, w, bias), js in zip(layers, jobs) for job in js]))
    checked = 0
    for case, (x, w, bias), js in zip(cases, layers, jobs):
        cfg = case.config(overflow)
        results = {"dense": dense.dense(x, w, bias, cfg), "reference": reference.dense(x, w, bias, cfg)}
        for job in js:
            theirs = next(outs).reshape(x.shape[0], w.shape[1], 2)
            for engine, res in results.items():
                what = f"{engine} {cfg.fmt_x} x {cfg.fmt_w}, K={x.shape[1]} vs {job}"
                assert_same(res.acc, theirs[:, :, 0], np.broadcast_to(bias, res.acc.shape), what)
                assert res.stats.overflow_count == int(theirs[:, :, 1].sum()), f"{what}: overflow count"
                assert res.stats.outputs_affected == int((theirs[:, :, 1] > 0).sum()), \
                    f"{what}: outputs affected"
        checked += x.shape[0] * w.shape[1]
    return checked


@pytest.mark.parametrize("overflow", list(AP_O_MODE), ids=list(AP_O_MODE.values()))
def test_accumulation_matches_ap_fixed(apfixed, overflow):
    """(b) ``acc = bias; acc += x * w`` in ap_fixed<BW_acc, BW_acc - FL_acc, AP_TRN, O>, and
    hls4ml's ``accum_t p = x * w; acc += p`` where every product fits BW_acc (then the cast
    changes nothing), == dense and reference (FL_acc = FL_w + FL_x, exact products)."""
    outputs = _check_layer(apfixed, ACC_CASES, overflow, SEED + 7)
    assert outputs >= MIN_CASES


@pytest.mark.parametrize("overflow", list(AP_O_MODE), ids=list(AP_O_MODE.values()))
def test_cast_accumulation_matches_hls4ml_accum_t(apfixed, overflow):
    """(b) with the knobs: FL_acc != FL_w + FL_x, ``product="cast"`` with each product rounding
    (= accum_t's ap_q_mode) vs ``accum_t p = x * w; acc += p``, ``product="exact"`` (floor) vs
    ``acc += x * w``."""
    outputs = _check_layer(apfixed, CAST_CASES, overflow, SEED + 8)
    assert outputs >= MIN_CASES
