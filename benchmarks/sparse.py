"""A 90 %-sparse LeNet-300-100 layer on the EIE CSC/PE kernel vs the dense datapath and float32.

Layer 784 x 300 (Dense W (K, N), EIE matrix W.T): the first layer of the
trained ``models/lenet300-mnist.npz`` when present (else He-normal random
weights; the table says which), magnitude-pruned to 90 % and quantized to
8 bits (int bits from the largest weight), inputs the 10000 MNIST test
images as Q1.7 pixels (8 bits, ~81 % zeros, which EIE skips) -- or, when
MNIST is not found, synthetic post-ReLU activations with 80 % zeros (the
table says which). 64 PEs, 4-bit relative indices, BW_acc 16 and 24, wrap
and clip. Cases, all in one run, interleaved, medians after a warm-up:

- ``float32_matmul``: NumPy float32 BLAS ``x @ W`` (the pruned W, dense);
- ``dense_datapath``: :func:`fxpsim.kernels.dense` on the pruned W;
- ``sparse_eie``: :func:`fxpsim.sparse.kernel.sparse_dense` from the CSC
  encoding, decoding the relative indices each call;
- ``sparse_eie_reused``: the same with the decoded column schedule reused.

Rows of ``sparse_vs_dense`` take the dense datapath (same BW_acc and mode)
as baseline, rows of ``*_vs_float32`` the float32 matmul. ``ratio =
seconds / baseline_seconds`` (< 1: faster than the baseline). The sparse
results are checked bit-exact against the dense datapath before timing.
The machine is shared (2 cores): the load average is printed.

    python benchmarks/sparse.py [--batch 10000 --repeats 5 --pes 64 --index-bits 4 --data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _bench import print_rows, timed, write_rows  # noqa: E402
from fxpsim.errors import FxpsimError  # noqa: E402
from fxpsim.datapath.dense import dense  # noqa: E402
from fxpsim.qformat import QFormat, int_bits_for, quantize  # noqa: E402
from fxpsim.sparse.csc import encode, storage  # noqa: E402
from fxpsim.sparse.kernel import column_schedule, sparse_dense  # noqa: E402
from fxpsim.sparse.pe import eie_matrix  # noqa: E402
from fxpsim.sparse.prune import apply_mask, sparsity_mask  # noqa: E402

REPORT = ROOT / "reports" / "bench_sparse.csv"
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
MODEL = ROOT / "models" / "lenet300-mnist.npz"
Q8 = QFormat(1, 7)


def inputs(batch: int, data_dir) -> tuple[np.ndarray, str]:
    """Raw Q1.7 inputs (batch, 784): MNIST test images if found, else synthetic."""
    from fxpsim.train.data import load_dataset
    if data_dir is None and SHARED_MNIST.is_dir():
        data_dir = SHARED_MNIST
    try:
        ds = load_dataset("mnist", data_dir)
        pix = ds.x_test.reshape(ds.x_test.shape[0], -1)[:batch].astype(np.float64) / 255.0
        src = "MNIST test images"
    except FxpsimError as exc:
        print(f"MNIST not used ({exc}); synthetic activations instead")
        rng = np.random.default_rng(1)
        pix = rng.random((batch, 784)) * (rng.random((batch, 784)) < 0.2)
        src = "synthetic, 80% zeros"
    return quantize(pix, Q8), src


def first_layer(model: Path) -> tuple[np.ndarray, str]:
    """Float W (784, 300) of the model's first Dense layer, or He-normal random weights."""
    if model.is_file():
        from fxpsim.modelfile import load_model
        dense_layers = [l for l in load_model(model).network.layers if l.kind == "dense"]
        w = dense_layers[0].params["W"]
        if w.shape == (784, 300):
            return np.asarray(w, np.float64), f"trained {model.name} layer 1"
    return np.random.default_rng(0).normal(0.0, np.sqrt(2 / 784), size=(784, 300)), "He-normal random"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pes", type=int, default=64)
    ap.add_argument("--index-bits", type=int, default=4)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--csv", type=Path, default=REPORT)
    args = ap.parse_args(argv)

    x, src = inputs(args.batch, args.data_dir)
    w_float, wsrc = first_layer(args.model)
    w_float = apply_mask(w_float, sparsity_mask(w_float, args.sparsity))
    fmt_w = QFormat.from_width(8, int_bits_for(float(np.abs(w_float).max())))
    w = quantize(w_float, fmt_w)
    enc = encode(eie_matrix(w), args.pes, args.index_bits)
    sched = column_schedule(enc)
    xf, wf = x.astype(np.float32), w.astype(np.float32)
    st = storage(enc, fmt_w.width)

    cases = {}
    for acc_bits in (16, 24):
        for mode in ("wrap", "clip"):
            cfg = dict(fmt_x=Q8, fmt_w=fmt_w, fmt_y=Q8, acc_bits=acc_bits, overflow=mode, activation="relu")
            de = dense(x, w, None, **cfg)  # warm-up and the bit-exactness check
            sp = sparse_dense(x, enc, None, **cfg)
            assert np.array_equal(sp.y, de.y) and np.array_equal(sp.acc, de.acc), "sparse != dense"
            assert sp.stats.overflow_count == de.stats.overflow_count
            tag = f"acc{acc_bits}_{mode}"
            cases[f"dense_datapath {tag}"] = (lambda c=cfg: dense(x, w, None, **c))
            cases[f"sparse_eie {tag}"] = (lambda c=cfg: sparse_dense(x, enc, None, **c))
            cases[f"sparse_eie_reused {tag}"] = (lambda c=cfg: sparse_dense(x, enc, None, schedule=sched, **c))
            if acc_bits == 16 and mode == "clip":
                pe, ovf = sp.pe, de.stats
    cases["float32_matmul"] = lambda: xf @ wf
    times = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved: load changes hit every case alike
        for name, fn in cases.items():
            times[name].append(timed(fn))
    med = {name: float(np.median(t)) for name, t in times.items()}
    base = med["float32_matmul"]

    shape = f"784x300 {args.sparsity:.0%} sparse B={x.shape[0]}"
    rows = [("float32_baseline", shape, base, base)]
    for name in cases:
        if name == "float32_matmul":
            continue
        kind, tag = name.split(" ")
        rows.append((f"{kind}_vs_float32", f"{shape} {tag}", med[name], base))
        if kind.startswith("sparse"):
            d = med[f"dense_datapath {tag}"]
            rows.append((f"{kind}_vs_dense", f"{shape} {tag}", med[name], d))

    print(f"inputs: {src}; weights {wsrc}, {fmt_w}, {np.count_nonzero(w)} non-zeros of {w.size}; "
          f"activation zeros {np.mean(x == 0):.0%}")
    print(f"CSC: {args.pes} PEs, {args.index_bits}-bit relative indices, {enc.n_padding} padding entries, "
          f"{st.total_bits / 8 / 1024:.1f} KiB ({st.bits_per_nonzero:.2f} bits per non-zero; dense 8-bit "
          f"{w.size / 1024:.1f} KiB)")
    print(f"PEs (acc16 clip): cycles {pe.total_cycles} queued / {pe.lockstep_cycles} lock-step for the batch, "
          f"load imbalance {pe.load_imbalance:.2f}, overflows {ovf.overflow_count}")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (shared machine: noisy)")
    print(f"median of {args.repeats} interleaved runs; ratio = seconds / baseline_seconds (< 1: faster)")
    print_rows(rows)
    slower = [r for r in rows if r[0] == "sparse_eie_vs_dense" and r[2] >= r[3]]
    print(f"target (sparse faster than dense in every case): {'met' if not slower else 'NOT met'}")

    write_rows(args.csv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
