"""MODEL as every command takes it: an fxpsim model file, or an ONNX/QONNX file imported in memory."""

from __future__ import annotations

import os
from pathlib import Path

from ..modelfile import Model, load_model


def read_model(path: str | os.PathLike, **kw) -> Model:
    """:func:`fxpsim.modelfile.load_model` for an ``.npz``; for an ``.onnx`` file the model
    :func:`fxpsim.interop.onnx_import.load_onnx` imports (onnx is imported only then)."""
    if Path(path).suffix.lower() == ".onnx":
        from .onnx_import import load_onnx

        return load_onnx(path)
    return load_model(path, **kw)
