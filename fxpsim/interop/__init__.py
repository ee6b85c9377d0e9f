"""Interoperation with the tools fxpsim's users work in (DESIGN.md): golden vectors for RTL
testbenches (:mod:`.vectors`), and ONNX/QONNX and hls4ml import and export.

Import-free: each submodule is imported by name (``from fxpsim.interop import vectors``).
"""
