"""Scale-out of the searches (issue 18 item 3): ``--jobs 1`` / ``--jobs 2`` / Dask's local cluster, side by side.

Three workloads, each run in this process on each backend (pool or cluster started inside the
timed region, shut down after it, as one CLI command does):

- the digits CNN's ``search --acc-table`` (:func:`fxpsim.experiments.acc_table.run_acc_table`,
  500 calibration samples requested: the validation split's 136);
- the digits CNN's uniform sweeps (Judd Fig. 2: 3 fields x 0..16 bits, 450 test images);
- ``--configs`` seeded random per-layer configurations of LeNet-5 on ``--samples`` MNIST
  validation images (needs ``--mnist-dir``): a sweep of independent configurations, one task each.

Prints the CPU, the load average before each case (a shared machine makes the timings noisy),
seconds, speedup against ``--jobs 1`` of the same workload, the bytes shipped once per worker
(the pickled :class:`~fxpsim.parallel.EvalSetup`) and per task (a pickled config), and writes
reports/bench_scaling.csv. docs/PERFORMANCE.md models larger clusters from these numbers.

    python benchmarks/scaling.py [--mnist-dir ../shared/data/mnist] [--configs 1000] [--no-dask]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fxpsim.cli.common import calibration_set  # noqa: E402
from fxpsim.experiments.acc_table import AccTableStudy, run_acc_table  # noqa: E402
from fxpsim.modelfile import load_model  # noqa: E402
from fxpsim.parallel import EvalSetup, Parallel, close  # noqa: E402
from fxpsim.qformat import QFormat  # noqa: E402
from fxpsim.search.accumulator import _point_groups, sweep_points  # noqa: E402
from fxpsim.search.sweeps import WHAT, _accuracy_task, set_data_format, sweep, wide_config  # noqa: E402
from fxpsim.simulate import Evaluator, Simulator, profile  # noqa: E402
from fxpsim.tables import format_table, write_table  # noqa: E402
from fxpsim.train.data import load_dataset  # noqa: E402


def cpu_line() -> str:
    """The CPU model (as ``lscpu | grep 'Model name'`` prints it) and the core count."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _data(model):
    meta = model.metadata
    split = meta.get("split") or {}
    return meta, split


def random_configs(prof, n: int, seed: int = 0):
    """``n`` seeded per-layer configurations: weight widths 3..10 and data widths 3..10 bits with
    the profiled integer bits, an ideal accumulator (as :func:`~fxpsim.search.sweeps.sweep`)."""
    rng = np.random.default_rng(seed)
    base = wide_config(prof)
    out = []
    for _ in range(n):
        cfg = base
        for i, layer in enumerate(base):
            bw, bx = (int(v) for v in rng.integers(3, 11, size=2))
            cfg = cfg.with_layer(i, fmt_w=QFormat(layer.fmt_w.int_bits, bw - layer.fmt_w.int_bits))
            cfg = set_data_format(cfg, i, QFormat(layer.fmt_x.int_bits, bx - layer.fmt_x.int_bits))
        out.append(cfg)
    return out


def backends(dask: bool) -> list[Parallel]:
    out = [Parallel(1), Parallel(2)]
    if dask and importlib.util.find_spec("distributed") is not None:
        out.append(Parallel(2, "local"))
    elif dask:
        print("skipping Dask: pip install -e '.[dist]'", file=sys.stderr)
    return out


