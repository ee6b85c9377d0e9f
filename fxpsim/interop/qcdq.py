"""QCDQ (QuantizeLinear / Clip / DequantizeLinear) as QONNX ``Quant`` nodes (issue 15, item 3).

Brevitas' ``export_onnx_qcdq`` writes each quantizer as standard ONNX ops:

- data: ``QuantizeLinear(x, s, zp)`` [``Clip(q, lo, hi)``] ``DequantizeLinear(q, s, zp)``;
- weights and biases: an integer initializer [``Clip``] ``DequantizeLinear`` (or the same
  three nodes on a float constant).

QuantizeLinear rounds half to even and saturates to its integer type (int8, uint8, int16,
uint16, int32); the Clip narrows that to ``W`` bits, or to the symmetric range; clamping an
integer after rounding equals clamping before it. So the group is QONNX's
``Quant(x, s, 0, W; signed, narrow, ROUND)`` (:mod:`fxpsim.interop.qonnx`) with:

=============================  ================================================
integer type / Clip bounds     Quant
=============================  ================================================
int8 (no Clip)                 W = 8, signed
uint8 (no Clip)                W = 8, unsigned
Clip(-2**(W-1), 2**(W-1)-1)    W, signed
Clip(-(2**(W-1)-1), ...)       W, signed, narrow (Brevitas' narrow_range)
Clip(0, 2**W - 1)              W, unsigned
Clip(0, 2**W - 2)              W, unsigned, narrow
=============================  ================================================

:func:`qcdq_to_quant` rewrites a model that way before :func:`fxpsim.interop.onnx_graph.read_graph`
reads it, so a QCDQ file imports to the same model and config as its QONNX twin. Refused,
one line naming the node: a scale that is not one power of two, a zero point that is not 0
(:func:`~fxpsim.interop.qonnx.quant_spec`), Q and DQ scales that differ, Clip bounds that are
no such range, an integer tensor feeding anything but Clip/DequantizeLinear (QLinear*/Integer ops).
"""

from __future__ import annotations

import numpy as np

from ..errors import check
from .qonnx import quant_spec

__all__ = ["QCDQ_OPS", "INT_TYPES", "clip_width", "qcdq_to_quant"]

QCDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INT_TYPES = {np.dtype(np.int8): (8, True), np.dtype(np.uint8): (8, False), np.dtype(np.int16): (16, True),
             np.dtype(np.uint16): (16, False), np.dtype(np.int32): (32, True)}
"""Integer types of QuantizeLinear/DequantizeLinear -> (bits, signed)."""
QUANT_DOMAIN = "qonnx.custom_op.general"


def clip_width(label: str, lo: int, hi: int, bits: int, signed: bool) -> tuple[int, bool]:
    """``(W, narrow)`` of integer Clip bounds inside a ``bits``-bit type (see the module table)."""
    lo, hi = int(lo), int(hi)
    if signed:
        w = hi.bit_length() + 1
        ok, narrow = hi >= 0 and hi == (1 << (w - 1)) - 1 and lo in (-hi - 1, -hi), lo == -hi
    else:
        pow2 = [k for k in (1, 2) if hi + k > 1 and (hi + k) & (hi + k - 1) == 0]
        w = (hi + pow2[0]).bit_length() - 1 if pow2 else 0
        ok, narrow = lo == 0 and bool(pow2) and (pow2[0] == 1 or w >= 2), bool(pow2) and pow2[0] == 2
    check(ok and 1 <= w <= bits,
          f"{label}: Clip({lo}, {hi}) on {'signed' if signed else 'unsigned'} integers is not a {bits}-bit-or-narrower "
          "range (-2**(W-1) or -(2**(W-1)-1) .. 2**(W-1)-1, or 0 .. 2**W-1 or 2**W-2): not a Q-format; "
          "export with a bit width, not arbitrary bounds")
    return w, narrow


def _label(node, index: int) -> str:
    return f"node {node.name or f'#{index}'} ({node.op_type})"


