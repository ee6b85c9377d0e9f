"""Import of a 1M-parameter ONNX model: seconds and peak memory against the file's size (issue 15).

Targets (issue 15): under 5 s, and under 3x the file's size in memory. Each case is written
with onnx.helper, then imported in a fresh Python process (onnx, numpy and fxpsim already
imported there, so only the import itself is counted: the first call, as in ``fxpsim import``) by
:func:`fxpsim.interop.onnx_import.load_onnx`, and saved with
:func:`fxpsim.modelfile.save_model` (what ``fxpsim import`` adds). Memory is measured twice:
the peak resident set above the process's resident set before the import (Linux
``VmHWM`` after resetting it through ``/proc/self/clear_refs``: what the machine holds,
protobuf's C memory included), and the peak of Python allocations (``tracemalloc``: counts
the layers' zero-filled gradient arrays, which calloc never touches, and misses protobuf's
C memory). The median of ``--repeat`` runs is printed; the machine is shared, timings are noisy.

    python benchmarks/onnx_import.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx import TensorProto, helper, numpy_helper

CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np, onnx
sys.path.insert(0, sys.argv[3])
from fxpsim.interop.onnx_import import load_onnx
from fxpsim.modelfile import save_model

def rss(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))

def run():
    base = rss("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    t0 = time.perf_counter()
    model = load_onnx(sys.argv[1])
    return model, time.perf_counter() - t0, rss("VmHWM:") - base

model, seconds, peak = run()  # the first call, as in `fxpsim import`
del model
_, warm_seconds, warm_peak = run()  # again in the same process (lazy imports done, allocator warm)
model = _
t0 = time.perf_counter()
save_model(sys.argv[2], model)
save_seconds = time.perf_counter() - t0
del model
tracemalloc.start()
model = load_onnx(sys.argv[1])
traced = tracemalloc.get_traced_memory()[1]
params = sum(p.size for layer in model.network.layers for p in layer.params.values())
print(json.dumps({"seconds": seconds, "save_seconds": save_seconds, "rss_peak": peak, "traced_peak": traced,
                  "warm_seconds": warm_seconds, "warm_rss_peak": warm_peak,
                  "params": int(params)}))
"""


def mlp(sizes, rng) -> object:
    """Gemm(transB=1)-Relu layers (torch's nn.Linear), float32 weights."""
    inits, nodes, prev = [], [], "x"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array(rng.normal(0, 0.05, (n, k)).astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(np.zeros(n, np.float32), f"b{i}")]
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], ["y" if last else f"g{i}"], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            prev = f"h{i}"
    return _model(nodes, inits, [784])


def cnn(rng) -> object:
    """Conv 1->32->64 (3x3, pad 1), max pooling, then fc 3136->256->10 (0.83 M in the fc layers)."""
    w = lambda name, *shape: numpy_helper.from_array(
        rng.normal(0, 0.05, shape).astype(np.float32), name)
    inits = [w("c1", 32, 1, 3, 3), w("c2", 64, 32, 3, 3), w("f1", 256, 3136), w("f2", 10, 256)]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    nodes = [helper.make_node("Conv", ["x", "c1"], ["a"], **conv), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("MaxPool", ["b"], ["c"], **pool), helper.make_node("Conv", ["c", "c2"], ["d"], **conv),
             helper.make_node("Relu", ["d"], ["e"]), helper.make_node("MaxPool", ["e"], ["f"], **pool),
             helper.make_node("Flatten", ["f"], ["g"]), helper.make_node("Gemm", ["g", "f1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["i"]), helper.make_node("Gemm", ["i", "f2"], ["y"], transB=1)]
    return _model(nodes, inits, [1, 28, 28])


def _model(nodes, inits, in_shape):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def measure(model, workdir: Path, name: str, repeat: int) -> dict:
    path = workdir / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(workdir / f"{name}.npz"), str(ROOT)],
                             check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    return {"case": name, "file_bytes": path.stat().st_size, **med}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rng = np.random.default_rng(0)
    cases = {"mlp-784-1024-256-10": mlp((784, 1024, 256, 10), rng), "cnn-mnist-1M": cnn(rng)}
    print(f"{'case':<22} {'params':>9} {'file MB':>8} {'import s':>9} {'save s':>7} "
          f"{'RSS peak':>9} {'x file':>7} {'traced':>8} {'x file':>7} {'warm s':>7} {'warm RSS':>9} {'x file':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in cases.items():
            r = measure(model, Path(tmp), name, args.repeat)
            size = r["file_bytes"]
            print(f"{name:<22} {int(r['params']):>9} {size / 1e6:>8.2f} {r['seconds']:>9.3f} {r['save_seconds']:>7.3f} "
                  f"{r['rss_peak'] / 1e6:>8.1f}M {r['rss_peak'] / size:>7.2f} {r['traced_peak'] / 1e6:>7.1f}M "
                  f"{r['traced_peak'] / size:>7.2f} {r['warm_seconds']:>7.3f} {r['warm_rss_peak'] / 1e6:>8.1f}M "
                  f"{r['warm_rss_peak'] / size:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