def _children_cpu() -> float:
    """User + system seconds of this process's finished children (pool workers, once shut down)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _case(rows, workload: str, par: Parallel, fn, setup_bytes: int, task_bytes: int, tasks: int) -> None:
    load = os.getloadavg()[0]
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    fn(par)
    close()  # the pool's (cluster's) start and stop belong to the run, as in one CLI command
    rows.append({"workload": workload, "backend": par.describe(), "seconds": time.perf_counter() - t0,
                 "parent_cpu_seconds": time.process_time() - c0, "worker_cpu_seconds": _children_cpu() - k0,
                 "tasks": tasks,
                 "setup_bytes": setup_bytes, "task_bytes": task_bytes, "load_before": load})
    print(f"  {workload:<34} {par.describe():<24} {rows[-1]['seconds']:8.2f} s (load {load:.1f})", flush=True)


def bench_digits(rows, pars) -> None:
    path = ROOT / "models" / "digits-cnn.npz"
    model = load_model(path)
    meta, split = _data(model)
    data = load_dataset(meta["dataset"], None, **{k: split[k] for k in ("test_fraction", "split_seed") if k in split})
    cal = calibration_set(model, data, 500, 0)
    study = AccTableStudy("bench", "digits-cnn.npz")
    sim = Simulator(model)
    ev = Evaluator(sim, *cal)
    prof = profile(sim, ev.x, prepared=True)
    setup_bytes = EvalSetup.of(ev, prof).nbytes
    groups = len(_point_groups(sweep_points(ev, prof, study.sweep_bits)[1]))
    run_acc_table(AccTableStudy("warm", "warm", sweep_bits=(16,), case_bits=(16,)), model, cal)  # Numba cache
    reference = None
    for par in pars:
        got = {}
        _case(rows, "digits-cnn acc table", par, lambda p: got.update(r=run_acc_table(study, model, cal, p)),
              setup_bytes, len(pickle.dumps((("act-y", "wrap", 16), ("act-y", "clip", 16)))), groups)
        csv = got["r"].sweep.to_csv()
        assert reference is None or csv == reference, "a parallel acc table differs from the serial one"
        reference = csv
    ev_sweep = Evaluator(sim, data.x_test, data.y_test)
    task = len(pickle.dumps(wide_config(prof)))
    for par in pars:
        _case(rows, "digits-cnn uniform sweeps (51)", par,
              lambda p: sweep(Evaluator(sim, ev_sweep.x, ev_sweep.y, prepared=True), prof, WHAT, range(0, 17), p),
              EvalSetup.of(ev_sweep, prof).nbytes, task, 51)


def bench_lenet(rows, pars, mnist_dir, configs: int, samples: int) -> None:
    path = ROOT / "models" / "lenet5-mnist.npz"
    model = load_model(path)
    meta, split = _data(model)
    data = load_dataset(meta["dataset"], mnist_dir,
                        **{k: split[k] for k in ("test_fraction", "split_seed") if k in split})
    cal = calibration_set(model, data, samples, 0)
    sim = Simulator(model)
    ev = Evaluator(sim, *cal)
    prof = profile(sim, ev.x, prepared=True)
    cfgs = random_configs(prof, configs)
    ev.accuracy(cfgs[0])  # Numba cache warm in this process
    for par in pars:
        # a new setup per run: workers (and the serial run) build their evaluators afresh; the
        # model copied without the float trace the parent's evaluator left in its layers
        setup = EvalSetup.of(Evaluator(sim, ev.x, ev.y, prepared=True), prof)
        _case(rows, f"lenet5 {configs} random configs", par, lambda p: p.map(_accuracy_task, cfgs, setup),
              setup.nbytes, len(pickle.dumps(cfgs[0], protocol=pickle.HIGHEST_PROTOCOL)), configs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist-dir", default=os.environ.get("FXPSIM_DATA"))
    p.add_argument("--configs", type=int, default=1000, help="LeNet-5 random configurations (default 1000)")
    p.add_argument("--samples", type=int, default=500, help="LeNet-5 calibration images (default 500)")
    p.add_argument("--no-dask", action="store_true", help="skip the Dask local cluster")
    p.add_argument("--only", choices=("digits", "lenet5"), default=None)
    args = p.parse_args()
    print(cpu_line())
    pars = backends(not args.no_dask)
    rows: list[dict] = []
    if args.only in (None, "digits"):
        bench_digits(rows, pars)
    if args.only in (None, "lenet5"):
        if args.mnist_dir and (ROOT / "models" / "lenet5-mnist.npz").exists():
            bench_lenet(rows, pars, args.mnist_dir, args.configs, args.samples)
        else:
            print("skipping LeNet-5/MNIST: needs models/lenet5-mnist.npz and --mnist-dir", file=sys.stderr)
    df = pd.DataFrame(rows)
    serial = df[df["backend"] == "1 process"].set_index("workload")["seconds"]
    df["speedup"] = serial.reindex(df["workload"]).to_numpy() / df["seconds"]
    write_table(df, "bench_scaling", ROOT / "reports", title="Scale-out: --jobs 1 / --jobs 2 / Dask local",
                text=f"{cpu_line()}. Wall seconds of each whole run, pool or cluster start and stop included; "
                     "speedup = the 1-process run's seconds / this run's; parent_cpu_seconds / worker_cpu_seconds: "
                     "CPU time of this process and of its finished children (pool workers; Dask's nannies may "
                     "not wait for theirs); load_before: the 1-minute load average as the run began (other work "
                     "on the machine slows a run and its speedup).")
    print(format_table(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
