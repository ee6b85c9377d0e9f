"""cocotb testbench of fxp_dense on one layer of an ``fxpsim export --vectors`` folder.

The weights and biases reach the design by $readmemh of the exported .mem files (the build's
W_FILE, B_FILE). $FXPSIM_DENSE names a JSON file with the layer's K, N, P, widths, and per image
its inputs (the exported L.x.mem), expected outputs and accumulators (L.y.mem, L.acc.mem) and
counts (L.stats.csv), which test_dense.py read with fxpsim's readers (this simulator's embedded
Python imports NumPy and pandas slowly, so it imports neither). Each image's inputs are streamed
in; every neuron's index, output and accumulator, and per image the sums of its overflow and
cast counts and the neurons with an overflow, are compared. Counts go to $FXPSIM_DENSE_RESULT.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


@cocotb.test()
async def dense_layer(dut):
    with open(os.environ["FXPSIM_DENSE"]) as fh:
        spec = json.load(fh)
    k, n, lanes = spec["K"], spec["N"], spec["P"]
    x_mask, y_signed = (1 << spec["W_X"]) - 1, bool(spec["Y_SIGNED"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.x_valid.value, dut.x_data.value = 1, 0, 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    mismatches, outputs = [], 0
    for i, image in enumerate(spec["images"]):
        for _ in range(2):  # x_ready rises the cycle after the last output
            if dut.x_ready.value != 1:
                await FallingEdge(dut.clk)
        assert dut.x_ready.value == 1, f"image {i}: x_ready still low a cycle after the last output"
        for xj in image["x"]:
            dut.x_valid.value, dut.x_data.value = 1, xj & x_mask
            await FallingEdge(dut.clk)
        dut.x_valid.value = 0
        ovf = cast = affected = 0
        for j in range(n):
            await (RisingEdge(dut.y_valid) if j % lanes == 0 else RisingEdge(dut.clk))
            await ReadOnly()
            v = dut.y.value
            got = (int(dut.y_index.value), v.to_signed() if y_signed else v.to_unsigned(),
                   dut.acc.value.to_signed())
            want = (j, image["y"][j], image["acc"][j])
            outputs += 1
            if got != want:
                mismatches.append({"image": i, "neuron": j, "got": got, "want": want})
            count = dut.ovf_count.value.to_unsigned()
            ovf, cast, affected = ovf + count, cast + dut.cast_count.value.to_unsigned(), affected + (count > 0)
        if [ovf, affected, cast] != image["counts"]:
            mismatches.append({"image": i, "got_counts": [ovf, affected, cast], "want_counts": image["counts"]})
    result = {"images": len(spec["images"]), "outputs": outputs, "macs": outputs * k,
              "mismatches": len(mismatches), "first": mismatches[:5]}
    with open(os.environ["FXPSIM_DENSE_RESULT"], "w") as fh:
        json.dump(result, fh, indent=1)
    assert not mismatches, f"{len(mismatches)} differences from the exported vectors; first: {mismatches[:3]}"
