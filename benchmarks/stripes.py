"""Bit-serial (Stripes) conv kernel vs the bit-parallel datapath and NumPy float32.

Shape: LeNet-5 conv2, batch 1000 x 6 -> 16 channels, 5x5 kernel, 14x14
input -> 10x10 (K = 150 terms per output, 1.6 M outputs, 240 M MACs).
Activations unsigned (post-ReLU, ``UQp.0``) at a few precisions p, weights
Q8.0, a 16-bit clip accumulator (saturating heavily, so the bit-parallel
datapath cannot take its exact BLAS fast path and runs its sequential
kernel) and a 32-bit wrap accumulator (where it can). Cases:

- ``numpy float32``: im2col + float32 BLAS matmul of the same logical shape;
- ``kernels.conv2d``: the bit-parallel datapath (fxpsim.kernels);
- ``bit-parallel twin``: the Stripes kernel with one whole-value digit and
  one lane (the same loop structure, one product per addition);
- ``bit-serial p=..``: :func:`fxpsim.stripes.bit_serial_conv2d`, 16 lanes.

``ratio = seconds / baseline_seconds`` (a slowdown: > 1 is slower than the
baseline). Rows of ``stripes_vs_float32`` use the float32 time as baseline,
rows of ``stripes_vs_bit_parallel`` the bit-parallel datapath's at the same
accumulator. Medians of interleaved repeats after a warm-up; the machine is
shared (2 cores), the load average is printed.

    python benchmarks/stripes.py [--batch 1000 --repeats 3 --precisions 1,2,4,8,16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bench import print_rows, timed, write_rows  # noqa: E402
import fxpsim.datapath.dense as kernels  # noqa: E402
from fxpsim.datapath.bitserial import _bit_parallel, bit_serial_conv2d  # noqa: E402
from fxpsim.datapath.core import im2col  # noqa: E402

REPORT = Path(__file__).resolve().parents[1] / "reports" / "bench_stripes.csv"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", default="1,2,4,8,16")
    ap.add_argument("--out", type=Path, default=REPORT)
    args = ap.parse_args(argv)
    precisions = [int(p) for p in args.precisions.split(",")]

    rng = np.random.default_rng(0)
    c, f, k, hw = 6, 16, 5, 14
    w = rng.integers(-128, 128, (f, c, k, k))
    xs = {p: rng.integers(0, 1 << p, (args.batch, c, hw, hw)) for p in precisions}
    oh = hw - k + 1
    w2 = np.ascontiguousarray(w.reshape(f, -1).T)
    x32 = xs[max(precisions)].astype(np.float32)
    w32 = w2.astype(np.float32)

    def numpy_f32():
        cols = im2col(x32, k, k, 1, 0, oh, oh).astype(np.float32)
        return (cols @ w32).reshape(args.batch, oh, oh, f).transpose(0, 3, 1, 2)

    cases = {"numpy float32 im2col+matmul": numpy_f32}
    for acc_bits, mode in ((16, "clip"), (32, "wrap")):
        for p in precisions:
            common = dict(fmt_x=f"UQ{p}.0", fmt_w="Q8.0", fmt_y="Q16.0", acc_bits=acc_bits, overflow=mode)
            x = xs[p]
            cases[f"kernels.conv2d p={p} {mode}{acc_bits}"] = (
                lambda x=x, kw=common: kernels.conv2d(x, w, **kw))
            cases[f"bit-serial p={p} {mode}{acc_bits}"] = (
                lambda x=x, kw=common: bit_serial_conv2d(x, w, lanes=16, **kw))
        p = max(precisions)
        cols = im2col(xs[p], k, k, 1, 0, oh, oh)
        cases[f"bit-parallel twin p={p} {mode}{acc_bits}"] = (
            lambda cols=cols, mode=mode, acc_bits=acc_bits, p=p: _bit_parallel(
                cols, w2, fmt_x=f"UQ{p}.0", fmt_w="Q8.0", acc_bits=acc_bits, overflow=mode))

    for fn in cases.values():  # warm-up: compile or load the Numba caches
        fn()
    times = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(t) for name, t in times.items()}

    base = med["numpy float32 im2col+matmul"]
    rows = [("stripes_vs_float32", name, med[name], base) for name in cases]
    for name in cases:
        if name.startswith("bit-serial"):
            par = name.replace("bit-serial", "kernels.conv2d")
            rows.append(("stripes_vs_bit_parallel", name, med[name], med[par]))

    macs = args.batch * f * oh * oh * c * k * k
    print(f"LeNet-5 conv2: batch {args.batch}, {c}->{f} ch, {k}x{k}, {hw}x{hw} -> {oh}x{oh}; "
          f"{macs / 1e6:.0f} M MACs; median of {args.repeats}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print_rows(rows, 26, 32)
    write_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
