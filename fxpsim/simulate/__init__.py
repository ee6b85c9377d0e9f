"""Whole networks on the integer datapath (Judd et al., ICLR 2016; DESIGN.md), one module per concept.

- :mod:`.stages`: :class:`Stage`, THE record of a compute layer (BatchNorm
  folded, ReLU fused, the integer ops that follow, its shapes), and
  :func:`build_stages`, which cuts a network into them;
- :mod:`.post`: the integer ops after a kernel (pooling, activations);
- :mod:`.simulator`: :class:`Simulator` runs each stage on the engine its
  config names and returns a :class:`SimResult` with per-layer
  :class:`LayerStats`; :func:`convert_raw` between stages;
- :mod:`.profiling`: :func:`profile` (a :class:`LayerProfile` per stage),
  :func:`data_ranges`, :func:`config_from_profile`;
- :mod:`.evaluator`: :class:`Evaluator`, many configs on one calibration
  set with a prefix cache (what the searches call).
"""

from .evaluator import Evaluator
from .profiling import LayerProfile, config_from_profile, data_ranges, profile
from .simulator import Comparison, LayerStats, SimResult, Simulator, StageAgreement, convert_raw, simulate
from .plan import Plan, PlanOutput
from .stages import COMPUTE_KINDS, Stage, build_stages, model_record

__all__ = ["COMPUTE_KINDS", "Comparison", "Evaluator", "LayerProfile", "LayerStats", "Plan", "PlanOutput",
           "SimResult", "Simulator", "Stage", "StageAgreement", "build_stages", "config_from_profile",
           "convert_raw", "data_ranges", "model_record", "profile", "simulate"]
