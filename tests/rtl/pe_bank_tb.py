"""cocotb testbench of a bank of fxp_pe instances (``pe_bank``, written by test_pe.py).

Reads the stimulus and fxpsim's expected values from the JSON file named by $FXPSIM_PE_BANK:
per cycle an op (``L`` load a bias, ``M`` one MAC) shared by every instance, per instance its
operands and the expected accumulator, overflow count, cast count and output after that cycle.
Inputs change on the falling edge; outputs are read after the rising edge (ReadOnly). Every
value is compared; the counts and the first mismatches go to $FXPSIM_PE_BANK_RESULT.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


def _value(handle, signed: bool) -> int:
    v = handle.value
    return v.to_signed() if signed else v.to_unsigned()


@cocotb.test()
async def pe_bank(dut):
    with open(os.environ["FXPSIM_PE_BANK"]) as fh:
        spec = json.load(fh)
    ops, units = spec["ops"], spec["units"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    names = ("bias", "x", "w", "acc", "ovf", "cast", "y")
    ports = [{name: getattr(dut, f"{name}_{i}") for name in names} for i in range(len(units))]
    dut.rst.value, dut.load.value, dut.mac.value = 1, 0, 0
    for p in ports:
        p["bias"].value, p["x"].value, p["w"].value = 0, 0, 0
    await RisingEdge(dut.clk)
    first, differing, compared = [], 0, {}
    for t, op in enumerate(ops):
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        dut.load.value, dut.mac.value = int(op == "L"), int(op == "M")
        for p, u in zip(ports, units):
            if op == "L":
                p["bias"].value = u["bias"][t] & ((1 << u["W_B"]) - 1)
            else:
                p["x"].value = u["x"][t] & ((1 << u["W_X"]) - 1)
                p["w"].value = u["w"][t] & ((1 << u["W_W"]) - 1)
        await RisingEdge(dut.clk)
        await ReadOnly()
        for i, (p, u) in enumerate(zip(ports, units)):
            got = (_value(p["acc"], True), _value(p["ovf"], False), _value(p["cast"], False),
                   _value(p["y"], bool(u["Y_SIGNED"])))
            want = (u["acc"][t], u["ovf"][t], u["cast"][t], u["y"][t])
            if op == "M":
                compared[u["mode"]] = compared.get(u["mode"], 0) + 1
            if got != want:
                differing += 1
                if len(first) < 20:
                    first.append({"cycle": t, "unit": i, "op": op, "got": got, "want": want})
    with open(os.environ["FXPSIM_PE_BANK_RESULT"], "w") as fh:
        json.dump({"compared_macs": compared, "mismatches": differing, "first": first}, fh, indent=1)
    assert not differing, f"{differing} values differ from fxpsim's reference; first: {first[:3]}"
