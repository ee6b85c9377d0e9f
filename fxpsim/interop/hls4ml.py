"""hls4ml export: a network's datapath config as hls4ml's per-layer config (issue 16, item 3).

``fxpsim export MODEL --config CFG --hls4ml OUT.json`` writes the dict that hls4ml's
converters take as ``hls_config`` (``Model``, ``LayerName``, ``InputShape``), so that hls4ml's C
simulation of the same network computes what fxpsim computes, bit for bit. What hls4ml 1.3
does with a Dense or Conv2D layer (Vivado/Vitis backends, ``io_parallel``: templates
``nnet_dense_latency.h``, ``nnet_dense_resource.h``, ``nnet_conv2d_latency.h``,
``nnet_conv2d_resource.h``, ``nnet_pooling.h``) and the fxpsim knob each step is (DESIGN.md,
docs/APFIXED.md):

=====================================  ===========================================================
hls4ml                                 fxpsim
=====================================  ===========================================================
``acc = (accum_t) bias``               the bias converted into the accumulator format (equal when
                                       ``fmt_bias`` lies inside it: the cast is then exact)
``mult = (accum_t)(x * w)``            ``product="cast"``: FL_acc = accum_t's fraction bits
                                       (``frac_acc``), ``product_rounding`` = its ap_q_mode,
                                       ``overflow`` = its ap_o_mode
``acc += mult``, Latency               ``order="sequential"``, k = 0..K-1
``acc += mult``, Resource, RF          ``order="strided:RF"``: k = r, r+RF, ... for r = 0..RF-1
a conv, and a Dense after a           ``order="channels-last:C"`` (Resource:
flattened conv: k over (row, column,   ``channels-last:C+strided:RF``), C the input channels
channel), channels-last                (:func:`hls4ml_channels`; sequential equals it only with
                                       one channel or one position)
``res = (result_t) acc``               requantization: ``rounding``, ``output_overflow``
ReLU, MaxPool2d, Flatten               exact on integers; their types are fmt_y
the next layer reads result_t          its ``fmt_x`` must hold every value of the previous fmt_y
input_t ``= (double) x``               the first layer's quantize (``rounding``, clip)
=====================================  ===========================================================

Precision strings are ``ap_fixed<W,I,Q,O>`` (``ap_ufixed`` unsigned) with :func:`ap_modes`'s
table; weight and bias types carry the layer's rounding and AP_SAT, as fxpsim quantizes them.
hls4ml writes float weights as decimals of F digits (F = the type's fraction bits) and casts
them: exact for values already on the grid, which :func:`hls4ml_weights` gives (fxpsim's
quantized weights, BatchNorm folded as the simulator folds it). Build the hls4ml network from
those, and feed it float64 inputs (``predict`` casts a double into input_t exactly as
:func:`fxpsim.qformat.quantize` rounds it).

Layer names (what the hls4ml network's layers must be called; hls4ml's PyTorch front end names
them after the module attributes): the input ``x`` (:data:`INPUT_NAME`), each compute layer by
its fxpsim stage name (``conv1``, ``fc1``: :func:`fxpsim.simulate.build_stages`), the ReLU fused
into it ``<stage>_relu``, each later op ``<stage>_<kind>`` (``conv2_maxpool2d``,
``conv2_flatten``; a repeated kind gets ``_2``, ``_3``).

Refused, one line naming the layer and the knob: engines other than dense, ``a2q``, stochastic
rounding, ``overflow="ideal"``, ``order="tree"`` (hls4ml has no adder-tree dense), a
ReuseFactor hls4ml would replace (:func:`valid_reuse_factors`), a saturating layer that hls4ml adds
in its channels-last order without ``order="channels-last:C"`` (:func:`order_differs`: a conv with
several channels, a Dense after a flattened conv; the message names the knob), ``product="exact"`` where a cast could change a product, a bias format the
accumulator cannot hold, an input format that cannot hold the previous output, tanh/sigmoid
(hls4ml's own tables) and average pooling (hls4ml's accum_t division). A saturating
accumulator is order-free, and accepted whatever the order, when no sum of the layer's products
and bias can leave it (:func:`saturation_free_acc_bits`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import LayerConfig, NetworkConfig, weights_sha256
from ..datapath.core import max_abs_raw, max_abs_term
from ..errors import check
from ..qformat import Overflow, QFormat, Rounding, dequantize
from ..tables import write_text_atomic
from ..simulate import Simulator
from .vectors import AP_OVERFLOW, AP_QUANTIZATION

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "INPUT_NAME", "ap_modes", "check_hls4ml_model", "hls4ml_config",
           "hls4ml_json", "hls4ml_weights", "layer_names", "order_differs", "precision",
           "saturation_free_acc_bits", "saturation_free_bits", "strategy", "valid_reuse_factors",
           "write_hls4ml_config"]

EXPORT_FORMAT = "fxpsim-hls4ml"
EXPORT_VERSION = 1
INPUT_NAME = "x"
"""The hls4ml input layer's name (PyTorch: the ``forward`` argument's name)."""
DEFAULT_PRECISION = "ap_fixed<16,6>"
"""hls4ml's model-wide default; every layer of an exported network has its own types."""
POST_KINDS = ("relu", "maxpool2d", "flatten")
"""The integer ops after a kernel that hls4ml computes exactly as fxpsim does."""


