"""``fxpsim export MODEL --config CFG --vectors N --out DIR``: files other tools read.

``--vectors N --out DIR``: golden vectors for an RTL testbench (:mod:`fxpsim.interop.vectors`):
per layer the quantized weights and biases (``.mem``, ``.coe``, a C++ header), the first N test
images' inputs, expected outputs, final accumulators and overflow counts, a manifest, and the
Verilog PE (``fxpsim/rtl``). ``--hls4ml OUT.json``: hls4ml's per-layer config (``Precision``,
``ReuseFactor``, ``Strategy``; :mod:`fxpsim.interop.hls4ml`), or a one-line refusal of a knob hls4ml
computes otherwise. ``--qonnx OUT.onnx [--qcdq]``: the model with the config as QONNX (or QCDQ)
ONNX (:mod:`fxpsim.interop.qonnx_export`), which ``fxpsim import`` reads back. Each output kind is one entry of :data:`TARGETS` (a flag, and the
function that writes it from the loaded model, data and config); the command runs every one
the command line asks for.
"""

from __future__ import annotations

from pathlib import Path

from . import arg_type
from .common import int_in, load_model_and_data, seed_type
from ..config import NetworkConfig
from ..errors import check
from ..interop.hls4ml import write_hls4ml_config
from ..interop.qonnx_export import write_qonnx
from ..interop.vectors import write_vectors


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model under a datapath config for other tools: golden vectors "
                                      "and the Verilog PE for RTL testbenches, hls4ml's per-layer config")
    p.add_argument("model", help="model file (.npz) written by `fxpsim train`")
    p.add_argument("--config", required=True,
                   help="per-layer datapath config (JSON written by `fxpsim search`)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--seed", type=seed_type(), default=0, help="seed of the simulation (the same as `fxpsim eval`)")
    g = p.add_argument_group("golden vectors (RTL testbenches)")
    g.add_argument("--vectors", type=arg_type(int_in(1, None, "--vectors", "give how many test images to "
                                                                  "export, e.g. --vectors 100")),
                   default=None, metavar="N",
                   help="export the first N images of the model's test split with each layer's expected "
                        "outputs, accumulators and overflow counts")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the vector files, the manifest and the Verilog (created if missing)")
    p.add_argument("--force", action="store_true",
                   help="export under a --config made for another model (its recorded weights or layers differ)")
    p.add_argument("--hls4ml", default=None, metavar="OUT.json",
                   help="write hls4ml's per-layer config (Precision, ReuseFactor, Strategy) that computes "
                        "what fxpsim computes (docs: fxpsim.interop.hls4ml)")
    p.add_argument("--qonnx", default=None, metavar="OUT.onnx",
                   help="write the model with the config as QONNX (Quant nodes; the config in the metadata), "
                        "which `fxpsim import` reads back (docs: fxpsim.interop.qonnx_export)")
    p.add_argument("--qcdq", action="store_true",
                   help="with --qonnx: QuantizeLinear/Clip/DequantizeLinear instead of Quant (onnxruntime runs "
                        "it; formats up to 8 bits, nearest-even)")
    p.set_defaults(func=run)


def _vectors(args, path, model, data, config) -> list[Path]:
    check(args.vectors <= len(data.x_test),
          f"--vectors {args.vectors} asks for more images than {path.name}'s {data.name} test split holds "
          f"({len(data.x_test)}): give at most {len(data.x_test)}")
    return write_vectors(args.out, model, config, data.x_test[:args.vectors], model_file=path,
                         dataset=data.name, seed=args.seed)


def _hls4ml(args, path, model, data, config) -> list[Path]:
    return [write_hls4ml_config(args.hls4ml, model, config, model_file=path)]


def _qonnx(args, path, model, data, config) -> list[Path]:
    return [write_qonnx(args.qonnx, model, config, qcdq=args.qcdq)]


TARGETS = (("vectors", _vectors), ("hls4ml", _hls4ml), ("qonnx", _qonnx))
"""(argument, writer(args, model path, model, dataset, config) -> paths written) per output kind."""


def run(args) -> int:
    check(args.vectors is None or args.out is not None,
          f"--vectors {args.vectors} writes a folder of files: add --out DIR")
    check(args.out is None or args.vectors is not None,
          "--out DIR is where --vectors N writes: add --vectors N")
    check(any(getattr(args, name) is not None for name, _ in TARGETS),
          "nothing to export: give --vectors N --out DIR, --hls4ml OUT.json or --qonnx OUT.onnx")
    check(not args.qcdq or args.qonnx is not None, "--qcdq chooses the form --qonnx OUT.onnx writes: add --qonnx")
    config = NetworkConfig.load(args.config)  # a bad file fails before the model loads
    path, model, data = load_model_and_data(args, config)  # a config made for another model is refused
    for name, write in TARGETS:
        if getattr(args, name) is not None:
            written = [Path(p) for p in write(args, path, model, data, config)]
            print(f"{name}: wrote {len(written)} file{'s' if len(written) != 1 else ''} to {written[-1].parent} (the last: {written[-1].name})")
    return 0
