"""fxpsim: bit-accurate fixed-point inference simulator for neural-network datapaths."""

from .errors import FxpsimError
from .qformat import Overflow, QFormat, Rounding, dequantize, quantize

__version__ = "0.1.0"
__all__ = ["FxpsimError", "Overflow", "QFormat", "Rounding", "dequantize", "quantize", "__version__"]