def ap_modes(rounding: Rounding, overflow: Overflow, where: str = "") -> tuple[str, str]:
    """``(ap_q_mode, ap_o_mode)`` of an fxpsim rounding and overflow mode (docs/APFIXED.md; the
    table is :data:`fxpsim.interop.vectors.AP_QUANTIZATION` / ``AP_OVERFLOW``). Stochastic
    rounding and the ideal accumulator have none: a one-line error."""
    at = f"{where}: " if where else ""
    check(rounding in AP_QUANTIZATION,
          f"{at}rounding={Rounding(rounding).value!r} has no ap_q_mode (ap_fixed rounds by a fixed rule): "
          f"use one of {', '.join(r.value for r in AP_QUANTIZATION)}")
    check(overflow in AP_OVERFLOW,
          f"{at}overflow={Overflow(overflow).value!r} has no ap_o_mode (no ap_fixed register is unbounded): "
          f"use wrap (AP_WRAP) or clip (AP_SAT) with enough bits")
    return AP_QUANTIZATION[rounding], AP_OVERFLOW[overflow]


def precision(fmt: QFormat, rounding: Rounding, overflow: Overflow, where: str = "") -> str:
    """hls4ml's precision string of ``fmt``: ``ap_fixed<W,I,Q,O>`` (I counts the sign bit, as in
    fxpsim's ``QI.F``; ``ap_ufixed`` when unsigned). No spaces: hls4ml splits it on commas. A
    narrow (symmetric) signed format saturates with ``AP_SAT_SYM``; an unsigned one has none."""
    q, o = ap_modes(rounding, overflow, where)
    if fmt.narrow:
        at = f"{where}: " if where else ""
        check(fmt.signed and overflow is Overflow.CLIP,
              f"{at}the narrow format {fmt} has no ap_fixed type ({'unsigned: AP_SAT_SYM keeps 2**W - 1' if not fmt.signed else 'it only saturates'}): "
              "use a format without narrow")
        o = "AP_SAT_SYM"
    return f"{'ap_fixed' if fmt.signed else 'ap_ufixed'}<{fmt.width},{fmt.int_bits},{q},{o}>"


def valid_reuse_factors(n_in: int, n_out: int, conv: bool = False) -> list[int]:
    """The ReuseFactors hls4ml's Resource strategy keeps for a layer of ``n_in`` inputs per output
    (conv: C kh kw) and ``n_out`` outputs (conv: filters); it replaces any other by the closest
    (``FPGABackend._validate_reuse_factor``): the divisors of n_in, and n_in * j for j dividing
    n_out (dense only: ``conv_2d_resource_cl`` asserts RF <= n_in). Per output, each adds the
    products in fxpsim's ``strided:RF`` order (RF >= n_in: sequential)."""
    rfs = {d for d in range(1, n_in + 1) if n_in % d == 0}
    if not conv:
        rfs |= {n_in * j for j in range(1, n_out + 1) if n_out % j == 0}
    return sorted(rfs)


