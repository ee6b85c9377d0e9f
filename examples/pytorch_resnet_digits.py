"""A residual CNN trained in PyTorch on digits, exported to ONNX for fxpsim (README, "Bring your own
model"; issue 15, item 6).

Needs torch (``pip install -e ".[examples]"``: torch 2.13.0's CPU build); the test suite reads only
the committed ``examples/digits-resnet-torch.onnx``. The images and split are fxpsim's own
(``fxpsim.train.data.load_dataset("digits")``: scikit-learn's 8x8 digits, pixels 0..16, the same
seeded 75/25 split every fxpsim command uses), fed as raw pixels so the ONNX model needs no
``--input-scale``. The network (He et al., CVPR 2016, one basic block)::

    conv 1->16 3x3 pad 1, BN, ReLU
    [conv 16->16 3x3 pad 1, BN, ReLU, conv 16->16 3x3 pad 1, BN] + identity, ReLU
    maxpool 2, flatten, fc 256->10

Adam (lr 3e-3), 12 epochs of batch 64, seed 0, one thread (14 s on an AMD EPYC core, export included;
98.67 % float on the test split; the file is the same byte for byte on a rerun there). Exported in eval mode
(BatchNorm folded by the exporter or by fxpsim's import) with ``torch.onnx.export(...,
opset_version=17, dynamo=False)`` and a symbolic batch axis, then::

    fxpsim search examples/digits-resnet-torch.onnx --acc-bits 16
    fxpsim eval examples/digits-resnet-torch.onnx --config reports/digits-resnet-torch_acc16_act-w_wrap_config.json

    python examples/pytorch_resnet_digits.py [--out examples/digits-resnet-torch.onnx]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fxpsim.train.data import load_dataset

OUT = Path(__file__).with_name("digits-resnet-torch.onnx")
SEED, EPOCHS, BATCH, LR = 0, 12, 64, 3e-3


def build():
    import torch
    from torch import nn

    class Block(nn.Module):
        """A basic residual block: y = relu(x + bn(conv(relu(bn(conv(x))))))."""

        def __init__(self, c: int):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                      nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(x + self.body(x))

    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), Block(16),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def train(model, x: np.ndarray, y: np.ndarray) -> None:
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    model.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(xt), generator=gen).split(BATCH):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(x.astype(np.float32))).argmax(1).numpy() == y).mean())


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"ONNX file to write (default {OUT.name})")
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    data = load_dataset("digits")
    model = build()
    train(model, data.x_train, data.y_train)
    print(f"float test accuracy (PyTorch): {accuracy(model, data.x_test, data.y_test):.4f}")
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), str(args.out), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
