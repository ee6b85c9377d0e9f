"""The front door: a model, a config, a simulation and a search in a few calls (docs/QUICKSTART.md).

>>> import fxpsim
>>> m = fxpsim.load()                      # the shipped digits CNN, its test split on first use
>>> cfg = fxpsim.Config.uniform(m, fmt_w="Q2.6", fmt_x="Q5.3", acc_bits=16, overflow="clip")
>>> r = m.simulate(cfg)                    # r.accuracy, r.float_accuracy, r.layers (a DataFrame)
>>> s = m.search(acc_bits=16)              # de Bruin et al.'s search: s.config, s.table, s.test

Nothing here adds semantics: :class:`LoadedModel` holds a
:class:`~fxpsim.modelfile.Model` and calls the library as the CLI does
(:class:`~fxpsim.simulate.Simulator`, :class:`~fxpsim.simulate.Evaluator`,
:func:`~fxpsim.simulate.profile`, :func:`~fxpsim.search.accumulator_search`);
configs are :class:`~fxpsim.config.NetworkConfig` values (DESIGN.md,
"Fixed-point semantics"). Everything is seeded: the same calls give the same
numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .config import LayerConfig, NetworkConfig
from .errors import FxpsimError, check
from .interop.models import read_model
from .modelfile import DEFAULT_MODEL, Model, select_bn_set
from .qformat import int_bits_for, parse_overflow
from .tables import to_csv, write_text_atomic
from .search import accumulator_search, accumulator_table
from .simulate import (
    Evaluator,
    SimResult,
    Simulator,
    build_stages,
    model_record,
    profile,
)
from .train.data import Dataset, load_dataset, train_val_split

__all__ = ["Config", "LoadedModel", "SearchResult", "SimulationResult", "calibration_split", "load",
           "model_dataset"]

CALIBRATION_SAMPLES = 500
"""Validation images a search or a profile uses by default (as ``fxpsim search --samples``)."""


# --- data of a model, as it was trained (the CLI's logic, as library functions) -------------------
def model_dataset(model: Model, data_dir: str | os.PathLike | None = None, source: str = "the model") -> Dataset:
    """The data set ``model`` was trained on, split as in training (``metadata["dataset"]``, ``["split"]``)."""
    meta = model.metadata
    check("dataset" in meta, f"{source} does not say which data set it was trained on (no \"dataset\" in its "
                             "metadata): re-save it with fxpsim train, or give the model metadata a dataset")
    split = meta.get("split") or {}
    kwargs = {k: split[k] for k in ("test_fraction", "split_seed") if k in split}
    return load_dataset(meta["dataset"], data_dir, **kwargs)


def calibration_split(model: Model, data: Dataset, samples: int | None = CALIBRATION_SAMPLES, seed: int = 0):
    """``(x, y)``: a seeded sample of ``samples`` images of the training split's validation part (the
    one training held out, ``metadata["val_fraction"]``, ``["seed"]``), never the test split; None: all."""
    frac = float(model.metadata.get("val_fraction") or 0.1)
    _, _, x_val, y_val = train_val_split(data.x_train, data.y_train, frac, int(model.metadata.get("seed", 0)))
    if _check_samples(samples, "validation split") is not None and samples < len(y_val):
        idx = np.sort(np.random.default_rng(seed).choice(len(y_val), samples, replace=False))
        x_val, y_val = x_val[idx], y_val[idx]
    return x_val, y_val


def _check_samples(samples, split: str):
    """``samples`` is None (the whole split) or a whole number >= 1."""
    check(samples is None or (isinstance(samples, (int, np.integer)) and not isinstance(samples, bool)
                              and samples >= 1),
          f"samples={samples!r} must be a whole number >= 1 (or None for the whole {split})")
    return samples


# --- configs -----------------------------------------------------------------------------------
class _ConfigType(type):
    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, NetworkConfig)


class Config(metaclass=_ConfigType):
    """Makes :class:`~fxpsim.config.NetworkConfig` values, the one config type (``isinstance(cfg,
    fxpsim.Config)`` holds for them). A config is frozen: change it with ``cfg.with_layer(i, ...)``
    / ``cfg.with_all(...)``, write it with ``cfg.save(path)``, show it with ``cfg.table()``."""

    def __new__(cls, *args, **kwargs):
        raise FxpsimError("fxpsim.Config is not instantiated: use Config.uniform(model, ...), "
                          "Config.load(path), Config.from_json(text) or NetworkConfig(layers)")

    @staticmethod
    def uniform(model, fmt_w, fmt_x, fmt_y=None, acc_bits: int = 32, overflow="wrap",
                rounding="nearest-even") -> NetworkConfig:
        """One :class:`~fxpsim.config.LayerConfig` per compute layer of ``model`` (a
        :class:`LoadedModel`, a Model, or a list of layer names), all with the same formats
        (``fmt_y`` defaults to ``fmt_x``: each output is the next layer's input format, no conversion),
        BW_acc, overflow mode and rounding; the defaults are LayerConfig's."""
        names = _layer_names(model)
        fmt_y = fmt_x if fmt_y is None else fmt_y
        return NetworkConfig(tuple(LayerConfig(n, fmt_w, fmt_x, fmt_y, acc_bits, overflow, rounding)
                                   for n in names))

    load = staticmethod(NetworkConfig.load)
    from_json = staticmethod(NetworkConfig.from_json)


def _layer_names(model) -> list[str]:
    if isinstance(model, LoadedModel):
        return model.layers
    if isinstance(model, (list, tuple)) and all(isinstance(n, str) for n in model):
        check(len(model) > 0, "no layer names given: pass the model (fxpsim.load(...)) or its .layers")
        return list(model)
    check(hasattr(model, "network") or hasattr(model, "layers"),
          f"{type(model).__name__} is not a model: pass fxpsim.load(...), a Model, or a list of layer names")
    return [s.name for s in build_stages(model)]


def _as_config(config) -> NetworkConfig:
    if isinstance(config, (str, os.PathLike)):
        return NetworkConfig.load(config)
    check(isinstance(config, NetworkConfig), f"config {type(config).__name__} is not a NetworkConfig: build "
                                             "one with fxpsim.Config.uniform(...) or Config.load(path)")
    return config


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SimulationResult:
    """One config simulated on images: accuracies, and ``layers``, one row per compute layer
    (``config.table()`` beside ``SimResult.stats_table()``: formats, acc_bits = BW_acc, overflow
    counts, ``max_abs_acc`` in accumulator LSBs, errors against the float model)."""

    config: NetworkConfig
    raw: SimResult
    """The Simulator's own result: predictions, logits, layer_stats, engine_extras."""

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy of the integer datapath."""
        return self.raw.accuracy

    @property
    def float_accuracy(self) -> float:
        """Top-1 accuracy of the float model on the same images."""
        return self.raw.float_accuracy

    @property
    def images(self) -> int:
        return len(self.raw.predictions)

    @cached_property
    def layers(self) -> pd.DataFrame:
        return self.config.table().merge(self.raw.stats_table(), on="layer", sort=False)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write :attr:`layers` as CSV (floats at 6 digits, :func:`fxpsim.tables.to_csv`), atomically."""
        return write_text_atomic(Path(path), to_csv(self.layers))

    def __repr__(self) -> str:
        overflows = sum(s.overflow_count for s in self.raw.layer_stats)
        return (f"SimulationResult(accuracy={self.accuracy:.4f}, float_accuracy={self.float_accuracy:.4f}, "
                f"images={self.images}, overflow_count={overflows})")


@dataclass(frozen=True, eq=False)
class SearchResult:
    """:meth:`LoadedModel.search`: the chosen ``config``, the search's per-layer ``table``
    (:func:`fxpsim.search.accumulator_table`, on the calibration images) and ``test``, the config
    simulated on the test split."""

    config: NetworkConfig
    table: pd.DataFrame
    test: SimulationResult

    def __repr__(self) -> str:
        return f"SearchResult(layers={self.config.names}, test={self.test!r})"


# --- the model ---------------------------------------------------------------------------------
def load(path: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None,
         seed: int = 0) -> LoadedModel:
    """The model file ``path`` (default: the shipped ``models/digits-cnn.npz``) as a
    :class:`LoadedModel`. ``data_dir``: the MNIST IDX files (or ``$FXPSIM_DATA``); ``seed``: the
    stochastic-rounding and calibration-sample seed."""
    if path is None:
        check(DEFAULT_MODEL.exists(), f"the default model {DEFAULT_MODEL} is missing: give a model path "
                                      "(train one with `fxpsim train --arch cnn-small --dataset digits`)")
        path = DEFAULT_MODEL
    path = Path(path)
    check(path.is_file(), f"model {path} is not a file: give a model file (.npz) such as models/digits-mlp.npz, "
                          "or no path for the shipped digits CNN")
    return LoadedModel(path, read_model(path), data_dir, seed)


class LoadedModel:
    """A model file with its data, ready to simulate and search.

    ``network``, ``preprocess``, ``metadata`` are the file's
    (:class:`~fxpsim.modelfile.Model`); ``layers`` the compute layers'
    names (conv1.., fc1.., as every config and table names them);
    ``data`` the data set it was trained on, split as in training (loaded
    on first use); ``simulator`` the :class:`~fxpsim.simulate.Simulator`.
    """

    def __init__(self, path: Path, model: Model, data_dir=None, seed: int = 0):
        check(isinstance(seed, (int, np.integer)) and 0 <= seed < 2**63, f"seed={seed!r} must be a whole "
                                                                        "number in [0, 2**63)")
        self.path, self.model, self.data_dir, self.seed = Path(path), model, data_dir, int(seed)
        self.simulator = Simulator(model, seed=self.seed)

    network = property(lambda self: self.model.network)
    preprocess = property(lambda self: self.model.preprocess)
    metadata = property(lambda self: self.model.metadata)

    @property
    def layers(self) -> list[str]:
        """The compute layers' names, in network order."""
        return self.simulator.names

    @cached_property
    def data(self) -> Dataset:
        return model_dataset(self.model, self.data_dir, str(self.path))

    def __repr__(self) -> str:
        return (f"LoadedModel({self.path.name!r}: {self.network.spec()}, layers {', '.join(self.layers)}; "
                f"dataset {self.metadata.get('dataset', '?')})")

    def calibration(self, samples: int | None = CALIBRATION_SAMPLES, seed: int | None = None):
        """``(x, y)`` of :func:`calibration_split` (``seed``: default the model's)."""
        return calibration_split(self.model, self.data, samples, self.seed if seed is None else seed)

    def summary(self, samples: int | None = CALIBRATION_SAMPLES) -> pd.DataFrame:
        """One row per compute layer: kind, K (fan_in), weights, MACs per image, and the float model's
        max |w|, |input|, |output| over ``samples`` calibration images with the integer bits
        (sign included) a Q-format needs to hold each (:func:`fxpsim.qformat.int_bits_for`)."""
        x, _ = self.calibration(samples)
        rows = []
        for p in profile(self.simulator, x):
            s = p.stage
            rows.append({"layer": s.name, "kind": s.kind, "fan_in": s.fan_in, "weights": s.weights,
                         "macs": s.macs, "max_abs_w": p.max_abs_w, "max_abs_x": p.max_abs_x,
                         "max_abs_y": p.max_abs_y, "int_bits_w": int_bits_for(p.max_abs_w),
                         "int_bits_x": int_bits_for(p.max_abs_x), "int_bits_y": int_bits_for(p.max_abs_y)})
        return pd.DataFrame(rows)

    def config_uniform(self, fmt_w, fmt_x, fmt_y=None, acc_bits: int = 32, overflow="wrap",
                       rounding="nearest-even") -> NetworkConfig:
        """:meth:`Config.uniform` for this model."""
        return Config.uniform(self, fmt_w, fmt_x, fmt_y, acc_bits, overflow, rounding)

    def simulate(self, config, samples: int | None = None, *, engine: str | None = None,
                 prefix_stats: bool = False, **engine_options) -> SimulationResult:
        """Run ``config`` (a NetworkConfig or a config file's path) on the first ``samples`` test images
        (None: the whole test split), as ``fxpsim eval --config``. ``engine`` (dense | sparse |
        bitserial) with its options (``pes=64``, ``lanes=16``, ...) puts every layer on that engine;
        ``prefix_stats``: also the exact ``max_abs_prefix`` per layer."""
        config = _as_config(config)
        if engine is not None:
            config = config.with_engine(engine, **engine_options)
        else:
            check(not engine_options, f"engine options {', '.join(sorted(engine_options))} need an engine: "
                                      "add engine=\"sparse\" or engine=\"bitserial\"")
        x, y = self._test(samples)
        sim = self.simulator if not self.model.bn_sets else \
            Simulator(select_bn_set(self.model, config), seed=self.seed)  # FlexNet: the config's BatchNorm set
        return SimulationResult(config, sim.simulate(x, config, y, prefix_stats=prefix_stats))

    def search(self, acc_bits: int = 16, constraint: str = "act-w", overflow="wrap",
               rounding="nearest-even", *, samples: int | None = CALIBRATION_SAMPLES,
               test_samples: int | None = None, progress: bool = False) -> SearchResult:
        """de Bruin et al.'s accumulator-constrained search (DSD 2018, Fig. 5) as ``fxpsim search
        --acc-bits``: formats chosen on ``samples`` calibration images, then the config simulated on
        the first ``test_samples`` test images (None: all)."""
        overflow = parse_overflow(overflow, allow_ideal=False)  # a search trades formats against a real BW_acc
        x_cal, y_cal = self.calibration(samples)
        ev = Evaluator(self.simulator, x_cal, y_cal)
        config, choices = accumulator_search(ev, profile(self.simulator, ev.x, prepared=True), acc_bits,
                                             constraint, overflow, rounding, progress=progress)
        table = accumulator_table(choices, [st for _, _, st in ev.stage_outputs(config)])
        config = config.for_model(model_record(self.path, self.model))  # as `fxpsim search` records it
        x, y = self._test(test_samples)  # the network searched (a FlexNet file: the BatchNorm set it holds)
        return SearchResult(config, table, SimulationResult(config, self.simulator.simulate(x, config, y)))

    def _test(self, samples: int | None):
        data = self.data
        _check_samples(samples, "test split")
        return data.x_test[:samples], data.y_test[:samples]