def layer_names(stage) -> list[tuple[str, str]]:
    """``(hls4ml layer name, kind)`` of a stage's layers: the compute layer, its fused ReLU, its
    post ops (module docstring)."""
    kinds = [stage.kind] + (["relu"] if stage.relu else []) + [op for op, _ in stage.post]
    out, seen = [(stage.name, stage.kind)], {}
    for kind in kinds[1:]:
        seen[kind] = seen.get(kind, 0) + 1
        out.append((f"{stage.name}_{kind}" + (f"_{seen[kind]}" if seen[kind] > 1 else ""), kind))
    return out


def _channel_terms(stage, cfg: LayerConfig, w: np.ndarray) -> np.ndarray:
    """Per output channel, sum over k of the largest |product at FL_acc| the inputs of ``fmt_x`` can
    give with raw weights ``w`` (Python ints: exact)."""
    wk = np.abs(w.reshape(w.shape[0], -1) if stage.kind == "conv2d" else w.T).astype(object)
    x = max_abs_raw(cfg.fmt_x)
    d = cfg.product_shift
    return np.array([sum(max_abs_term(int(v) * x, d) for v in row) for row in wk], dtype=object)


def saturation_free_bits(stage, cfg: LayerConfig, w: np.ndarray, b: np.ndarray) -> int:
    """Fewest BW_acc bits in which no sum of the layer's bias and products, in any order and any
    grouping, can leave the accumulator: 1 + bits of max over channels of |bias| + sum of the
    largest |products| (inputs anywhere in ``fmt_x``, raw weights ``w``, raw bias ``b`` at
    FL_acc). Then clip = wrap = ideal, whatever the order."""
    bound = max((abs(int(bc)) + t for bc, t in zip(b.tolist(), _channel_terms(stage, cfg, w))), default=0)
    return int(bound).bit_length() + 1


def hls4ml_channels(stage, prev=None) -> int | None:
    """C of the ``channels-last:C`` order in which hls4ml adds this layer's products, or None when
    it adds them as fxpsim's sequential order does. hls4ml's tensors are channels-last: a conv adds
    over (kernel row, kernel column, channel), and a Dense after a flattened conv output over (row,
    column, channel) (its ``RemoveTransposeBeforeFlatten`` pass permutes the Dense's weights instead
    of transposing the data). The orders agree with one channel or one position. ``prev``: the
    stage before ``stage``."""
    if stage.kind == "conv2d":
        c, kh, kw = stage.W.shape[1:]
        return c if c > 1 and kh * kw > 1 else None
    if prev is not None and prev.kind == "conv2d" and any(op == "flatten" for op, _ in prev.post):
        c = prev.out_channels
        return c if c > 1 and stage.fan_in // c > 1 else None
    return None


