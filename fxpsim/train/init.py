"""Import shim: weight initialisation lives in :mod:`fxpsim.graph.init` (docs/INTERFACES.md names this path)."""

from ..graph.init import INIT_SCHEMES, fans, init_layer, init_weight, parse_init

__all__ = ["INIT_SCHEMES", "fans", "init_layer", "init_weight", "parse_init"]
