"""Per-image latency of whole networks: the compiled plan, Simulator.simulate and the float forward (issue 18).

    python benchmarks/latency.py [--repeats 5] [--quick] [--data-dir DIR]

For the shipped digits MLP, digits CNN and LeNet-5 (models/*.npz), each under a de Bruin
act-w config at BW_acc 16 with clip (the shipped reports/*_acc16_act-w_clip_config.json;
the MLP, which has none, is searched here, seeded), microseconds per image at batch 1, 8
and 1000 of:

- ``plan``: ``Simulator.compile(config, max_batch=1000)`` called on the images (one image:
  the model's input shape, no batch axis), bit-identical to ``simulate`` (checked here);
- ``plan-1thread``: the same plan on one Numba thread (batch 1000; below 2**21 MACs per step
  the plan runs on one thread anyway);
- ``simulate``: ``Simulator.simulate(x, config)`` (per-call checks, quantization, float trace,
  statistics);
- ``float``: the float NumPy forward of the same network on the same images, preprocessing
  included (``network.forward(preprocess.apply(x))``), the baseline of every ratio.

Timed in one process, interleaved per repeat (the cores are shared): per repeat, each method
runs ``calls`` consecutive calls (batch 1: 100, batch 8: 20, batch 1000: 3) after a pause
that lets OpenBLAS's threads settle; min and median over all calls. Prints the CPU model,
its vector extensions, the BLAS and the load with the table; writes
reports/bench_latency.csv and reports/bench_latency.md. Targets (issue 18): one image of the
digits MLP <= 50 us, of the digits CNN <= 200 us, the MLP batched <= 5 us per image.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
from _bench import SETTLE_SECONDS, blas_line, load_line  # noqa: E402

import fxpsim  # noqa: E402
from fxpsim.config import NetworkConfig  # noqa: E402
from fxpsim.tables import write_text_atomic  # noqa: E402

MODELS = (("digits-mlp", None), ("digits-cnn", "digits-cnn_acc16_act-w_clip_config.json"),
          ("lenet5-mnist", "lenet5-mnist_acc16_act-w_clip_config.json"))
BATCHES = (1, 8, 1000)
CALLS = {1: 100, 8: 20, 1000: 3}
METHODS = ("plan", "plan-1thread", "simulate", "float")
"""``plan-1thread``: the plan with ``parallel=False``, at batch 1000 only (smaller batches run on
one thread anyway)."""
TARGETS = {("digits-mlp", 1): 50.0, ("digits-cnn", 1): 200.0, ("digits-mlp", 1000): 5.0}
"""Issue 18's targets, microseconds per image (median)."""
VECTOR_FLAGS = ("sse", "ssse", "avx", "fma", "amx", "neon", "asimd", "sve")


def cpu_line() -> str:
    """The CPU model, LLVM's name for it, the logical cores and the vector extensions it reports."""
    import llvmlite.binding as llvm

    name, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = value.split()
    except OSError:
        pass
    vec = sorted(f for f in set(flags) if f.startswith(VECTOR_FLAGS))
    return (f"CPU: {name} (LLVM host {llvm.get_host_cpu_name()}), {os.cpu_count()} logical cores; "
            f"vector extensions: {' '.join(vec) or 'not reported'}")


def model_config(m, shipped: str | None) -> tuple[NetworkConfig, str]:
    """The benchmark config of loaded model ``m`` and where it came from."""
    if shipped is not None and (ROOT / "reports" / shipped).is_file():
        return NetworkConfig.load(ROOT / "reports" / shipped), f"reports/{shipped}"
    return m.search(acc_bits=16, constraint="act-w", overflow="clip", test_samples=1).config, \
        "searched here (act-w, BW_acc 16, clip)"


