"""Searches for per-layer formats (one module per method).

- :mod:`.accumulator`: de Bruin et al. (DSD 2018): formats for a fixed accumulator width under
  the constraints of :mod:`fxpsim.constraints` (WC, ACT-w, ACT-y, A2Q), and its tables.
- :mod:`.tolerance`: Judd et al. (ICLR 2016, Table 2): per-layer minimum precisions within an
  accuracy tolerance, and the traffic ratio.
- :mod:`.sweeps`: Judd et al.'s uniform bit-width sweeps (Figure 2).
"""

from .accumulator import (AccChoice, layer_ranges, check_acc_bits, accumulator_search,
                          accumulator_table, required_accumulator_table, acc_bits_sweep,
                          plot_acc_sweep, overflow_case_study)
from .sweeps import (WHAT, WIDE_FRAC, wide_config, set_data_format, uniform_setting, sweep,
                     plot_sweeps)
from .tolerance import (KNOBS, MIN_DATA_INT, MIN_DATA_FRAC, MIN_WEIGHT_BITS, LayerShape,
                        layer_shapes, traffic_ratio, get_knob, set_knob, ToleranceResult,
                        tolerance_search, tolerance_table)

__all__ = [
    "AccChoice",
    "KNOBS",
    "LayerShape",
    "MIN_DATA_FRAC",
    "MIN_DATA_INT",
    "MIN_WEIGHT_BITS",
    "ToleranceResult",
    "WHAT",
    "WIDE_FRAC",
    "acc_bits_sweep",
    "accumulator_search",
    "accumulator_table",
    "check_acc_bits",
    "get_knob",
    "layer_ranges",
    "layer_shapes",
    "overflow_case_study",
    "plot_acc_sweep",
    "plot_sweeps",
    "required_accumulator_table",
    "set_data_format",
    "set_knob",
    "sweep",
    "tolerance_search",
    "tolerance_table",
    "traffic_ratio",
    "uniform_setting",
    "wide_config",
]
