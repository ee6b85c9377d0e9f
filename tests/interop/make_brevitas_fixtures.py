"""Regenerate the Brevitas fixtures in ``tests/interop/fixtures/`` (issue 15, item 5).

Needs ``pip install torch==2.13.0 brevitas qonnx onnxoptimizer`` (the ``brevitas`` extra); the
tests read only the committed files. Two tiny QAT networks, trained a few seeded epochs on the
digits training split (pixels / 16), power-of-two scales (Brevitas' ``*FixedPoint`` quantizers),
``Int32Bias``:

- ``brevitas_mlp``: UQ input, fc1 64->16 weights 8-bit narrow (``Int8WeightPerTensorFixedPoint``),
  ReLU 6-bit unsigned, fc2 16->10 weights 8-bit not narrow, 8-bit signed output;
- ``brevitas_cnn``: UQ input, conv 1->4 3x3 (pad 1) weights 8-bit not narrow, ReLU 8-bit unsigned,
  MaxPool 2, flatten, fc 64->10 weights 6-bit narrow, 8-bit signed output.

Each is written twice, ``NAME_qonnx.onnx`` (``export_qonnx``) and ``NAME_qcdq.onnx``
(``export_onnx_qcdq``), with ``NAME_in.npy`` (the first 100 digits test images as the model
reads them, float32) and ``NAME_out.npy`` (Brevitas' own outputs on them, float32). No pickle.

    python tests/interop/make_brevitas_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("fixtures")
SEED = 0
N_TEST = 100


def _build(name: str):
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias
    from brevitas.quant import Uint8ActPerTensorFixedPoint

    class WideW(Int8WeightPerTensorFixedPoint):
        narrow_range = False

    class Narrow6W(Int8WeightPerTensorFixedPoint):
        bit_width = 6

    def act(bits=8, signed=False):  # the signed one is the output: a plain tensor (one ONNX output)
        return dict(act_quant=Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint,
                    bit_width=bits, return_quant_tensor=not signed)

    if name == "brevitas_mlp":
        return torch.nn.Sequential(
            qnn.QuantIdentity(**act()),
            qnn.QuantLinear(64, 16, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias,
                            return_quant_tensor=True),
            qnn.QuantReLU(**act(6)),
            qnn.QuantLinear(16, 10, bias=True, weight_quant=WideW, bias_quant=Int32Bias, return_quant_tensor=True),
            qnn.QuantIdentity(**act(8, signed=True)))
    return torch.nn.Sequential(
        qnn.QuantIdentity(**act()),
        qnn.QuantConv2d(1, 4, 3, padding=1, bias=True, weight_quant=WideW, bias_quant=Int32Bias,
                        return_quant_tensor=True),
        qnn.QuantReLU(**act(8)),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        qnn.QuantLinear(64, 10, bias=True, weight_quant=Narrow6W, bias_quant=Int32Bias, return_quant_tensor=True),
        qnn.QuantIdentity(**act(8, signed=True)))


def make(name: str) -> None:
    import torch
    from brevitas.export import export_onnx_qcdq, export_qonnx

    from fxpsim.train.data import load_dataset

    torch.manual_seed(SEED)
    data = load_dataset("digits")
    shape = (-1, 64) if name == "brevitas_mlp" else (-1, 1, 8, 8)
    x = torch.tensor((data.x_train / 16.0).reshape(shape), dtype=torch.float32)
    y = torch.tensor(data.y_train, dtype=torch.long)
    model = _build(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(8):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            out = model(x[idx])
            loss = torch.nn.functional.cross_entropy(getattr(out, "value", out), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    xt = torch.tensor((data.x_test[:N_TEST] / 16.0).reshape(shape), dtype=torch.float32)
    with torch.no_grad():
        out = model(xt)
        out = getattr(out, "value", out).numpy().astype(np.float32)
    OUT.mkdir(exist_ok=True)
    export_qonnx(model, xt[:1], export_path=str(OUT / f"{name}_qonnx.onnx"), dynamo=False)
    export_onnx_qcdq(model, xt[:1], export_path=str(OUT / f"{name}_qcdq.onnx"), opset_version=13, dynamo=False)
    np.save(OUT / f"{name}_in.npy", xt.numpy().astype(np.float32), allow_pickle=False)
    np.save(OUT / f"{name}_out.npy", out, allow_pickle=False)
    acc = float((out.argmax(1) == data.y_test[:N_TEST]).mean())
    print(f"{name}: Brevitas test accuracy {acc:.2f} on {N_TEST} images")


if __name__ == "__main__":
    for fixture in ("brevitas_mlp", "brevitas_cnn"):
        make(fixture)
