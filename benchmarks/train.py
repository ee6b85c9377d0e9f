"""Training speed of the NumPy trainer: seconds per epoch for the shipped architectures.

For each case, ``--batches`` training iterations (forward, softmax
cross-entropy, backward, Adam step) are timed after one warm-up
iteration; ``s_per_epoch = median(s_per_batch) * batches_per_epoch`` for
the training split the shipped model uses (90 % of the training set). With
``--full-epoch`` one real epoch of :func:`fxpsim.train.trainer.fit` is
timed instead. MNIST cases need the IDX files (``--data-dir``,
``$FXPSIM_DATA`` or ``../shared/data/mnist`` beside the checkout) and are
skipped with the reason otherwise. BLAS runs on ``--threads`` threads (1,
as ``fxpsim train`` by default). The machine is shared (2 cores): the load
average is printed, numbers are noisy.

    python benchmarks/train.py [--batches 30 --threads 1 --full-epoch --data-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fxpsim import FxpsimError  # noqa: E402
from fxpsim.network import build_network  # noqa: E402
from fxpsim.train.data import Preprocess, load_dataset, train_val_split  # noqa: E402
from fxpsim.train.losses import softmax_cross_entropy  # noqa: E402
from fxpsim.train.trainer import TrainConfig, fit, network_optimizer  # noqa: E402

REPORT = ROOT / "reports" / "bench_train.csv"

#: (name, dataset, arch, batch size) of the shipped models (models/README.md)
CASES = (
    ("digits-mlp", "digits", "fc128-relu-fc64-relu-fc10", 32),
    ("digits-cnn", "digits", "conv16x3p1-relu-conv16x3p1-relu-maxpool2-fc64-relu-fc10", 32),
    ("lenet300-mnist", "mnist", "lenet300", 64),
    ("lenet5-mnist", "mnist", "lenet5", 64),
)


def mnist_dir(arg: str | None) -> str | None:
    if arg or os.environ.get("FXPSIM_DATA"):
        return arg
    shared = ROOT.parent / "shared" / "data" / "mnist"
    return str(shared) if shared.is_dir() else None


def time_case(dataset, arch: str, batch: int, n_batches: int, full_epoch: bool) -> dict:
    x_tr, y_tr, _, _ = train_val_split(dataset.x_train, dataset.y_train, 0.1, seed=0)
    x = Preprocess.fit(x_tr).apply(x_tr)
    net = build_network(arch, dataset.input_shape, dataset.n_classes, seed=0)
    per_epoch = -(-len(x) // batch)
    if full_epoch:
        t0 = time.perf_counter()
        fit(net, x, y_tr, TrainConfig(epochs=1, batch_size=batch, val_fraction=0), progress=False)
        seconds = time.perf_counter() - t0
        return {"s_per_batch": seconds / per_epoch, "s_per_epoch": seconds, "measured": "1 epoch"}
    opt = network_optimizer(net, TrainConfig())
    grads = [g for _, _, g in net.params_and_grads()]
    rng = np.random.default_rng(0)
    times = []
    for i in range(n_batches + 1):
        idx = rng.integers(0, len(x), batch)
        t0 = time.perf_counter()
        opt.lookahead()
        _, d = softmax_cross_entropy(net.forward(x[idx], training=True), y_tr[idx])
        net.backward(d)
        opt.step(grads)
        if i:  # the first iteration is a warm-up
            times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    return {"s_per_batch": s, "s_per_epoch": s * per_epoch, "measured": f"{n_batches} batches"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full-epoch", action="store_true", help="time one real epoch of fit() per case")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", default=None, help="comma-separated case names")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, BLAS threads {args.threads}")
    rows = []
    cache = {}
    for name, ds_name, arch, batch in CASES:
        if args.only and name not in args.only.split(","):
            continue
        try:
            if ds_name not in cache:
                cache[ds_name] = load_dataset(ds_name, mnist_dir(args.data_dir) if ds_name == "mnist" else None)
        except FxpsimError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        with threadpool_limits(limits=args.threads, user_api="blas"):
            r = time_case(cache[ds_name], arch, batch, args.batches, args.full_epoch)
        rows.append({"case": name, "arch": arch, "batch": batch, **r, "threads": args.threads,
                     "load_avg": round(os.getloadavg()[0], 2)})
    if not rows:
        return 1
    print(f"{'case':<16} {'batch':>5} {'ms/batch':>9} {'s/epoch':>8}  measured")
    for r in rows:
        print(f"{r['case']:<16} {r['batch']:>5} {r['s_per_batch'] * 1e3:>9.1f} {r['s_per_epoch']:>8.1f}  {r['measured']}")
    REPORT.parent.mkdir(exist_ok=True)
    with open(REPORT, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