def order_differs(stage, prev=None, cfg: LayerConfig | None = None) -> str | None:
    """Why hls4ml adds this layer's products in another order than fxpsim under ``cfg`` (None:
    sequential), or None: hls4ml's order is ``channels-last:C`` (:func:`hls4ml_channels`), and
    ``cfg.order`` must say so (``channels-last:C`` for Latency, ``channels-last:C+strided:RF`` for
    Resource) or be one that equals it."""
    c = hls4ml_channels(stage, prev)
    named = cfg.channels_last if cfg is not None else None
    if c is None and (named is None or named == 1 or stage.fan_in // named <= 1):
        return None  # no permutation on either side
    if c is not None and named == c:
        return None
    what = ("a conv's products in (kernel row, kernel column, channel) order" if stage.kind == "conv2d" else
            f"the flattened {prev.name} outputs in (row, column, channel) order")
    if c is None:
        return (f"order={cfg.order}, but hls4ml adds this {stage.kind}'s inputs in sequence (no channels-last "
                "permutation): use order sequential or strided:RF")
    return (f"hls4ml's tensors are channels-last, so it adds {what}, fxpsim's order={cfg.order if cfg else 'sequential'} "
            f"does not: set order=channels-last:{c} (Resource: channels-last:{c}+strided:RF)")


def saturation_free_acc_bits(sim, i: int, cfg: LayerConfig) -> int:
    """The fewest BW_acc from ``cfg.acc_bits`` up at which stage ``i`` of ``sim`` (a
    :class:`~fxpsim.simulate.Simulator`) is saturation-free (:func:`saturation_free_bits`, the bias
    quantized at that width: a wider accumulator may hold more of it)."""
    bits = cfg.acc_bits
    while True:
        at = replace(cfg, acc_bits=bits)
        need = saturation_free_bits(sim.stages[i], at, *sim.quantized_params(i, at))
        if need <= bits:
            return bits
        bits = need


def strategy(sim, i: int, cfg: LayerConfig) -> tuple[str, int]:
    """``(Strategy, ReuseFactor)`` of stage ``i`` of ``sim`` under ``cfg``: Latency, 1 for
    ``sequential``; Resource, RF for ``strided:RF``. Refuses ``tree``, a ReuseFactor hls4ml would
    replace, and a saturating layer whose order differs from hls4ml's (:func:`order_differs`)
    unless no sum can saturate (:func:`saturation_free_acc_bits`)."""
    stage, where = sim.stages[i], f"layer {cfg.name}"
    check(cfg.order != "tree", f"{where}: order='tree': hls4ml's dense and conv kernels add in sequence "
                               "(Latency: k = 0..K-1, Resource: strided by ReuseFactor) and have no adder "
                               "tree: use order sequential or strided:RF")
    rf = cfg.reuse_factor
    resource = "strided" in cfg.order
    if resource:
        valid = valid_reuse_factors(stage.fan_in, stage.out_channels, stage.kind == "conv2d")
        check(rf in valid, f"{where}: order={cfg.order}: hls4ml's Resource strategy takes ReuseFactor "
                           f"{', '.join(map(str, valid))} for this {stage.kind} (n_in={stage.fan_in}, "
                           f"n_out={stage.out_channels}) and would replace {rf} by the closest: choose one "
                           "of them")
    why = order_differs(stage, sim.stages[i - 1] if i else None, cfg)
    if why and cfg.overflow is Overflow.CLIP:
        need = saturation_free_acc_bits(sim, i, cfg)
        check(need <= cfg.acc_bits, f"{where}: overflow='clip': {why}; saturating sums depend on the order "
                                    f"(or use overflow=wrap, or acc_bits >= {need} so that no sum can saturate)")
    return ("Resource", rf) if resource else ("Latency", 1)


def _check_layer(stage, cfg: LayerConfig, w: np.ndarray) -> None:
    """The knobs hls4ml has no form for (module docstring), one line each."""
    where = f"layer {cfg.name}"
    check(cfg.engine == "dense", f"{where}: engine={cfg.engine!r}: hls4ml runs {stage.kind} layers on its own "
                                 "dense/conv kernels: export the config with engine dense")
    check(not cfg.a2q, f"{where}: a2q=true: hls4ml quantizes float weights to weight_t without A2Q's L1 "
                       "shrink: export with a2q false, or save the A2Q weights as the model first")
    ap_modes(cfg.rounding, cfg.output_overflow, where)
    ap_modes(cfg.product_rounding, cfg.overflow, where)
    for op, _ in stage.post:
        check(op in POST_KINDS,
              f"{where}: {op} after the kernel: hls4ml computes it its own way (tanh/sigmoid by its look-up "
              f"tables, average pooling by an accum_t division), not as fxpsim does: only "
              f"{', '.join(POST_KINDS)} export exactly")
    if cfg.product == "exact":
        worst = max_abs_term(int(np.abs(w).max(initial=0)) * max_abs_raw(cfg.fmt_x), cfg.product_shift)
        check(worst <= cfg.acc_max,
              f"{where}: product='exact' keeps each product's range, but hls4ml casts it into accum_t, where "
              f"products up to {worst} (> {cfg.acc_max}) wrap or saturate: use product='cast' (hls4ml's "
              f"datapath), or acc_bits >= {worst.bit_length() + 1}")
    bias, acc = cfg.fmt_bias, cfg.fmt_acc
    inside = (bias.frac_bits <= acc.frac_bits and bias.min_value >= acc.min_value
              and bias.max_value <= acc.max_value)
    check(inside, f"{where}: fmt_bias={bias}: hls4ml casts bias_t into accum_t {acc} with accum_t's rounding "
                  f"and overflow, fxpsim converts it with the layer's rounding and saturates: give a bias "
                  f"format inside {acc} (at most {acc.frac_bits} fraction bits, the same range or less)")


def _check_input(prev_stage, prev: LayerConfig, cfg: LayerConfig) -> None:
    """hls4ml feeds a layer its predecessor's result_t as it is; fxpsim converts fmt_y into fmt_x
    (rounding, saturating). Equal when fmt_x holds every value the previous stage outputs."""
    y, x = prev.fmt_y, cfg.fmt_x
    relu = prev_stage.relu or any(op == "relu" for op, _ in prev_stage.post)
    lo = max(y.min_value, 0.0) if relu else y.min_value
    holds = x.frac_bits >= y.frac_bits and x.min_value <= lo and y.max_value <= x.max_value
    check(holds, f"layer {cfg.name}: fmt_x={x} cannot hold every output of {prev.name} ({y}): fxpsim converts "
                 f"them (rounding, saturating), hls4ml feeds {prev.name}'s result_t as it is: set fmt_x to "
                 f"{y} or a format containing it")


def hls4ml_config(model, config: NetworkConfig, model_file=None) -> dict:
    """hls4ml's ``hls_config`` for ``model`` (a :class:`~fxpsim.modelfile.Model` or network) under
    ``config``: ``Model`` (defaults; Latency), ``LayerName`` (per layer ``Precision`` weight, bias,
    accum, result, ``ReuseFactor``, ``Strategy``; ReLU/pooling/flatten ``Precision``), ``InputShape``
    (per image, NCHW as fxpsim's; give it to hls4ml as a tuple), and an ``fxpsim`` entry (the
    weights' sha256, the model file's name, the layer names in order) that hls4ml ignores.
    Refuses what hls4ml cannot compute as fxpsim does (module docstring)."""
    sim = Simulator(model)
    sim.require_chain("export --hls4ml")
    sim.check_config(config)
    first = config[0]
    names = {INPUT_NAME: {"Precision": {"result": precision(first.fmt_x, first.rounding, Overflow.CLIP)},
                          "Trace": False}}
    order = [INPUT_NAME]
    for i, (stage, cfg) in enumerate(zip(sim.stages, config)):
        w, _ = sim.quantized_params(i, cfg)
        _check_layer(stage, cfg, w)
        if i:
            _check_input(sim.stages[i - 1], config[i - 1], cfg)
        name_strategy, rf = strategy(sim, i, cfg)
        where = f"layer {cfg.name}"
        y = precision(cfg.fmt_y, cfg.rounding, cfg.output_overflow, where)
        for name, kind in layer_names(stage):
            if kind == stage.kind:
                entry = {"Precision": {"weight": precision(cfg.fmt_w, cfg.rounding, Overflow.CLIP, where),
                                       "bias": precision(cfg.fmt_bias, cfg.rounding, Overflow.CLIP, where),
                                       "accum": precision(cfg.fmt_acc, cfg.product_rounding, cfg.overflow, where),
                                       "result": y},
                         "ReuseFactor": rf, "Strategy": name_strategy}
            else:  # exact on fmt_y values: max pooling returns through its accum_t, so it is fmt_y too
                entry = {"Precision": {"result": y, **({"accum": y} if kind == "maxpool2d" else {})}}
            names[name] = {**entry, "Trace": False}
            order.append(name)
    network = getattr(model, "network", model)
    fxpsim = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "layers": order,
              "weights_sha256": weights_sha256(network.state_dict()),
              **({"model_file": Path(model_file).name} if model_file is not None else {})}
    return {"Model": {"Precision": {"default": DEFAULT_PRECISION}, "ReuseFactor": 1, "Strategy": "Latency",
                      "BramFactor": 1_000_000_000, "TraceOutput": False,
                      "ChannelsLastConversion": "full", "TransposeOutputs": False},
            "LayerName": names, "InputShape": list(sim.stages[0].in_shape), "fxpsim": fxpsim}