def qcdq_to_quant(model) -> tuple[object, bool]:
    """``model`` with each QCDQ group replaced by one QONNX Quant node (in place), and whether
    there was any; a file without QuantizeLinear/DequantizeLinear is returned unchanged."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    if not any(n.op_type in QCDQ_OPS and n.domain in ("", "ai.onnx") for n in g.node):
        return model, False
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: (i, n) for i, n in enumerate(g.node) for o in n.output}
    readers: dict[str, list] = {}
    for i, n in enumerate(g.node):
        for name in n.input:
            readers.setdefault(name, []).append((i, n))
    drop, new_nodes, new_inits = set(), {}, []

    def const(label, name, what):
        check(name in consts, f"{label}: its {what} {name!r} is not a constant: fxpsim reads QCDQ with constant "
                              "scales, zero points and clip bounds")
        return consts[name]

    def only_reader(label, name, want):
        got = readers.get(name, [])
        check(len(got) == 1 and got[0][1].op_type in want,
              f"{label}: its integer output feeds {', '.join(_label(n, i) for i, n in got) or 'nothing'}, not one "
              f"{' or '.join(want)}: fxpsim imports QCDQ (QuantizeLinear [Clip] DequantizeLinear) around float "
              "ops; integer ops (QLinear*, *Integer) are not imported")
        return got[0]

    for di, d in enumerate(g.node):
        if d.op_type != "DequantizeLinear":
            continue
        dl = _label(d, di)
        check(len(d.input) >= 3 and d.input[2], f"{dl}: no zero point input: fxpsim needs the integer type "
                                                 "(give x_zero_point = 0 of type int8/uint8/int32)")
        scale, zp = const(dl, d.input[1], "scale"), const(dl, d.input[2], "zero point")
        check(zp.dtype in INT_TYPES, f"{dl}: zero point of type {zp.dtype}: fxpsim reads int8, uint8, int16, "
                                     "uint16 and int32 QCDQ")
        bits, signed = INT_TYPES[zp.dtype]
        narrow, src, names = False, d.input[0], [d]
        clip = producer.get(src)
        if clip is not None and clip[1].op_type == "Clip":
            ci, c = clip
            cl = _label(c, ci)
            only_reader(cl, c.output[0], ("DequantizeLinear",))
            lo, hi = (int(const(cl, c.input[j], b).reshape(-1)[0]) for j, b in ((1, "min"), (2, "max")))
            bits, narrow = clip_width(cl, lo, hi, bits, signed)
            src, names = c.input[0], [c, d]
        q = producer.get(src)
        if q is not None and q[1].op_type == "QuantizeLinear":
            qi, qn = q
            ql = _label(qn, qi)
            only_reader(ql, qn.output[0], ("Clip", "DequantizeLinear"))
            q_scale = const(ql, qn.input[1], "scale")
            check(np.array_equal(np.asarray(q_scale, np.float64).reshape(-1), np.asarray(scale, np.float64).reshape(-1)),
                  f"{ql}: scale {np.asarray(q_scale).reshape(-1)[0]:.4g} differs from its {dl}'s "
                  f"{np.asarray(scale).reshape(-1)[0]:.4g}: a requantizing Q/DQ pair is not one Q-format")
            q_zp = const(ql, qn.input[2], "zero point") if len(qn.input) > 2 and qn.input[2] else np.uint8(0)
            quant_spec(ql, q_scale, q_zp, bits, int(signed), int(narrow))  # its one-line refusals, naming Q
            x, label, names = qn.input[0], qn.name or f"qcdq{di}", [qn, *names]
        else:
            check(src in consts and np.asarray(consts[src]).dtype.kind in "iu",
                  f"{dl}: its input {src!r} is neither a QuantizeLinear nor an integer constant: fxpsim imports "
                  "QCDQ (QuantizeLinear [Clip] DequantizeLinear, or integer weights [Clip] DequantizeLinear)")
            quant_spec(dl, scale, zp, bits, int(signed), int(narrow))
            x, label = f"{src}__float", d.name or f"qcdq{di}"
            values = consts[src].astype(np.float64) * np.asarray(scale, np.float64).reshape(
                (-1,) + (1,) * (consts[src].ndim - 1) if np.size(scale) > 1 else ())
            new_inits.append(numpy_helper.from_array(values.astype(np.float32), x))
        s_name, z_name, b_name = f"{label}__scale", f"{label}__zeropt", f"{label}__bitwidth"
        s = float(np.asarray(scale, np.float64).reshape(-1)[0])
        new_inits += [numpy_helper.from_array(np.array(s, np.float32), s_name),
                      numpy_helper.from_array(np.array(0.0, np.float32), z_name),
                      numpy_helper.from_array(np.array(float(bits), np.float32), b_name)]
        drop.update(id(n) for n in names)
        new_nodes[id(d)] = helper.make_node("Quant", [x, s_name, z_name, b_name], [d.output[0]], name=label,
                                            domain=QUANT_DOMAIN, signed=int(signed), narrow=int(narrow),
                                            rounding_mode="ROUND")
    for qi, qn in enumerate(g.node):
        check(qn.op_type != "QuantizeLinear" or id(qn) in drop,
              f"{_label(qn, qi)}: no DequantizeLinear after it: fxpsim imports QCDQ (QuantizeLinear [Clip] "
              "DequantizeLinear) around float ops; integer ops (QLinear*, *Integer) are not imported")
    kept = [new_nodes.get(id(n), n) for n in g.node if id(n) not in drop or id(n) in new_nodes]
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    if not any(o.domain == QUANT_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(QUANT_DOMAIN, 1))
    return model, True
