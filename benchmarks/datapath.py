"""Speed of the bit-exact datapath against NumPy float32 matmul (issue 2, PERF-NOTES).

    python benchmarks/datapath.py [--repeats 5] [--quick] [--no-peers]

Prints a table and writes reports/bench_datapath.csv with columns
benchmark, case, seconds, baseline_seconds, ratio (= seconds / baseline).
The baseline is NumPy float32 matmul of the same logical shape, timed in
the same process interleaved with the case (median of repeats after one
warm-up), because other jobs may share the cores. Rows:

- dense (10000x784)x(784x300), 8-bit operands (post-ReLU-like data 0..127,
  half of it zero; int8 weights): ideal / wrap / clip with no or few risky
  outputs / clip where every output runs the sequential kernel (BW_acc 16:
  int16 lanes; 24: int32; 40: int64), a heavily saturating case, and data
  without zeros (the sequential kernels skip zero activations).
- conv, LeNet-5 conv2 shape: batch 1000, 6 -> 16 channels, 5x5, 14x14 input
  (baseline: the im2col matmul (100000x150)x(150x16) in float32).
- compile: first process with an empty Numba cache, second process (cache).
- peer: the same per-step clip with fxpmath and APyTypes on a reduced
  shape, and APyTypes on a full layer width too; here baseline_seconds is
  fxpsim on that shape, so ratio is the speed-up of fxpsim (results are
  checked bit-exact against fxpsim).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fxpsim.datapath.dense import conv2d, dense  # noqa: E402
from _bench import blas_line, load_line, print_rows, timed, write_rows  # noqa: E402
from fxpsim.qformat import QFormat  # noqa: E402

Q8 = QFormat(8, 0)


def interleaved(case, baseline, repeats: int) -> tuple[float, float]:
    """Median seconds of ``case`` and ``baseline``, timed alternately after a warm-up."""
    case()
    baseline()
    tc, tb = [], []
    for _ in range(repeats):
        tb.append(timed(baseline))
        tc.append(timed(case))
    return float(np.median(tc)), float(np.median(tb))


def dense_data(rng, rows=10000, k=784, n=300):
    x = rng.integers(0, 128, (rows, k)).astype(np.int8)
    x[rng.random(x.shape) < 0.5] = 0  # post-ReLU-like: half zeros
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    return x, w


def dense_cases(rng, repeats, rows):
    x, w = dense_data(rng, rows=rows)
    xf, wf = x.astype(np.float32), w.astype(np.float32)
    base = lambda: xf @ wf  # noqa: E731
    # few risky: 20 saturated input rows x 3 all-positive neurons leave BW_acc 24
    x_few, w_few = x.copy(), w.copy()
    x_few[:20] = 127
    w_few[:, :3] = 127
    # heavily saturating: all weights positive, every accumulator hits the rail early
    w_sat = np.abs(w.astype(np.int16)).clip(0, 127).astype(np.int8)
    near_rail = np.full(300, (1 << 23) - (1 << 18), dtype=np.int64)  # + positive sums: all saturate
    near_rail_40 = np.full(300, (1 << 39) - (1 << 18), dtype=np.int64)
    x_dense = np.maximum(x, 1).astype(np.int8)  # the kernels skip zero activations; here none is zero
    cases = [
        ("ideal, BW_acc 16", x, w, None, 16, "ideal"),
        ("wrap, BW_acc 24 (bound: no overflow)", x, w, None, 24, "wrap"),
        ("wrap, BW_acc 16 (overflow counts sequential)", x, w, None, 16, "wrap"),
        ("clip, BW_acc 24, no risky output", x, w, None, 24, "clip"),
        ("clip, BW_acc 24, few risky outputs", x_few, w_few, None, 24, "clip"),
        ("clip, BW_acc 16, all sequential (int16 lanes)", x, w, None, 16, "clip"),
        ("clip, BW_acc 16, heavily saturating", x, w_sat, None, 16, "clip"),
        ("clip, BW_acc 24, all sequential (int32 lanes, bias near the rail)", x, w_sat, near_rail, 24, "clip"),
        ("clip, BW_acc 40, all sequential (int64 lanes, bias near the rail)", x, w_sat, near_rail_40, 40,
         "clip"),
        ("wrap, BW_acc 16, no zero activations (every MAC runs)", x_dense, w, None, 16, "wrap"),
        ("clip, BW_acc 16, no zero activations (every MAC runs)", x_dense, w, None, 16, "clip"),
    ]
    rows_out = []
    for name, xx, ww, bb, acc_bits, mode in cases:
        kw = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=acc_bits, overflow=mode)
        res = dense(xx, ww, bb, **kw)
        secs, bsecs = interleaved(lambda: dense(xx, ww, bb, **kw), base, repeats)
        s = res.stats
        note = f" [{s.outputs_affected}/{res.y.size} outputs affected]"
        rows_out.append(("dense", name + note, secs, bsecs))
    return rows_out


def conv_cases(rng, repeats, batch):
    x = rng.integers(0, 128, (batch, 6, 14, 14)).astype(np.int8)
    x[rng.random(x.shape) < 0.5] = 0
    w = rng.integers(-128, 128, (16, 6, 5, 5)).astype(np.int8)
    cols = rng.random((batch * 100, 150)).astype(np.float32)
    wf = rng.random((150, 16)).astype(np.float32)
    base = lambda: cols @ wf  # noqa: E731
    out = []
    for name, acc_bits, mode in [("ideal", 16, "ideal"), ("wrap, BW_acc 16", 16, "wrap"),
                                 ("clip, BW_acc 16", 16, "clip"), ("clip, BW_acc 24", 24, "clip")]:
        kw = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=acc_bits, overflow=mode)
        secs, bsecs = interleaved(lambda: conv2d(x, w, None, **kw), base, repeats)
        out.append(("conv LeNet-5 conv2", f"{name}, batch {batch}", secs, bsecs))
    return out


COMPILE_SNIPPET = """
import time, numpy as np
t = time.perf_counter()
from fxpsim.datapath.dense import dense, conv2d
from fxpsim.qformat import QFormat
q = QFormat(8, 0)
x = np.arange(12, dtype=np.int8).reshape(3, 4); w = np.ones((4, 2), dtype=np.int8) * 100
for mode in ("wrap", "clip"):
    for acc in (8, 24):
        dense(x, w, None, fmt_x=q, fmt_w=q, fmt_y=q, acc_bits=acc, overflow=mode)
