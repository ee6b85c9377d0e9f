"""Golden vectors: a network's quantized layers and their expected results, as files RTL reads.

``fxpsim export MODEL --config CFG --vectors N --out DIR`` (issue 16) runs the first N images of
the model's test split through the integer datapath (:class:`fxpsim.simulate.Simulator`, dense
engine, DESIGN.md "Fixed-point semantics") and writes, per compute layer ``L`` (``fc1``,
``conv1``, ... as :func:`fxpsim.simulate.build_stages` names them):

==================  ==============================================================  ==========
file                words, in this order                                            word width
==================  ==============================================================  ==========
``L.w.mem``/``.coe``  weights: dense word ``n*K + k`` = ``w[k][n]`` (neuron-major, as   fmt_w
                    ``fxp_dense`` reads them); conv word ``((f*C + c)*kh + i)*kw + j``
                    = ``w[f][c][i][j]`` (the accumulation order per filter)
``L.b.mem``/``.coe``  bias: word ``n`` = ``bias[n]``, raw in the accumulator format       BW_acc
                    (a config's ``fmt_bias`` converted into it, as the engines take it)
``L.h``             C++ header: ``ap_fixed`` typedefs, the raw weight and bias arrays
``L.x.mem``         the layer's N inputs: image-major, then C order (dense ``k``;       fmt_x
                    conv channel, row, column)
``L.y.mem``         the expected kernel outputs (requantized, fused ReLU applied):      fmt_y
                    image-major, then ``n`` (conv: filter, row, column)
``L.acc.mem``       the final accumulators, same order                               BW_acc
``L.stats.csv``     per image: additions, overflow_count, outputs_affected, cast_overflows,
                    max_abs_acc (:class:`~fxpsim.datapath.core.OverflowStats`)
``manifest.json``   formats, knobs, shapes, files, the ``fxp_pe`` parameters, the model file's
                    sha256, the fxpsim version
``rtl/``            the Verilog sources of :data:`RTL_DIR` and their README
==================  ==============================================================  ==========

A word is one line of lower-case hex, ``ceil(width / 4)`` digits: the ``width``-bit two's
complement of the raw value (unsigned formats: the value itself), the pad bits above ``width``
zero, so ``$readmemh`` into a ``[width-1:0]`` register loads it exactly (Q1.7 -1.0 = raw -128
-> ``80``; Q2.1 raw -1 -> ``7``). The files are the same bytes for the same command (no time,
no path; JSON keys sorted), each written atomically, the manifest last.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..config import LayerConfig, NetworkConfig
from ..errors import FxpsimError, check
from ..qformat import Overflow, QFormat, Rounding, check_raw, parse_overflow, parse_rounding, quantize
from ..tables import to_csv, write_text_atomic
from ..simulate import Simulator, convert_raw

__all__ = ["RTL_DIR", "RTL_ROUNDING", "VECTORS_FORMAT", "VECTORS_VERSION", "LayerVectors", "ap_type",
           "bias_format", "coe_text", "golden_vectors", "header_text", "layer_knobs", "mem_text", "parse_coe",
           "parse_mem", "read_manifest", "read_mem", "rtl_parameters", "rtl_sources", "word_digits",
           "write_vectors"]

VECTORS_FORMAT = "fxpsim-vectors"
VECTORS_VERSION = 1
RTL_DIR = Path(__file__).resolve().parents[1] / "rtl"
"""The Verilog PE (package data): ``fxp_pe.v``, ``fxp_dense.v`` and their helpers, README.md."""

RTL_ROUNDING = {Rounding.NEAREST_EVEN: 0, Rounding.NEAREST: 1, Rounding.FLOOR: 2, Rounding.TOWARD_ZERO: 3}
"""fxpsim rounding -> the ``ROUND`` / ``PRODUCT_ROUND`` code of ``fxp_round_shift.v``."""
AP_QUANTIZATION = {Rounding.NEAREST_EVEN: "AP_RND_CONV", Rounding.NEAREST: "AP_RND_INF",
                   Rounding.FLOOR: "AP_TRN", Rounding.TOWARD_ZERO: "AP_TRN_ZERO"}
"""fxpsim rounding -> ap_fixed's ``ap_q_mode`` (DESIGN.md)."""
AP_OVERFLOW = {Overflow.WRAP: "AP_WRAP", Overflow.CLIP: "AP_SAT"}
"""fxpsim overflow -> ap_fixed's ``ap_o_mode``."""
_C_TYPES = ((8, "int8_t", "uint8_t"), (16, "int16_t", "uint16_t"), (32, "int32_t", "uint32_t"),
            (64, "int64_t", "uint64_t"))
