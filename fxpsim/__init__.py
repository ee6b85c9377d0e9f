"""fxpsim: bit-accurate fixed-point inference simulator for neural-network datapaths."""

from .errors import FxpsimError
from .qformat import Overflow, QFormat, Rounding, dequantize, quantize

__version__ = "0.1.0"
__all__ = ["FxpsimError", "Overflow", "QFormat", "Rounding", "dequantize", "quantize", "__version__"]

# Registers the binary layer kinds (bdense, bconv2d, sign) and spec tokens in fxpsim.graph's registry, so
# every model file and spec resolves after any fxpsim import; graph never imports binary (no cycle).
from .binary import train_layers as _binary_train_layers  # noqa: E402,F401
