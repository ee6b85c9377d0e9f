"""fxp_pe (fxpsim/rtl) against fxpsim's Python-int reference, MAC by MAC, on Verilator.

One build of a bank of PEs with random widths (seeded) and the edges: 1-bit operands, most-negative
operands, unsigned inputs, BW_ACC of 32, 33 and 62, accumulators narrower than one product,
requantization shifts left, right and beyond BW_ACC, every deterministic rounding, output wrap and
clip, ReLU, FL_acc below and above FL_w + FL_x, a bias format other than the accumulator's, and
sequences of K = 1. Every cycle compares each PE's accumulator, overflow count, cast count and
output with fxpsim's Python-int reference (:mod:`fxpsim.datapath.reference`: its register, one
addition at a time, and its requantization).
"""

from __future__ import annotations

import json

import numpy as np

from fxpsim.config import LayerConfig
from fxpsim.datapath import reference
from fxpsim.interop.vectors import RTL_ROUNDING, rtl_parameters, rtl_sources
from fxpsim.qformat import QFormat, convert

from .cocotb_run import build_and_test, require_verilator

SEED = 20161
MODES = [(o, p) for o in ("wrap", "clip") for p in ("exact", "cast")]
CORNERS = {"wrap/exact": 0, "wrap/cast": 1, "clip/exact": 1, "clip/cast": 0}
"""Per mode three PEs: this corner (0: 1-bit operands and BW_acc 2, 1: 31-bit operands and BW_acc
62), one with BW_acc 32 or 33, one random. One build: Verilator's C++ grows with every PE."""
CYCLES = 4000
MIN_MACS = 10_000
PORTS = ("bias", "x", "w", "acc", "ovf", "cast", "y")


def _fmt(rng, width: int, signed: bool = True) -> QFormat:
    int_bits = int(rng.integers(-3, width + 4))
    return QFormat(int_bits, width - int_bits, signed)


def _random_config(rng, name: str, overflow: str, product: str, edge: int) -> tuple[LayerConfig, bool]:
    """One PE's layer: edge 0 the 1-bit corner, 1 the 62-bit accumulator, 2 BW_acc 32/33,
    else random, the accumulator often narrower than a product, so that it overflows."""
    if edge == 0:
        fmt_x, fmt_w, acc = QFormat(1, 0), QFormat(1, 0), 2
    elif edge == 1:
        fmt_x, fmt_w, acc = _fmt(rng, 31), _fmt(rng, 31), 62
    elif edge == 2:
        fmt_x, fmt_w, acc = _fmt(rng, 16, bool(rng.integers(2))), _fmt(rng, 16), int(rng.choice([32, 33]))
    else:
        fmt_x = _fmt(rng, int(rng.integers(1, 17)), bool(rng.random() < 0.7))
        fmt_w = _fmt(rng, int(rng.integers(1, 17)))
        prod = fmt_x.width + fmt_w.width
        acc = int(rng.integers(max(2, prod - 6), prod + 8))
    fl_p = fmt_x.frac_bits + fmt_w.frac_bits
    frac_acc = fl_p + (int(rng.integers(-6, 4)) if edge != 1 else 0)
    width_y = int(rng.integers(1, 21))
    fmt_y = QFormat.from_width(width_y, width_y - (frac_acc - int(rng.integers(-6, 40))),
                               bool(rng.random() < 0.8))
    bias_width = int(rng.integers(2, acc + 1))
    fmt_bias = QFormat.from_width(bias_width, bias_width - (frac_acc + int(rng.integers(-3, 4))))
    roundings = list(RTL_ROUNDING)
    cfg = LayerConfig(name, fmt_w=fmt_w, fmt_x=fmt_x, fmt_y=fmt_y, acc_bits=acc, overflow=overflow,
                      rounding=roundings[int(rng.integers(4))], frac_acc=frac_acc, product=product,
                      product_rounding=roundings[int(rng.integers(4))],
                      output_overflow=str(rng.choice(["clip", "wrap"])), fmt_bias=fmt_bias)
    return cfg, bool(rng.random() < 0.3)


def _raw(rng, fmt: QFormat, n: int) -> np.ndarray:
    """Raw values of ``fmt``, a third of them its edges (most negative first)."""
    v = rng.integers(fmt.raw_min, fmt.raw_max, size=n, endpoint=True, dtype=np.int64)
    edges = np.array([fmt.raw_min, fmt.raw_max, 0, min(1, fmt.raw_max), max(-1, fmt.raw_min)], np.int64)
    pick = rng.random(n) < 0.35
    v[pick] = rng.choice(edges, size=int(pick.sum()))
    return v


