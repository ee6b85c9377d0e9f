"""Import shim: Stripes (Judd et al., MICRO 2016) lives in three modules by concept (docs/INTERFACES.md names this path).

- :mod:`fxpsim.datapath.bitserial`: the bit-exact bit-serial engine.
- :mod:`fxpsim.timing.stripes`: DaDianNao vs Stripes cycles, layer shapes, presets.
- :mod:`fxpsim.experiments.stripes`: the study and its model surgery (sign bits, input scaling).
"""

from .datapath.bitserial import BitSerialResult, BitSerialStats, bit_serial_conv2d, bit_serial_dense, clip_safe
from .experiments.stripes import fold_input_scaling, nonnegative_inputs, unsigned_inputs
from .timing.stripes import (SHAPE_PRESETS, AcceleratorConfig, LayerShape, LayerTiming, NetworkTiming,
                             parse_input_shape, parse_profile, parse_shapes, profile_from_config,
                             shapes_from_network, time_layer, time_network)

__all__ = [
    "SHAPE_PRESETS", "AcceleratorConfig", "BitSerialResult", "BitSerialStats", "LayerShape",
    "LayerTiming", "NetworkTiming", "bit_serial_conv2d", "bit_serial_dense", "clip_safe",
    "fold_input_scaling", "nonnegative_inputs", "parse_input_shape", "parse_profile", "parse_shapes",
    "profile_from_config", "shapes_from_network", "time_layer", "time_network", "unsigned_inputs",
]
