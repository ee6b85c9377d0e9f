"""hls4ml parity: fxpsim against hls4ml's C simulation, output for output (issue 16, item 3).

    pip install -e .[hls]            # hls4ml, torch==2.13.0 (the CPU build); g++ on PATH
    python benchmarks/hls4ml_parity.py [--repeats 3] [--single N] [--keep DIR] [--only mlp|cnn] [--case TEXT]

For the shipped digits MLP and CNN, each case (:func:`cases`) is exported with
:mod:`fxpsim.interop.hls4ml`, built in hls4ml from a PyTorch module of the exported weights,
compiled, run on the digits test split and compared with fxpsim logit for logit; both are timed.
:data:`REPORT_TEXT` says how, and is the report's text. Writes reports/hls4ml_parity.csv and .md
(atomically). The hls4ml projects live in a temporary folder for the run (--keep DIR keeps them);
each case compiles once (g++: ~8 s for the MLP, 20-40 s for the CNN).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _bench import load_line  # noqa: E402
from fxpsim.cli.common import calibration_set  # noqa: E402
from fxpsim.interop import hls4ml as export  # noqa: E402
from fxpsim.modelfile import load_model  # noqa: E402
from fxpsim.qformat import QFormat, dequantize, int_bits_for, quantize  # noqa: E402
from fxpsim.tables import format_table, model_provenance, write_table  # noqa: E402
from fxpsim.simulate import Simulator, config_from_profile, profile  # noqa: E402
from fxpsim.train.data import load_dataset  # noqa: E402

MODELS = {"mlp": "digits-mlp.npz", "cnn": "digits-cnn.npz"}
NARROW_FRAC = 4
"""Narrow cases: FL_acc = FL_w + FL_x - NARROW_FRAC."""
NARROW_INT = 2
"""Narrow cases: integer bits below what the profiled accumulator needs (narrow acc, narrow fmt_y)."""


REPORT_TEXT = """\
Each case: the config exported by `fxpsim.interop.hls4ml.hls4ml_config` (what `fxpsim export --hls4ml`
writes), a PyTorch module of fxpsim's quantized, BatchNorm-folded weights with the export's layer names,
hls4ml's PyTorch front end (Vivado backend, io_parallel; every layer checked to hold the exported types,
Strategy and ReuseFactor), `hls_model.compile()` (g++ and hls4ml's ap_types) and `predict` on the digits
test split quantized as fxpsim feeds its first layer (float64), against `Simulator.simulate` under the
same config: `outputs_equal` of `outputs` logits. `float_input_equal`: hls4ml fed the preprocessed
float64 images instead (its input_t cast quantizes them). `fxpsim_overflows`: accumulator additions
that overflowed in fxpsim (all layers); `cast_overflows`: products that their cast into accum_t
changed (`LayerStats.cast_overflows`, summed); `float_beyond_fmt_y`: float-model outputs beyond fmt_y (what
result_t wraps or saturates).

Cases (8-bit weights and data from a calibration profile, `product="cast"` everywhere, hls4ml's
datapath): wide = 32-bit accumulators, FL_acc = FL_w + FL_x; narrow = FL_acc = FL_w + FL_x - 4 and 2
integer bits fewer than the profiled accumulators need; Resource = narrow sat with `order="strided:RF"`
where hls4ml takes that ReuseFactor (else strided:1); result_t = wide accumulators, every fmt_y 2
integer bits narrower. In the CNN, conv2 (16 channels, 3x3) and fc1 (after the flattened conv2) are added by
hls4ml in its channels-last (row, column, channel) order: the rows without ", channels-last" keep fxpsim's
(channel, row, column) order and saturate there only in accumulators no sum can overflow (`note`; the export
refuses them saturating otherwise); the rows ", channels-last" are the same case with the knob
`order="channels-last:16"` (Resource: `channels-last:16+strided:RF`) on both, at the case's own narrow
accumulators. The last CNN row shows what the export's refusal prevents: both layers in fxpsim's order,
exported as wrap, their accum_t patched to AP_SAT (the one row built around the export). `plan_equal`: the
compiled plan's logits equal to `Simulator.simulate`'s.

Speeds, us per image: batched = one call on the 450 images (median of the repeats); single = one image
per call. fxpsim: `plan` = `Simulator(model).compile(config)` (built once, untimed) called on dataset
images, `simulate` = `Simulator.simulate` (both with preprocessing and quantization; simulate also the
float trace and statistics); hls4ml: `predict` on the quantized inputs. compile_s: hls4ml's `compile()`.
"""


def cpu_line() -> str:
    """The CPU model from /proc/cpuinfo (and the core count)."""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        name = ""
    return f"CPU: {name or platform.processor() or 'unknown'} ({os.cpu_count()} cores)"


# --------------------------------------------------------------------------- the cases

def _narrow_acc(cfg, prof, sim, i):
    """Layer ``i`` with FL_acc NARROW_FRAC bits below FL_w + FL_x and NARROW_INT integer bits fewer
    than the profiled accumulator needs."""
    fl = cfg.fmt_w.frac_bits + cfg.fmt_x.frac_bits - NARROW_FRAC
    ib = int_bits_for(prof[i].max_abs_acc) - NARROW_INT
    return replace(cfg, frac_acc=fl, acc_bits=ib + fl)


def _order_free(config, sim):
    """Saturating layers that hls4ml adds in another order (:func:`~fxpsim.interop.hls4ml.order_differs`)
    get saturation-free accumulators."""
    for i, (stage, cfg) in enumerate(zip(sim.stages, config)):
        if cfg.overflow.value == "clip" and export.order_differs(stage, sim.stages[i - 1] if i else None):
            config = config.with_layer(i, acc_bits=export.saturation_free_acc_bits(sim, i, cfg))
    return config


def _channels_last(config, sim):
    """hls4ml's own order on every layer it adds channels-last (:func:`~fxpsim.interop.hls4ml.hls4ml_channels`):
    ``channels-last:C``, strided over it where the layer is strided; None when no layer is."""
    changed = False
    for i, (stage, cfg) in enumerate(zip(sim.stages, config)):
        c = export.hls4ml_channels(stage, sim.stages[i - 1] if i else None)
        if c is not None:
            rf = f"+{cfg.order}" if cfg.order.startswith("strided") else ""
            config, changed = config.with_layer(i, order=f"channels-last:{c}{rf}"), True
    return config if changed else None


def _strided(config, sim, rf):
    """``strided:RF`` on every layer whose hls4ml Resource strategy takes RF, else strided:1."""
    for i, stage in enumerate(sim.stages):
        ok = rf in export.valid_reuse_factors(stage.fan_in, stage.out_channels, stage.kind == "conv2d")
        config = config.with_layer(i, order=f"strided:{rf if ok else 1}")
    return config


def _narrow_outputs(config):
    """Every fmt_y NARROW_INT integer bits narrower (the next fmt_x with it)."""
    for i in range(len(config)):
        y = config[i].fmt_y
        y = QFormat(y.int_bits - NARROW_INT, y.frac_bits, y.signed)
        config = config.with_layer(i, fmt_y=y)
        if i + 1 < len(config):
            config = config.with_layer(i + 1, fmt_x=y)
    return config


def cases(sim, prof):
    """``(case, config, note, patch)``: ``patch`` rewrites the export for the one diagnostic row."""
    base = config_from_profile(prof, weight_bits=8, data_bits=8, acc_bits=32, overflow="wrap").with_all(
        product="cast")
    narrow = type(base)(tuple(_narrow_acc(c, prof, sim, i) for i, c in enumerate(base)))
    out = [("wide wrap", base), ("wide sat", base.with_all(overflow="clip")),
           ("narrow wrap, FL_acc < FL_w+FL_x", narrow),
           ("narrow sat, FL_acc < FL_w+FL_x", narrow.with_all(overflow="clip"))]
    for rf in (1, 2, 4):
        out.append((f"Resource RF={rf}, narrow sat", _strided(narrow.with_all(overflow="clip"), sim, rf)))
    small = _narrow_outputs(base)
    out += [("result_t wrap", small.with_all(output_overflow="wrap")), ("result_t sat", small)]
    rows = []
    for name, cfg in out:
        fixed = _order_free(cfg, sim)
        raised = [f"{a.name} acc_bits {a.acc_bits} -> {b.acc_bits}" for a, b in zip(cfg, fixed)
                  if a.acc_bits != b.acc_bits]
        note = "; ".join(raised) + (" (saturation-free: hls4ml's channels-last order)" if raised else "")
        strided = sorted({c.order for c in fixed if c.order.startswith("strided")})
        if len(strided) > 1:
            note = "; ".join(filter(None, [note, "orders " + ", ".join(
                f"{c.name} {c.order}" for c in fixed)]))
        rows.append((name, fixed, note, None))
    for name, cfg in out:  # saturating, in hls4ml's channels-last order (the knob): no saturation-free bits
        cl = _channels_last(cfg, sim) if any(c.overflow.value == "clip" for c in cfg) else None
        if cl is not None:
            rows.append((f"{name}, channels-last", cl, "; ".join(
                f"{c.name} {c.order}" for c in cl if c.order.startswith("channels-last")), None))
    cfg = narrow.with_all(overflow="clip")
    differ = [c.name for i, c in enumerate(cfg) if export.order_differs(sim.stages[i], sim.stages[i - 1] if i else None)]
    if differ:  # what the export's refusal prevents: those layers saturating in hls4ml's order

        def patch(hc, names=tuple(differ)):
            for name in names:
                p = hc["LayerName"][name]["Precision"]
                p["accum"] = p["accum"].replace("AP_WRAP", "AP_SAT")
            return hc

        wrapped = cfg
        for i, c in enumerate(cfg):
            if c.name in differ:
                wrapped = wrapped.with_layer(i, overflow="wrap")
        names = ", ".join(differ)
        rows.append((f"narrow sat, {names} saturating (export refuses)", cfg,
                     f"{names} exported as wrap, accum_t patched to AP_SAT", (wrapped, patch)))
    return rows


# --------------------------------------------------------------------------- hls4ml

def torch_module(stages, weights, hc):
    """A torch module of the network with the export's layer names and fxpsim's weights, in float64
    (hls4ml reads them as they are: float32 would hold a wide accumulator's bias only to 24 bits)."""
    import torch

    by_name = {name: (stage, kind) for stage in stages for name, kind in export.layer_names(stage)}
    mods = OrderedDict()
    for name in hc["fxpsim"]["layers"][1:]:
        stage, kind = by_name[name]
        if kind == "dense":
            w, b = weights[stage.name]
            m = torch.nn.Linear(*w.shape)
            m.weight.data = torch.tensor(w.T.copy(), dtype=torch.float64)
            m.bias.data = torch.tensor(b, dtype=torch.float64)
        elif kind == "conv2d":
            w, b = weights[stage.name]
            m = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=stage.stride, padding=stage.padding)
            m.weight.data = torch.tensor(w, dtype=torch.float64)
            m.bias.data = torch.tensor(b, dtype=torch.float64)
        elif kind == "relu":
            m = torch.nn.ReLU()
        elif kind == "maxpool2d":
            layer = next(layer for op, layer in stage.post if op == kind)
            m = torch.nn.MaxPool2d(layer.size, layer.stride)
        else:
            m = torch.nn.Flatten()
        mods[name] = m

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for key, mod in mods.items():
                setattr(self, key, mod)

        def forward(self, x):  # the argument's name is the input layer's (export.INPUT_NAME)
            for key in mods:
                x = getattr(self, key)(x)
            return x

    return Net().double()


def build(hc, weights, stages, outdir: Path):
    """Convert, check the types, compile: (hls4ml model, compile seconds)."""
    import hls4ml

    cfg = json.loads(json.dumps(hc))
    cfg["InputShape"] = tuple(cfg["InputShape"])
    net = torch_module(stages, weights, hc)
    hm = hls4ml.converters.convert_from_pytorch_model(net, hls_config=cfg, output_dir=str(outdir),
                                                      backend="Vivado", io_type="io_parallel")
    diff = export.check_hls4ml_model(hm, hc)
    assert not diff, "hls4ml did not take the export as it is: " + "; ".join(diff)
    t0 = time.perf_counter()
    hm.compile()
    return hm, time.perf_counter() - t0


def _median_us(fn, images: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / images * 1e6


def speeds(sim, cfg, x, hm, xin, repeats: int, single: int) -> dict:
    """us per image, batched (median of ``repeats``) and one image per call: fxpsim's compiled plan
    (``Simulator.compile``, built once outside the timing; checked equal to ``simulate`` by the
    caller), ``Simulator.simulate``, and hls4ml's ``predict``."""
    plan = sim.compile(cfg, max_batch=len(x))
    plan(x[:1]), plan(x)  # warm: Numba's kernels load from the cache on their first call
    return {"plan_batched_us": _median_us(lambda: plan(x), len(x), repeats),
            "simulate_batched_us": _median_us(lambda: sim.simulate(x, cfg), len(x), repeats),
            "hls4ml_batched_us": _median_us(lambda: hm.predict(xin), len(x), repeats),
            "plan_single_us": _median_us(lambda: [plan(x[i]) for i in range(single)], single, 1),
            "simulate_single_us": _median_us(lambda: [sim.simulate(x[i:i + 1], cfg) for i in range(single)],
                                             single, 1),
            "hls4ml_single_us": _median_us(lambda: [hm.predict(xin[i:i + 1]) for i in range(single)], single, 1)}


def run_model(key: str, args, workdir: Path) -> list[dict]:
    path = ROOT / "models" / MODELS[key]
    model = load_model(path)
    split = model.metadata.get("split") or {}
    data = load_dataset(model.metadata["dataset"], None,
                        **{k: split[k] for k in ("test_fraction", "split_seed") if k in split})
    sim = Simulator(model)
    x_cal, _ = calibration_set(model, data, 500, 0)
    prof = profile(sim, x_cal)
    x, y = data.x_test, data.y_test
    xf = sim.prepare(x).reshape(len(x), *sim.stages[0].in_shape)
    single = min(args.single, len(x))
    rows = []
    for j, (case, cfg, note, diag) in enumerate(cases(sim, prof)):
        if args.case is not None and args.case not in case:
            continue
        print(f"{key}: {case} ...", flush=True)
        exported_cfg, patch = diag if diag else (cfg, None)
        hc = json.loads(export.hls4ml_json(export.hls4ml_config(model, exported_cfg, path)))
        if patch:
            hc = patch(hc)
        weights = export.hls4ml_weights(model, cfg)
        hm, compile_s = build(hc, weights, sim.stages, workdir / f"{key}-{j}")
        res = sim.simulate(x, cfg, y)
        plan_equal = int(np.count_nonzero(sim.compile(cfg, max_batch=len(x))(x).logits == res.logits))
        xin = np.ascontiguousarray(dequantize(quantize(xf, cfg[0].fmt_x, cfg[0].rounding, "clip"), cfg[0].fmt_x))
        got = np.asarray(hm.predict(xin), dtype=np.float64).reshape(res.logits.shape)
        got_float = np.asarray(hm.predict(np.ascontiguousarray(xf)), dtype=np.float64).reshape(res.logits.shape)
        rows.append({
            "model": key, "case": case,
            "strategy": ", ".join(sorted({f"{e['Strategy']} RF={e['ReuseFactor']}" if e["Strategy"] == "Resource"
                                          else "Latency" for e in hc["LayerName"].values() if "Strategy" in e})),
            "accum_t": " ".join(hc["LayerName"][c.name]["Precision"]["accum"].replace("ap_fixed", "")
                                for c in cfg),
            "outputs_equal": int(np.count_nonzero(got == res.logits)), "outputs": int(res.logits.size),
            "float_input_equal": int(np.count_nonzero(got_float == res.logits)),
            "images_equal": int(np.count_nonzero((got == res.logits).all(axis=1))),
            "plan_equal": plan_equal,
            "fxpsim_overflows": int(sum(s.overflow_count for s in res.layer_stats)),
            "cast_overflows": int(sum(s.cast_overflows for s in res.layer_stats)),
            "float_beyond_fmt_y": int(sum(s.outputs_out_of_format for s in res.layer_stats)),
            "fxpsim_accuracy": res.accuracy,
            **speeds(sim, cfg, x, hm, xin, args.repeats, single),
            "compile_s": compile_s, "note": note})
        r = rows[-1]
        print(f"  {r['outputs_equal']}/{r['outputs']} equal (float input {r['float_input_equal']}), "
              f"{r['fxpsim_overflows']} overflows, compile {compile_s:.1f} s", flush=True)
    return rows


def versions() -> str:
    import hls4ml
    import torch

    try:
        gxx = subprocess.run(["g++", "--version"], check=False, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        gxx = "g++ unknown"
    return f"hls4ml {hls4ml.__version__}, torch {torch.__version__}, {gxx}, numpy {np.__version__}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="batched timings: median of this many runs")
    ap.add_argument("--single", type=int, default=450, help="images timed at one image per call")
    ap.add_argument("--keep", default=None, metavar="DIR", help="keep the hls4ml projects in DIR")
    ap.add_argument("--only", choices=sorted(MODELS), default=None)
    ap.add_argument("--case", default=None, metavar="TEXT", help="only the cases whose name contains TEXT")
    ap.add_argument("--out", default=str(ROOT / "reports"), help="folder of hls4ml_parity.csv/.md")
    args = ap.parse_args()
    lines = [cpu_line(), load_line(), versions()]
    print("\n".join(lines))
    with tempfile.TemporaryDirectory(prefix="fxpsim-hls4ml-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        rows = []
        for key in ([args.only] if args.only else list(MODELS)):
            rows += run_model(key, args, workdir)
    df = pd.DataFrame(rows)
    df.insert(df.columns.get_loc("outputs") + 1, "equal_pct", 100.0 * df.outputs_equal / df.outputs)
    models = ", ".join(model_provenance(ROOT / "models" / MODELS[k]) for k in ([args.only] if args.only else MODELS))
    lines.append(load_line().replace("load average", "load average at the end"))
    text = REPORT_TEXT + f"\nModels: {models}.\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
    write_table(df, "hls4ml_parity", args.out, title="fxpsim and hls4ml's C simulation, output for output",
                text=text)
    print(format_table(df.drop(columns=["note", "accum_t"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