conv2d(np.ones((1, 1, 4, 4), dtype=np.int8), np.ones((1, 1, 3, 3), dtype=np.int8) * 100, None,
       fmt_x=q, fmt_w=q, fmt_y=q, acc_bits=8, overflow="clip")
print(time.perf_counter() - t)
"""


def compile_cases():
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        times = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET], env=env, check=True,
                                 capture_output=True, text=True, cwd=ROOT)
            times.append(float(out.stdout.strip().splitlines()[-1]))
    return [("compile", "first process, empty cache (import + first calls)", times[0], float("nan")),
            ("compile", "second process, cached", times[1], float("nan"))]


def peer_cases(rng, acc_bits=16, big_rows=256):
    """fxpmath / APyTypes: a loop over k with a per-step saturating cast (fxpsim's semantics).

    Both on a reduced shape (8x784x30: fxpmath takes seconds there); APyTypes,
    which is fast enough, also on a full layer width (``big_rows`` x784x300),
    where fxpsim's per-call overhead no longer dominates its time.
    """
    out = []

    def peer_row(name: str, run, x, w) -> tuple:
        """Time one run of a peer, check it bit-exact against fxpsim; ratio = fxpsim speed-up."""
        kw = dict(fmt_x=Q8, fmt_w=Q8, fmt_y=Q8, acc_bits=acc_bits, overflow="clip")
        ours = dense(x, w, None, **kw).acc
        t_ours, _ = interleaved(lambda: dense(x, w, None, **kw), lambda: None, 5)
        got = []
        secs = timed(lambda: got.append(run(x, w)))
        tag = "bit-exact" if np.array_equal(got[0], ours) else "DIFFERS from fxpsim"
        shape = f"{x.shape[0]}x{x.shape[1]}x{w.shape[1]}"
        return ("peer", f"{name} per-step clip {shape} ({tag}); ratio = fxpsim speed-up", secs, t_ours)

    small = dense_data(rng, rows=8, k=784, n=30)
    try:
        from fxpmath import Fxp

        def fxpmath_run(x, w):
            xs = Fxp(x.astype(np.int64), signed=True, n_word=8, n_frac=0)
            ws = Fxp(w.astype(np.int64), signed=True, n_word=8, n_frac=0)
            acc = Fxp(np.zeros((x.shape[0], w.shape[1])), signed=True, n_word=acc_bits, n_frac=0,
                      overflow="saturate")
            for kk in range(x.shape[1]):
                acc = Fxp(acc + xs[:, kk:kk + 1] * ws[kk:kk + 1, :], like=acc)
            return np.asarray(acc.val, dtype=np.int64)

        out.append(peer_row("fxpmath", fxpmath_run, *small))
    except ImportError:
        print("fxpmath not installed: pip install -e '.[bench]'")
    try:
        from apytypes import APyFixedArray, OverflowMode

        def apy_run(x, w):
            xs = APyFixedArray.from_float(x.astype(np.float64), int_bits=8, frac_bits=0)
            ws = APyFixedArray.from_float(w.astype(np.float64), int_bits=8, frac_bits=0)
            acc = APyFixedArray.from_float(np.zeros((x.shape[0], w.shape[1])), int_bits=acc_bits,
                                           frac_bits=0)
            for kk in range(x.shape[1]):
                acc = (acc + xs[:, kk:kk + 1] * ws[kk:kk + 1, :]).cast(
                    int_bits=acc_bits, frac_bits=0, overflow=OverflowMode.SAT)
            return acc.to_numpy().astype(np.int64)

        out.append(peer_row("APyTypes", apy_run, *small))
        out.append(peer_row("APyTypes", apy_run, *dense_data(rng, rows=big_rows, k=784, n=300)))
    except ImportError:
        print("apytypes not installed: pip install -e '.[bench]'")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller shapes (a smoke run)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench_datapath.csv"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"BLAS: {blas_line()}")
    print(load_line())
    rows = compile_cases()
    rows += dense_cases(rng, args.repeats, 1000 if args.quick else 10000)
    rows += conv_cases(rng, args.repeats, 100 if args.quick else 1000)
    if not args.no_peers:
        rows += peer_cases(rng, big_rows=32 if args.quick else 256)
    print_rows(rows, 20)
    write_rows(Path(args.out), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
