"""Uniform bit-width sweeps: moved to :mod:`fxpsim.search.sweeps` (this path stays, docs/INTERFACES.md names it)."""

from .search.sweeps import (WHAT, WIDE_FRAC, wide_config, set_data_format, uniform_setting, sweep,
                            plot_sweeps)

__all__ = ["WHAT", "WIDE_FRAC", "wide_config", "set_data_format", "uniform_setting", "sweep", "plot_sweeps"]