def images(m, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` test images of ``m``'s data set and their labels (repeated when the split is smaller)."""
    x, y = m.data.x_test, m.data.y_test
    reps = n // len(x) + 1
    return np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]


def measure(m, config, repeats: int, quick: bool):
    """Per batch, per method: the seconds of every call (``rows``), the plan's build seconds."""
    sim = m.simulator
    x, y = images(m, max(BATCHES))
    t0 = time.perf_counter()
    plan = sim.compile(config, max_batch=max(BATCHES))
    build = time.perf_counter() - t0
    plan1 = sim.compile(config, max_batch=max(BATCHES), parallel=False)
    ref = sim.simulate(x, config, y)
    identical = bool(np.array_equal(plan(x).logits, ref.logits) and np.array_equal(plan1(x).logits, ref.logits)
                     and np.array_equal(plan(x[0]).logits, sim.simulate(x[:1], config).logits[0]))
    net, pre = m.network, m.preprocess
    run = {
        "plan": lambda xb, one: plan(xb[0] if one else xb),
        "plan-1thread": lambda xb, one: plan1(xb),
        "simulate": lambda xb, one: sim.simulate(xb, config),
        "float": lambda xb, one: net.forward(pre.apply(xb), training=False),
    }
    samples = {}
    for batch in BATCHES:
        calls = max(1, CALLS[batch] // (4 if quick else 1))
        methods = [meth for meth in METHODS if meth != "plan-1thread" or batch == max(BATCHES)]
        got = {meth: [] for meth in methods}
        for r in range(repeats):
            for meth in methods:
                fn = run[meth]
                fn(x[:batch], batch == 1)  # warm
                time.sleep(SETTLE_SECONDS)
                for c in range(calls):
                    lo = ((r * calls + c) * batch) % (len(x) - batch + 1)
                    xb = x[lo:lo + batch]
                    t = time.perf_counter()
                    fn(xb, batch == 1)
                    got[meth].append((time.perf_counter() - t) / batch)
        samples[batch] = got
    return samples, build, identical, ref.accuracy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer calls per repeat (a smoke run)")
    ap.add_argument("--data-dir", default=None, help="MNIST IDX files (default: ../shared/data/mnist, "
                                                     "$FXPSIM_DATA)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench_latency"))
    args = ap.parse_args(argv)
    data_dir = args.data_dir
    if data_dir is None and not os.environ.get("FXPSIM_DATA") and (ROOT.parent / "shared" / "data" / "mnist").is_dir():
        data_dir = ROOT.parent / "shared" / "data" / "mnist"
    header = [cpu_line(), f"BLAS: {blas_line()}",
              f"Numba {numba.__version__}, {numba.get_num_threads()} threads; NumPy {np.__version__}", load_line()]
    print("\n".join(header))
    rows, notes = [], []
    for name, shipped in MODELS:
        m = fxpsim.load(ROOT / "models" / f"{name}.npz", data_dir=data_dir)
        config, source = model_config(m, shipped)
        samples, build, identical, acc = measure(m, config, args.repeats, args.quick)
        notes.append(f"{name}: config {source}; plan built in {build * 1e3:.1f} ms (kernels from the Numba "
                     f"cache); plan bit-identical to simulate: {'yes' if identical else 'NO'}; accuracy on "
                     f"{max(BATCHES)} test images {acc:.4f}")
        for batch, got in samples.items():
            base = float(np.median(got["float"]))
            for meth in got:
                t = np.asarray(got[meth]) * 1e6
                target = TARGETS.get((name, batch)) if meth.startswith("plan") else None
                rows.append((name, batch, meth, float(t.min()), float(np.median(t)), float(np.median(t)) / (base * 1e6),
                             len(t), target))
    lines = ["| model | batch | method | us/image min | us/image median | x float (median) | calls | target |",
             "|---|---|---|---|---|---|---|---|"]
    csv = ["model,batch,method,us_per_image_min,us_per_image_median,ratio_to_float,calls,target_us"]
    print(f"{'model':<14} {'batch':>5} {'method':<9} {'us/img min':>11} {'median':>10} {'x float':>8} {'target':>12}")
    for name, batch, meth, tmin, tmed, ratio, calls, target in rows:
        verdict = "" if target is None else f"<= {target:g} {'met' if tmed <= target else 'MISSED'}"
        print(f"{name:<14} {batch:>5} {meth:<9} {tmin:>11.2f} {tmed:>10.2f} {ratio:>8.3f} {verdict:>12}")
        lines.append(f"| {name} | {batch} | {meth} | {tmin:.2f} | {tmed:.2f} | {ratio:.3f} | {calls} | {verdict} |")
        csv.append(f"{name},{batch},{meth},{tmin:.3f},{tmed:.3f},{ratio:.4f},{calls},"
                   f"{'' if target is None else f'{target:g}'}")
    print("\n".join(notes))
    md = ["# Per-image latency: compiled plan vs Simulator.simulate vs float NumPy (issue 18)", "",
          "`python benchmarks/latency.py` (module docstring: what is timed and how).", "",
          *[f"- {h}" for h in header], *[f"- {n}" for n in notes], "", *lines, ""]
    out = Path(args.out)
    write_text_atomic(out.with_suffix(".csv"), "\n".join(csv) + "\n")
    write_text_atomic(out.with_suffix(".md"), "\n".join(md))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
