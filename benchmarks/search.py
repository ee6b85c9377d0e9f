"""Time the simulator's searches: uniform sweeps, tolerance search, `fxpsim search --acc-bits 16`.

Prints a table and writes reports/bench_search.csv (benchmark, case, seconds,
samples, peak_rss_mb). The calibration subsets are the ones the CLI uses: a
seeded sample of the training split's validation part (--samples, default
500) for searches, and the first --sweep-samples test images for sweeps.

    python benchmarks/search.py [--mnist-dir ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fxpsim.cli.common import calibration_set  # noqa: E402
from fxpsim.modelfile import load_model  # noqa: E402
from fxpsim.tables import format_table, write_table  # noqa: E402
from fxpsim.search import accumulator_search, tolerance_search  # noqa: E402
from fxpsim.simulate import Evaluator, Simulator, profile  # noqa: E402
from fxpsim.search.sweeps import WHAT, sweep  # noqa: E402
from fxpsim.train.data import load_dataset  # noqa: E402


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(path: Path, data_dir, samples: int, sweep_samples: int) -> list[dict]:
    model = load_model(path)
    meta = model.metadata
    split = meta.get("split") or {}
    data = load_dataset(meta["dataset"], data_dir,
                        **{k: split[k] for k in ("test_fraction", "split_seed") if k in split})
    x_cal, y_cal = calibration_set(model, data, samples, 0)
    sim = Simulator(model)
    rows = []
    ev = Evaluator(sim, x_cal, y_cal)
    prof = profile(sim, ev.x, prepared=True)
    accumulator_search(ev, prof, 16, "act-w", "wrap")  # compile/warm the kernels once
    ev_sweep = Evaluator(sim, data.x_test[:sweep_samples], data.y_test[:sweep_samples])
    t, _ = _timed(lambda: [sweep(ev_sweep, prof, w, range(0, 17)) for w in WHAT])
    rows.append({"benchmark": path.stem, "case": "uniform sweep, 3 fields x 0..16 bits", "seconds": t,
                 "samples": len(ev_sweep.y), "evaluations": ev_sweep.evaluations})
    ev = Evaluator(sim, x_cal, y_cal)
    t, r = _timed(lambda: tolerance_search(ev, prof, 0.01))
    rows.append({"benchmark": path.stem, "case": "tolerance search 1 %", "seconds": t,
                 "samples": len(y_cal), "evaluations": r.evaluations})
    for constraint in ("act-w", "act-y"):
        ev = Evaluator(sim, x_cal, y_cal)
        t, _ = _timed(lambda: accumulator_search(ev, prof, 16, constraint, "wrap"))
        rows.append({"benchmark": path.stem, "case": f"acc-bits 16 search ({constraint}), warm",
                     "seconds": t, "samples": len(y_cal), "evaluations": ev.evaluations})
    return rows


def bench_cli(model: Path | None) -> list[dict]:
    """`fxpsim search --acc-bits 16` as a user runs it: a new process, Numba cache as it is."""
    cmd = [sys.executable, "-m", "fxpsim", "search", "--acc-bits", "16", "--no-progress",
           "--out", tempfile.mkdtemp(prefix="fxpsim-bench-")]
    if model is not None:
        cmd.insert(3, str(model))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    t = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return [{"benchmark": "cli", "case": f"fxpsim search --acc-bits 16 {model.name if model else '(default model)'}, "
             "new process", "seconds": t, "samples": 500, "peak_rss_mb": peak}]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist-dir", default=os.environ.get("FXPSIM_DATA"))
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--sweep-samples", type=int, default=1000)
    args = p.parse_args()
    rows = bench_cli(None)
    rows += bench_cli(None)  # second process: Numba's cache is now certainly warm
    rows[0]["case"] += " (first)"
    rows[1]["case"] += " (second)"
    rows += bench_model(ROOT / "models" / "digits-cnn.npz", None, args.samples, args.sweep_samples)
    lenet = ROOT / "models" / "lenet5-mnist.npz"
    if args.mnist_dir and lenet.exists():
        rows += bench_model(lenet, args.mnist_dir, args.samples, args.sweep_samples)
    else:
        print(f"skipping LeNet-5/MNIST: needs {lenet} and --mnist-dir", file=sys.stderr)
    for r in rows:
        r.setdefault("peak_rss_mb", _peak_mb())
    df = pd.DataFrame(rows)
    write_table(df, "bench_search", ROOT / "reports", title="Search benchmarks",
                text="Seconds of wall time on this machine; peak_rss_mb is the process's peak so far.")
    print(format_table(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