def hls4ml_json(export: dict) -> str:
    """The export as JSON text: keys sorted, two-space indent, one trailing newline (the same
    bytes for the same model and config)."""
    return json.dumps(export, indent=2, sort_keys=True) + "\n"


def write_hls4ml_config(path, model, config: NetworkConfig, model_file=None) -> Path:
    """:func:`hls4ml_config` written to ``path`` as :func:`hls4ml_json` (atomically)."""
    path = Path(path)
    check(path.name not in ("", ".", "..") and not path.is_dir(),
          f"{str(path)!r} is a folder, not a file for hls4ml's config: give a file name, e.g. hls4ml.json")
    return write_text_atomic(path, hls4ml_json(hls4ml_config(model, config, model_file)))


def hls4ml_weights(model, config: NetworkConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per compute layer, the weights and bias the hls4ml network must hold: fxpsim's quantized
    values (BatchNorm folded), dequantized to float64 (dense ``W (K, N)``, conv ``(F, C, kh, kw)``).
    The bias is in the accumulator format, as the engines add it: hold it as float64 (float32 keeps
    24 significant bits, less than a wide accumulator's)."""
    sim = Simulator(model)
    sim.require_chain("export --hls4ml")
    sim.check_config(config)
    out = {}
    for i, cfg in enumerate(config):
        w, b = sim.quantized_params(i, cfg)
        out[cfg.name] = (dequantize(w, cfg.fmt_w), dequantize(b, cfg.fmt_bias_acc))
    return out


def check_hls4ml_model(hls_model, export: dict) -> list[str]:
    """How an hls4ml ``ModelGraph`` built from ``export`` differs from it (empty: not at all): each
    exported layer's types (result, weight, bias, accum), Strategy and ReuseFactor as hls4ml holds
    them; a layer hls4ml added (a transpose, the flatten's reshape) must keep its input's type.
    hls4ml changes a ReuseFactor it does not take, and falls back to the model default for a
    layer the export does not name: this is where that shows."""
    parse = hls_model.config.backend.convert_precision_string
    names = export["LayerName"]
    out = []
    for layer in hls_model.get_layers():
        result = layer.get_output_variable().type.precision
        entry = names.get(layer.name)
        if entry is None:
            src = layer.get_input_variable().type.precision
            if result != src:
                out.append(f"{layer.name} ({layer.class_name}): result {result}, its input {src}")
            continue
        held = {"result": result}
        for var in ("weight", "bias"):
            if var in entry["Precision"]:
                held[var] = layer.get_weights(var).type.precision
        if "accum" in entry["Precision"]:
            held["accum"] = layer.get_attr("accum_t").precision
        out += [f"{layer.name}: {var} {held[var]}, exported {text}" for var, text in entry["Precision"].items()
                if held[var] != parse(text)]
        if "Strategy" in entry:
            got = (str(layer.get_attr("strategy")).lower(), layer.get_attr("reuse_factor"))
            if got != (entry["Strategy"].lower(), entry["ReuseFactor"]):
                out.append(f"{layer.name}: strategy {got}, exported {entry['Strategy']} {entry['ReuseFactor']}")
    return out
