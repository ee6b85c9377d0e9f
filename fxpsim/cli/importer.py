"""``fxpsim import MODEL.onnx --out M.npz [--dataset digits|mnist] [--input-scale S]``: an ONNX or
QONNX file as an fxpsim model file; a QONNX graph's formats also as ``M_config.json`` beside it,
so ``fxpsim eval M.npz --config M_config.json`` runs the integer network it was trained as
(:mod:`fxpsim.interop.onnx_import`)."""

from __future__ import annotations

from pathlib import Path

from .common import real


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="read an ONNX or QONNX model into an fxpsim model file (and its config)")
    p.add_argument("model", help="the .onnx file: float ONNX (opset >= 13; chains and DAGs: Add, Concat) or "
                                 "QONNX/QCDQ (a chain; Quant nodes with power-of-two scales)")
    p.add_argument("--out", required=True,
                   help="model file to write (.npz); a QONNX graph's formats go beside it as <stem>_config.json")
    p.add_argument("--dataset", default=None,
                   help="digits or mnist: the data the model runs on (default: the one whose image size the "
                        "ONNX input has)")
    p.add_argument("--input-scale", type=real(0, 1e6, "--input-scale", "the raw image is multiplied by it: above 0 "
                                                                   "and at most 1e6, e.g. 0.0625", lo_open=True),
                   default=None,
                   help="the model's preprocessing: its input is the raw image times S (e.g. 0.0625 for "
                        "digits pixels / 16; default: the raw image)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..interop.onnx_import import config_path, import_onnx  # onnx loads only for this command
    from ..modelfile import check_writable, save_model
    from ..tables import format_table

    out = check_writable(Path(args.out))
    result = import_onnx(args.model, args.dataset, args.input_scale)
    model = result.model
    src = model.metadata["source"]
    params = sum(p.size for layer in model.network.layers for p in layer.params.values())
    print(f"{src['file']} ({src['format']}, opset {src['opset']}, {src['producer']}): {model.network.spec()}, "
          f"{params} parameters, on {model.metadata['dataset']} images {model.network.input_shape}, "
          f"preprocessing {model.metadata['preprocess']}")
    save_model(out, model)
    print(f"wrote {out}")
    command = f"fxpsim eval {out}"
    if result.config is not None:
        cfg = config_path(out)
        result.config.save(cfg)
        print(format_table(result.config.table()))
        for note in result.notes:
            print(f"note: {note}")
        print(f"wrote {cfg}")
        command += f" --config {cfg}"
    print(f"run it: {command}")
    return 0