_PER_LINE = 16
"""Values per line of a C array."""


# --------------------------------------------------------------------------- words

def word_digits(width: int) -> int:
    """Hex digits of one word of a ``width``-bit format: ``ceil(width / 4)``."""
    return -(-int(width) // 4)


def _words(raw, fmt: QFormat) -> list[str]:
    """Each raw value of ``fmt`` (checked to be in range) as one hex word (module docstring)."""
    values = check_raw(np.asarray(raw).reshape(-1), fmt, "raw values").tolist()
    mask, digits = (1 << fmt.width) - 1, word_digits(fmt.width)
    return [format(v & mask, f"0{digits}x") for v in values]


def mem_text(raw, fmt: QFormat) -> str:
    """``$readmemh`` text: one word per line, C order of ``raw``."""
    return "".join(word + "\n" for word in _words(raw, fmt))


def coe_text(raw, fmt: QFormat, comment: str = "") -> str:
    """A Xilinx ``.coe`` (radix 16) of the words of :func:`mem_text`; ``comment`` lines start with ``;``."""
    head = "".join(f"; {line}\n" for line in comment.splitlines())
    words = _words(raw, fmt)
    body = ",\n".join(words) + ";\n" if words else ";\n"
    return f"{head}memory_initialization_radix=16;\nmemory_initialization_vector=\n{body}"


def _word_value(word: str, fmt: QFormat, where: str) -> int:
    """The raw value of one hex word of ``fmt`` (sign taken from bit ``width - 1``)."""
    ok = len(word) == word_digits(fmt.width) and all(c in "0123456789abcdefABCDEF" for c in word)
    check(ok, f"{where}: {word[:40]!r} is not a {word_digits(fmt.width)}-digit hex word of {fmt}: "
              "give a file written by fxpsim export")
    v = int(word, 16)
    check(v >> fmt.width == 0, f"{where}: word {word!r} has bits above {fmt}'s {fmt.width}: give a file "
                               "written by fxpsim export")
    return v - (1 << fmt.width) if fmt.signed and v >> (fmt.width - 1) else v


def parse_mem(text: str, fmt: QFormat, source: str = "mem file") -> np.ndarray:
    """The raw int64 values of :func:`mem_text` output (one word per line, blank lines ignored)."""
    words = [line.strip() for line in text.splitlines() if line.strip()]
    return np.array([_word_value(w, fmt, f"{source} word {i}") for i, w in enumerate(words)], dtype=np.int64)


def read_mem(path, fmt: QFormat) -> np.ndarray:
    """:func:`parse_mem` of the file at ``path``."""
    return parse_mem(Path(path).read_text(encoding="ascii"), fmt, str(path))


def parse_coe(text: str, fmt: QFormat, source: str = "coe file") -> np.ndarray:
    """The raw int64 values of :func:`coe_text` output (radix 16)."""
    lines = [line.split(";", 1)[0] if line.lstrip().startswith(";") else line for line in text.splitlines()]
    body = "".join(lines).replace(" ", "")
    check("memory_initialization_radix=16;" in body and "memory_initialization_vector=" in body,
          f"{source} is not a radix-16 .coe file: give a file written by fxpsim export")
    vector = body.split("memory_initialization_vector=", 1)[1].split(";", 1)[0]
    words = [w for w in vector.split(",") if w]
    return np.array([_word_value(w, fmt, f"{source} word {i}") for i, w in enumerate(words)], dtype=np.int64)


# --------------------------------------------------------------------------- the layer's knobs

def _knob(cfg: LayerConfig, name: str, default) -> str:
    """A per-layer knob of issue 16 as its string, ``default`` where this LayerConfig has none yet."""
    value = getattr(cfg, name, default)
    return value.value if isinstance(value, Enum) else str(value)


def layer_knobs(cfg: LayerConfig) -> dict:
    """The datapath choices of ``cfg`` the exported files depend on (DESIGN.md), each checked to be
    one the sequential ``fxp_pe`` runs, else a one-line error naming the fix."""
    where = f"layer {cfg.name}"
    knobs = {"overflow": cfg.overflow.value, "rounding": cfg.rounding.value,
             "product": _knob(cfg, "product", "exact"),
             "product_rounding": parse_rounding(_knob(cfg, "product_rounding", "floor")).value,
             "order": _knob(cfg, "order", "sequential"),
             "output_overflow": parse_overflow(_knob(cfg, "output_overflow", "clip"), allow_ideal=False).value}
    check(cfg.overflow is not Overflow.IDEAL,
          f"{where}: overflow=ideal is an unbounded reference no hardware has: export a config with wrap or "
          "clip accumulators")
    for key in ("rounding", "product_rounding"):
        check(Rounding(knobs[key]) in RTL_ROUNDING,
              f"{where}: {key}={knobs[key]} has no RTL (fxp_pe has no random draw): export with "
              f"{', '.join(r.value for r in RTL_ROUNDING)}")
    check(knobs["order"] == "sequential",
          f"{where}: order={knobs['order']} is not the sequential k = 0..K-1 fxp_pe runs: export with "
          "order sequential")
    return knobs


def bias_format(cfg: LayerConfig) -> QFormat:
    """The format of the bias the engines start the accumulator at: the accumulator's (BW_acc bits,
    FL_acc); a ``fmt_bias`` of the config is converted into it before (DESIGN.md)."""
    return getattr(cfg, "fmt_bias_acc", cfg.fmt_bias)


def _activation(stage) -> str:
    return "relu" if stage.relu else "none"


def ap_type(fmt: QFormat, rounding: Rounding | None = None, overflow: Overflow | None = None) -> str:
    """``ap_fixed<W,I>`` (``ap_ufixed`` when unsigned) of ``fmt``, with the ``ap_q_mode`` and
    ``ap_o_mode`` of ``rounding`` and ``overflow`` when given (DESIGN.md: nearest-even = AP_RND_CONV, nearest =
    AP_RND_INF, floor = AP_TRN, toward-zero = AP_TRN_ZERO; wrap = AP_WRAP, clip = AP_SAT)."""
    base = "ap_fixed" if fmt.signed else "ap_ufixed"
    modes = ""
    if rounding is not None or overflow is not None:
        modes = f", {AP_QUANTIZATION[rounding or Rounding.FLOOR]}, {AP_OVERFLOW[overflow or Overflow.WRAP]}"
    return f"{base}<{fmt.width}, {fmt.int_bits}{modes}>"


def rtl_parameters(cfg: LayerConfig, relu: bool, fmt_bias: QFormat | None = None) -> dict:
    """The Verilog parameters of ``fxp_pe`` (and ``fxp_dense``) that run layer ``cfg``
    (fxpsim/rtl/README.md), its bias memory in ``fmt_bias`` (default :func:`bias_format`, as
    exported; another format is converted into the accumulator's by the PE, saturating)."""
    knobs = layer_knobs(cfg)
    fl_acc = cfg.frac_acc
    fmt_bias = bias_format(cfg) if fmt_bias is None else fmt_bias
    return {"W_X": cfg.fmt_x.width, "X_SIGNED": int(cfg.fmt_x.signed),
            "W_W": cfg.fmt_w.width, "W_SIGNED": int(cfg.fmt_w.signed),
            "W_B": fmt_bias.width, "BIAS_SHIFT": fmt_bias.frac_bits - fl_acc,
            "BW_ACC": cfg.acc_bits, "OVERFLOW": int(cfg.overflow is Overflow.CLIP),
            "PRODUCT_SHIFT": cfg.fmt_w.frac_bits + cfg.fmt_x.frac_bits - fl_acc,
            "PRODUCT_ROUND": RTL_ROUNDING[Rounding(knobs["product_rounding"])],
            "PRODUCT_CAST": int(knobs["product"] == "cast"),
            "W_Y": cfg.fmt_y.width, "Y_SIGNED": int(cfg.fmt_y.signed), "SHIFT": cfg.shift,
            "ROUND": RTL_ROUNDING[cfg.rounding], "OUT_WRAP": int(knobs["output_overflow"] == "wrap"),
            "RELU": int(bool(relu)), "CNT_W": 32}


def rtl_sources() -> list[Path]:
    """The Verilog files of :data:`RTL_DIR`, sorted by name."""
    return sorted(RTL_DIR.glob("*.v"))


# --------------------------------------------------------------------------- the vectors

@dataclass(frozen=True, eq=False)  # holds arrays
class LayerVectors:
    """One compute layer's raw parameters and, for each of N images, its input, expected kernel
    output ``y``, final accumulators ``acc`` and overflow statistics (``stats``: one
    :class:`~fxpsim.datapath.core.OverflowStats`-like record per image)."""

    stage: object
    cfg: LayerConfig
    w: np.ndarray
    b: np.ndarray
    x: np.ndarray
    y: np.ndarray
    acc: np.ndarray
    stats: tuple

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def w_words(self) -> np.ndarray:
        """The weights in memory order: dense ``n*K + k`` -> ``w[k][n]``; conv (F, C, kh, kw) C order."""
        return self.w.T if self.stage.kind == "dense" else self.w

    def stats_table(self) -> pd.DataFrame:
        """One row per image: additions, overflow_count, outputs_affected, cast_overflows, max_abs_acc."""
        return pd.DataFrame([{"image": i, "additions": int(s.additions),
                              "overflow_count": int(s.overflow_count),
                              "outputs_affected": int(s.outputs_affected),
                              "cast_overflows": int(getattr(s, "cast_overflows", 0)),
                              "max_abs_acc": int(s.max_abs_acc)} for i, s in enumerate(self.stats)])


def golden_vectors(model, config: NetworkConfig, images, seed: int = 0,
                   backend=None) -> tuple[LayerVectors, ...]:
    """Every compute layer of ``model`` under ``config`` on dataset ``images`` (the model's
    preprocessing, then quantized to the first layer's fmt_x), on the dense engine: the sequential
    datapath ``fxp_pe`` implements (``backend``: :class:`~fxpsim.simulate.Simulator`'s, e.g.
    ``fxpsim.datapath.reference``). Per image one kernel call, so the statistics are per image."""
    sim = Simulator(model, seed=seed, backend=backend)
    sim.require_chain("export --vectors")
    config = config.with_engine("dense")
    sim.check_config(config)
    for cfg in config:
        layer_knobs(cfg)
    images = np.asarray(images)
    check(len(images) >= 1, "no images to export: give at least one (--vectors N, N >= 1)")
    h = quantize(sim.prepare(images), config[0].fmt_x, config[0].rounding, "clip", seed)
    layers = []
    for i, (stage, cfg) in enumerate(zip(sim.stages, config)):
        if i:
            h = convert_raw(h, config[i - 1].fmt_y, cfg.fmt_x, cfg.rounding, seed)
        w, b = sim.stage_params(i, cfg)  # b: what the engine starts each accumulator at
        runs = [sim.run_kernel(i, h[j:j + 1], w, b, cfg) for j in range(len(h))]
        x = h.reshape(len(h), -1) if stage.kind == "dense" else h
        layers.append(LayerVectors(stage, cfg, w, b, x, np.concatenate([r.y for r in runs]),
                                   np.concatenate([r.acc for r in runs]), tuple(r.stats for r in runs)))
        _, h, _ = sim.run_stage(i, h, cfg, (w, b))
    return tuple(layers)


# --------------------------------------------------------------------------- the files

def _c_type(fmt: QFormat) -> str:
    """The narrowest C integer type holding ``fmt``'s raw values (widths are at most 62 bits)."""
    return next(s if fmt.signed else u for bits, s, u in _C_TYPES if fmt.width <= bits)


def _c_array(name: str, raw: np.ndarray, fmt: QFormat, note: str) -> str:
    values = [str(int(v)) for v in raw.reshape(-1)]
    rows = [", ".join(values[i:i + _PER_LINE]) for i in range(0, len(values), _PER_LINE)]
    body = ",\n".join(f"    {row}" for row in rows)
    return f"// {note}\nstatic const {_c_type(fmt)} {name}[{len(values)}] = {{\n{body}\n}};\n"


def header_text(lv: LayerVectors, knobs: dict, provenance: str) -> str:
    """The C++ header of one layer: ap_fixed typedefs and its raw weight and bias arrays."""
    cfg, st, n = lv.cfg, lv.stage, lv.name
    shape = (f"K = {st.fan_in} inputs, N = {st.out_channels} outputs" if st.kind == "dense" else
             f"{st.out_channels} filters of {' x '.join(map(str, lv.w.shape[1:]))}, stride {st.stride}, "
             f"padding {st.padding}")
    order = ("index n * K + k holds w[k][n] (neuron-major)" if st.kind == "dense" else
             "index ((f * C + c) * kh + i) * kw + j holds w[f][c][i][j]")
    guard = f"FXPSIM_VECTORS_{n.upper()}_H"
    rnd, out = cfg.rounding, Overflow(knobs["output_overflow"])
    types = [("weight_t", ap_type(cfg.fmt_w), f"{cfg.fmt_w}"),
             ("bias_t", ap_type(bias_format(cfg)), f"{bias_format(cfg)}, the accumulator's"),
             ("input_t", ap_type(cfg.fmt_x), f"{cfg.fmt_x}"),
             ("accum_t", ap_type(cfg.fmt_acc, Rounding(knobs["product_rounding"]), cfg.overflow),
              f"BW_acc {cfg.acc_bits}, FL_acc {cfg.frac_acc}, product {knobs['product']}, {cfg.overflow.value} "
              "after every addition"),
             ("result_t", ap_type(cfg.fmt_y, rnd, out),
              f"{cfg.fmt_y}, requantized with {rnd.value}, output {out.value}, then {_activation(st)}")]
    lines = [f"// fxpsim golden vectors: layer {n} ({st.kind}, {shape})",
             f"// {provenance}, fxpsim {__version__}.",
             "// Arrays hold raw two's-complement integers: value = raw * 2^-F of the format. Load one into",
             f"// its type bit for bit: {n}_weight_t v; v.range({n}_weight_t::width - 1, 0) = {n}_w_raw[i];",
             f"#ifndef {guard}", f"#define {guard}", "", "#include <cstdint>", "", '#include "ap_fixed.h"', ""]
    lines += [f"typedef {t} {n}_{name};  // {note}" for name, t, note in types]
    lines += ["", f"static const int {n}_K = {st.fan_in};", f"static const int {n}_N = {st.out_channels};", ""]
    text = "\n".join(lines) + "\n"
    text += _c_array(f"{n}_w_raw", lv.w_words, cfg.fmt_w, f"weights, {cfg.fmt_w}: {order}") + "\n"
    text += _c_array(f"{n}_b_raw", lv.b, bias_format(cfg), f"bias, {bias_format(cfg)}: index n holds bias[n]")
    return text + f"\n#endif  // {guard}\n"


def _shape(lv: LayerVectors) -> dict:
    st = lv.stage
    if st.kind == "dense":
        return {"K": st.fan_in, "N": st.out_channels}
    f, c, kh, kw = lv.w.shape
    _, _, h, w = lv.x.shape
    _, _, oh, ow = lv.y.shape
    return {"C": c, "H": h, "W": w, "F": f, "kh": kh, "kw": kw, "stride": st.stride, "padding": st.padding,
            "OH": oh, "OW": ow, "K": st.fan_in}


def _layer_entry(lv: LayerVectors, knobs: dict, files: dict) -> dict:
    cfg, st = lv.cfg, lv.stage
    word_order = {"weights": "n*K + k = w[k][n] (neuron-major)" if st.kind == "dense" else
                  "((f*C + c)*kh + i)*kw + j = w[f][c][i][j]",
                  "bias": "n = bias[n]",
                  "x": "image-major, then the layer input in C order (dense k; conv channel, row, column)",
                  "y": "image-major, then the outputs in C order (dense n; conv filter, row, column)",
                  "acc": "as y"}
    totals = lv.stats_table()[["additions", "overflow_count", "outputs_affected", "cast_overflows"]].sum()
    return {"name": st.name, "kind": st.kind, "config": cfg.to_dict(), "activation": _activation(st),
            "formats": {"w": str(cfg.fmt_w), "x": str(cfg.fmt_x), "y": str(cfg.fmt_y),
                        "bias": str(bias_format(cfg)), "acc": str(cfg.fmt_acc)},
            "ap_types": {"weight": ap_type(cfg.fmt_w), "bias": ap_type(bias_format(cfg)),
                         "input": ap_type(cfg.fmt_x),
                         "accum": ap_type(cfg.fmt_acc, Rounding(knobs["product_rounding"]), cfg.overflow),
                         "result": ap_type(cfg.fmt_y, cfg.rounding, Overflow(knobs["output_overflow"]))},
            "bw_acc": cfg.acc_bits, "fl_acc": cfg.frac_acc, **knobs, "shift": cfg.shift,
            "shape": _shape(lv), "in_shape": list(st.in_shape or ()), "out_shape": list(st.out_shape or ()),
            "files": files, "word_order": word_order, "rtl_parameters": rtl_parameters(cfg, st.relu),
            "totals": {k: int(v) for k, v in totals.items()}}


def write_vectors(out, model, config: NetworkConfig, images, *, model_file, dataset: str = "",
                  seed: int = 0) -> list[Path]:
    """:func:`golden_vectors` of ``images`` written under ``out`` (the module docstring's files);
    ``model_file`` is hashed into the manifest, ``dataset`` names where the images come from.
    Returns the paths written, the manifest last."""
    out, model_file = Path(out), Path(model_file)
    check(not out.exists() or out.is_dir(), f"--out {out} is a file: give a directory for the vector files")
    layers = golden_vectors(model, config, images, seed)
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    provenance = f"model {model_file.name} (sha256 {sha})"
    (out / "manifest.json").unlink(missing_ok=True)  # never a manifest beside files it does not describe
    written, entries = [], []
    for lv in layers:
        cfg, n = lv.cfg, lv.name
        knobs = layer_knobs(cfg)
        payload = {"w": (lv.w_words, cfg.fmt_w), "b": (lv.b, bias_format(cfg)), "x": (lv.x, cfg.fmt_x),
                   "y": (lv.y, cfg.fmt_y), "acc": (lv.acc, cfg.fmt_acc)}
        files = {}
        for key, (raw, fmt) in payload.items():
            files[key] = {"mem": f"{n}.{key}.mem", "words": int(raw.size), "width": fmt.width,
                          "digits": word_digits(fmt.width), "format": str(fmt)}
            written.append(write_text_atomic(out / files[key]["mem"], mem_text(raw, fmt)))
        for key, what in (("w", "weights"), ("b", "bias")):
            raw, fmt = payload[key]
            files[key]["coe"] = f"{n}.{key}.coe"
            note = f"fxpsim {n} {what}, {fmt} ({fmt.width} bits), {provenance}"
            written.append(write_text_atomic(out / files[key]["coe"], coe_text(raw, fmt, note)))
        files["header"], files["stats"] = f"{n}.h", f"{n}.stats.csv"
        written.append(write_text_atomic(out / files["header"], header_text(lv, knobs, provenance)))
        written.append(write_text_atomic(out / files["stats"], to_csv(lv.stats_table())))
        entries.append(_layer_entry(lv, knobs, files))
    rtl = []
    for src in rtl_sources() + [RTL_DIR / "README.md"]:
        rtl.append(f"rtl/{src.name}")
        written.append(write_text_atomic(out / "rtl" / src.name, src.read_text(encoding="utf-8")))
    manifest = {"format": VECTORS_FORMAT, "version": VECTORS_VERSION, "fxpsim_version": __version__,
                "model": {"file": model_file.name, "sha256": sha, "architecture": model.network.spec()},
                "inputs": {"images": len(layers[0].x), "dataset": dataset, "split": "test",
                           "selection": f"the first {len(layers[0].x)} images", "seed": seed},
                "words": "one per line, lower-case hex, ceil(width / 4) digits: the width-bit two's complement "
                         "(unsigned formats: the value), pad bits above width zero",
                "rtl": rtl, "layers": entries}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    written.append(write_text_atomic(out / "manifest.json", text))
    return written


def read_manifest(path) -> dict:
    """The manifest of an export directory (or ``path`` itself, a manifest.json), checked to be one."""
    path = Path(path)
    path = path / "manifest.json" if path.is_dir() else path
    check(path.is_file(), f"{path} is not a file: give the directory fxpsim export --vectors wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FxpsimError(f"{path} is not JSON ({exc}): give the manifest fxpsim export wrote") from None
    check(isinstance(data, dict) and data.get("format") == VECTORS_FORMAT,
          f"{path} is not an fxpsim vectors manifest (no \"format\": \"{VECTORS_FORMAT}\")")
    check(data.get("version") == VECTORS_VERSION,
          f"{path} has vectors version {data.get('version')!r}; this fxpsim reads version {VECTORS_VERSION}")
    return data
