"""fxpsim: bit-accurate fixed-point inference simulator for neural-network datapaths."""

from .cli import startup as _startup  # noqa: F401,I001 - first: the CLI's Ctrl-C guard, then the Numba cache fallback
from .errors import FxpsimError
from .qformat import Overflow, QFormat, Rounding, dequantize, quantize

__version__ = "0.1.0"
__all__ = ["Config", "FxpsimError", "LoadedModel", "NetworkConfig", "Overflow", "QFormat", "Rounding",
           "dequantize", "load", "quantize", "__version__"]

# Registers the binary layer kinds (bdense, bconv2d, sign) and spec tokens in fxpsim.graph's registry, so
# every model file and spec resolves after any fxpsim import; graph never imports binary (no cycle).
from .binary import train_layers as _binary_train_layers  # noqa: E402,F401

# The front door (fxpsim.api, docs/QUICKSTART.md), imported on first use: it pulls in the simulator,
# the searches and pandas, which `import fxpsim` (and every CLI start) need not pay for.
_FRONT_DOOR = {"Config": "api", "LoadedModel": "api", "load": "api", "NetworkConfig": "config"}


def __getattr__(name: str):
    if name in _FRONT_DOOR:
        import importlib

        return getattr(importlib.import_module(f".{_FRONT_DOOR[name]}", __name__), name)
    raise AttributeError(f"module 'fxpsim' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_FRONT_DOOR))