def _schedule(rng, cycles: int) -> list[str]:
    """L (load a bias) then K MACs, K = 1 a quarter of the time, up to 60."""
    ops = []
    while len(ops) < cycles:
        k = 1 if rng.random() < 0.25 else int(rng.integers(2, 61))
        ops += ["L"] + ["M"] * k
    return ops[:cycles]


def _expected(cfg: LayerConfig, relu: bool, ops, rng) -> dict:
    """Stimulus and, after each cycle, the reference's register (:func:`reference.accumulate`, one
    addition at a time), its overflow and cast counts and :func:`reference.requantize_one` of it.
    A load converts the bias into the accumulator format (:func:`fxpsim.qformat.convert`)."""
    act = "relu" if relu else "none"
    n = len(ops)
    x, w, bias = _raw(rng, cfg.fmt_x, n), _raw(rng, cfg.fmt_w, n), _raw(rng, cfg.fmt_bias, n)
    acc0 = convert(bias, cfg.fmt_bias, cfg.fmt_bias_acc, cfg.rounding).tolist()
    out = {k: [] for k in ("acc", "ovf", "cast", "y")}
    for t, op in enumerate(ops):
        if op == "L":
            reg = reference.accumulate(acc0[t], [], cfg)
        else:
            reg.add(int(x[t]) * int(w[t]))
        for key, value in (("acc", reg.value), ("ovf", reg.overflows), ("cast", reg.casts),
                           ("y", reference.requantize_one(reg.value, 0, cfg, act))):
            out[key].append(int(value))
    return {"x": x.tolist(), "w": w.tolist(), "bias": bias.tolist(), **out}


def _bank_verilog(units) -> str:
    """Module pe_bank: one fxp_pe per unit, ports <name>_<i>; load and mac shared."""
    ports, body = ["input wire clk", "input wire rst", "input wire load", "input wire mac"], []
    for i, u in enumerate(units):
        p = u["params"]
        widths = {"bias": p["W_B"], "x": p["W_X"], "w": p["W_W"], "acc": p["BW_ACC"], "ovf": p["CNT_W"],
                  "cast": p["CNT_W"], "y": p["W_Y"]}
        for name in PORTS:
            way = "input" if name in ("bias", "x", "w") else "output"
            ports.append(f"{way} wire [{widths[name] - 1}:0] {name}_{i}")
        params = ", ".join(f".{k}({v})" for k, v in p.items())
        conns = ", ".join(f".{pin}({name}_{i})" for pin, name in
                          (("bias", "bias"), ("x", "x"), ("w", "w"), ("acc", "acc"), ("ovf_count", "ovf"),
                           ("cast_count", "cast"), ("y", "y")))
        body.append(f"    fxp_pe #({params}) u_{i} (.clk(clk), .rst(rst), .load(load), .mac(mac), {conns});")
    return "module pe_bank (\n    " + ",\n    ".join(ports) + "\n);\n" + "\n".join(body) + "\nendmodule\n"


def _units(rng, ops):
    units = []
    for overflow, product in MODES:
        for edge in (CORNERS[f"{overflow}/{product}"], 2, 3):
            cfg, relu = _random_config(rng, f"pe{len(units)}", overflow, product, edge)
            params = rtl_parameters(cfg, relu, cfg.fmt_bias)
            units.append({"mode": f"{overflow}/{product}", "params": params, "config": cfg.to_dict(),
                          "relu": relu, **{k: params[k] for k in ("W_B", "W_X", "W_W", "Y_SIGNED")},
                          **_expected(cfg, relu, ops, rng)})
    return units


def test_pe_bank_matches_reference(tmp_path, monkeypatch):
    require_verilator()
    rng = np.random.default_rng(SEED)
    ops = _schedule(rng, CYCLES)
    units = _units(rng, ops)
    (tmp_path / "pe_bank.v").write_text(_bank_verilog(units))
    spec, result = tmp_path / "bank.json", tmp_path / "result.json"
    spec.write_text(json.dumps({"ops": ops, "units": units}))
    times = build_and_test(monkeypatch, rtl_sources() + [tmp_path / "pe_bank.v"], "pe_bank", tmp_path / "build",
                           "pe_bank_tb", extra_env={"FXPSIM_PE_BANK": spec, "FXPSIM_PE_BANK_RESULT": result})
    got = json.loads(result.read_text())
    print(f"pe bank: {len(units)} PEs, {sum(got['compared_macs'].values())} MACs compared "
          f"{got['compared_macs']}, build {times['build_seconds']:.1f} s, run {times['run_seconds']:.1f} s")
    assert got["mismatches"] == 0, got["first"]
    for mode in (f"{o}/{p}" for o, p in MODES):
        assert got["compared_macs"][mode] >= MIN_MACS, (mode, got["compared_macs"])
