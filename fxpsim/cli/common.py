"""What several commands share: the model argument, its data and splits, the output folder."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import numpy as np

from ..config import ENGINE_OPTIONS, ModelRecord, _short
from ..errors import FxpsimError, check
from ..modelfile import DEFAULT_MODEL, check_architecture, check_writable, model_budget
from ..progress import bars_on
from ..tables import REPORTS_DIR
from . import arg_type


def add_model_args(p, optional: bool = False) -> None:
    """MODEL (optional: the shipped default), --data-dir, --out, --samples, --seed."""
    if optional:
        p.add_argument("model", nargs="?", default=None,
                       help=f"model file (.npz, or .onnx imported on the fly); default: the shipped "
                            f"models/{DEFAULT_MODEL.name}")
    else:
        p.add_argument("model", help="model file (.npz written by `fxpsim train`, or .onnx imported on the fly)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--out", default=str(REPORTS_DIR), help="folder for reports (default: reports/)")
    p.add_argument("--seed", type=seed_type(), default=0, help="seed of the calibration sample")


QUIET_HELP = "no progress bars (drawn only when stderr is a terminal): a line per epoch instead"


def progress_of(args, log=print):
    """``(bars, log)`` of a command's ``--quiet``: progress bars only on a terminal and without ``--quiet``
    (:func:`fxpsim.progress.bars_on`); otherwise no bars and one line per epoch or round through ``log``, so
    a captured log holds lines, never ``\\r`` redraws."""
    bars = bars_on(getattr(args, "quiet", False))
    return bars, (None if bars else log)


def model_path(name: str | None) -> Path:
    """The model file named on the command line, or the shipped default."""
    if name is None:
        check(DEFAULT_MODEL.exists(), f"the default model {DEFAULT_MODEL} is missing: give a MODEL file "
                                      "(train one with `fxpsim train --arch cnn-small --dataset digits`)")
        return DEFAULT_MODEL
    return Path(name)


def check_made_for(config, path, model, args) -> None:
    """Refuse ``config`` (``--config``; None: nothing to check) if it was made for another model than
    ``model`` (its recorded weights digest or layers differ), unless ``--force``."""
    if config is not None and not getattr(args, "force", False):
        config.check_model(model_record(path, model), args.config, "or add --force to run it anyway")


def load_model_and_data(args, config=None):
    """(path, model, dataset) for the command's MODEL, its dataset loaded as it was trained. With a
    ``config``, a config made for another model is refused first (unless ``args.force``)."""
    from ..interop.models import read_model
    from ..train.data import load_dataset

    path = model_path(getattr(args, "model", None))
    model = read_model(path)
    check_made_for(config, path, model, args)
    meta = model.metadata
    split = meta.get("split") or {}
    kwargs = {k: split[k] for k in ("test_fraction", "split_seed") if k in split}
    check("dataset" in meta, f"{path} does not say which data set it was trained on (no \"dataset\" in its "
                             "metadata): re-save it with fxpsim train, or give the model metadata a dataset")
    data = load_dataset(meta["dataset"], getattr(args, "data_dir", None), **kwargs)
    return path, model, data


def calibration_set(model, data, samples: int | None, seed: int):
    """A seeded sample of the training split's validation part (never the test split)."""
    from ..train.data import train_val_split

    frac = float(model.metadata.get("val_fraction") or 0.1)
    _, _, x_val, y_val = train_val_split(data.x_train, data.y_train, frac,
                                         int(model.metadata.get("seed", 0)))
    if samples is not None:
        check(samples >= 1, f"--samples {samples} must be at least 1")
        if samples < len(y_val):
            idx = np.random.default_rng(seed).choice(len(y_val), samples, replace=False)
            idx.sort()
            x_val, y_val = x_val[idx], y_val[idx]
    return x_val, y_val


def stem_for(path: Path) -> str:
    """The report name stem of a model file: ``models/lenet5-mnist.npz`` -> ``lenet5-mnist``."""
    return Path(path).stem


def int_in(lo: int, hi: int | None, what: str, hint: str, span: str | None = None):
    """An argparse type: a whole number in [lo, hi] (hi None: no upper bound), else one line naming
    the value, the range (``span``: how to write it, e.g. ``[0, 2**63)``) and ``hint`` (the reason, the fix)."""
    span = span or (f"[{lo}, {hi}]" if hi is not None else None)

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        ok = v is not None and v >= lo and (hi is None or v <= hi)
        if v is None:
            rule = f"is not a whole number {'in ' + span if span else f'>= {lo}'}"
        else:
            rule = f"is outside {span}" if span else f"is not a whole number >= {lo}"
        check(ok, f"{what} {text!r} {rule}: {hint}")
        return v

    parse.__name__ = what
    parse.bounds = ("int", lo, hi, False, False)  # what the hostile-input tests step outside of
    return parse


def real_in(lo: float, hi: float, what: str, hint: str, *, lo_open: bool = False, hi_open: bool = False):
    """An argparse type: a finite number in the interval from ``lo`` to ``hi`` (each end open or
    closed), else one line naming the value, the interval and ``hint`` (NaN and inf are never in it)."""
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        check(math.isfinite(v), f"{what} {text!r} is not a finite number in {span}: {hint}")
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        check(ok, f"{what} {text!r} is outside {span}: {hint}")
        return v

    parse.__name__ = what
    parse.bounds = ("float", lo, hi, lo_open, hi_open)
    return parse


def whole(lo: int, hi: int, what: str, hint: str, span: str | None = None):
    """:func:`int_in` as an argparse ``type``."""
    return arg_type(int_in(lo, hi, what, hint, span))


def real(lo: float, hi: float, what: str, hint: str, *, lo_open: bool = False, hi_open: bool = False):
    """:func:`real_in` as an argparse ``type``."""
    return arg_type(real_in(lo, hi, what, hint, lo_open=lo_open, hi_open=hi_open))


# --------------------------------------------------------------------------- the bounds every command shares

MAX_SEED = 2**63 - 1
"""Largest seed: NumPy's generators take no negative seed, and a model file stores it in 63 bits."""
MAX_EPOCHS = 10_000
"""Most epochs of a training run (the README's longest is 30: beyond, a typo, not a plan)."""
MAX_BATCH = 1 << 16
"""Largest batch (more than MNIST's 60000 training images: the whole set in one step)."""
MAX_SAMPLES = 1 << 20
"""Most images a command samples (every split is smaller: MNIST has 70000; more means all of it)."""
MAX_THREADS = 1024
"""Most BLAS threads (a pool beyond the machine's cores only slows a run down)."""


def seed_type(what: str = "--seed"):
    """The argparse type of a seed: a whole number in [0, 2**63)."""
    return whole(0, MAX_SEED, what, "a seed is a whole number in [0, 2**63) (NumPy takes no negative seed; "
                                    "model files store 63 bits), e.g. 0", span="[0, 2**63)")


def epochs_type(what: str = "--epochs", lo: int = 1):
    """The argparse type of an epoch count: ``lo`` (1, or 0 where none is allowed) to :data:`MAX_EPOCHS`."""
    return whole(lo, MAX_EPOCHS, what, f"epochs of training, {lo} to {MAX_EPOCHS} (the README's runs take 1-30)")


def samples_type(what: str):
    """The argparse type of an image count: 1 to :data:`MAX_SAMPLES` (more than a split is all of it)."""
    return whole(1, MAX_SAMPLES, what, f"a count of images, 1 to {MAX_SAMPLES} (a split smaller than the "
                                       "count is used whole), e.g. 500")


def threads_type(what: str = "--threads"):
    """The argparse type of a BLAS thread count: 1 to :data:`MAX_THREADS`."""
    return whole(1, MAX_THREADS, what, f"BLAS threads, 1 to {MAX_THREADS} (1: deterministic sums)")


_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def stem_type(what: str):
    """The argparse type of a report name: a file stem, never a path (the folder is ``--out``)."""

    def parse(text: str) -> str:
        check(_STEM.fullmatch(text) is not None, f"{what} {_short(text)} is not a report name: give 1 to 100 "
                                                 "letters, digits, '.', '_' or '-' (no folder: that is --out)")
        return text

    parse.__name__ = what
    return arg_type(parse)


LR_TYPE = real(0, 1e6, "--lr", "a learning rate is above 0 and at most 1e6 (far past any that trains: the "
                               "trainer stops a diverging run), e.g. 0.001", lo_open=True)
DECAY_TYPE = real(0, 100, "--decay", "k of the decay per epoch, 0 (none) to 100 (beyond, the rate is 0 after "
                                     "one epoch), e.g. 0.1")
BATCH_TYPE = whole(1, MAX_BATCH, "--batch-size", f"images per step, 1 to {MAX_BATCH} (more than a training set "
                                                 "is all of it), e.g. 64")
VAL_FRACTION_TYPE = real(0, 1, "--val-fraction", "the share of the training data held out: 0 (none) to below 1, "
                                                 "e.g. 0.1", hi_open=True)
SHIFT_TYPE = whole(0, 1 << 12, "--shift", "pixels of random translation, 0 (off) to less than the image size")
"""The trainer options of ``train``, ``binary`` (and the retraining of ``prune``/``compress``);
``--shift`` is bounded by the images when the data set is known (:func:`check_shift`)."""


def penalty_type(what: str):
    """An L1/L2 coefficient: 0 to 1 (typical 1e-5 to 1e-3; above 1 the penalty outweighs the data)."""
    return real(0, 1, what, "a weight penalty from 0 (none) to 1; typical values are 1e-5 to 1e-3")


# --------------------------------------------------------------------------- checks before any work

def check_out_dir(path, option: str = "--out") -> Path:
    """Fail before the compute if no report can be written into the folder ``path`` (made later if
    missing; nothing is created here but a probe file, removed at once)."""
    path = Path(path)
    check(not path.exists() or path.is_dir(), f"{option} {path} is a file, not a folder: give a folder")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    check(probe.is_dir(), f"{option} {path}: {probe} is a file, not a folder: give a folder")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as exc:
        raise FxpsimError(f"{option} {path} is not writable ({exc.strerror} in {probe}): choose a writable "
                          f"folder with {option}") from None
    return path


def check_out_file(path, option: str = "--out") -> Path:
    """Fail before the compute if the file ``path`` cannot be written (:func:`fxpsim.modelfile.check_writable`)."""
    try:
        return check_writable(path)
    except OSError as exc:
        raise FxpsimError(f"{option} {path} cannot be written ({exc.strerror or exc} in {Path(path).parent}): "
                          f"choose a writable folder for {option}") from None
    except FxpsimError as exc:
        raise FxpsimError(f"{option}: {exc}") from None


def built(what: str, value, build):
    """``build()``, with the NumPy errors of layers too large to allocate (or to index) as one line."""
    try:
        return build()
    except (MemoryError, ValueError, OverflowError) as exc:
        if isinstance(exc, FxpsimError):
            raise
        raise FxpsimError(f"{what} {_short(value)} builds layers too large for memory ({type(exc).__name__}: "
                          f"{exc}): choose smaller layers") from None


def checked_network(arch: str, input_shape, n_classes: int, what: str = "--arch"):
    """The freshly built network of ``arch`` on ``input_shape``, refused in one line if its parameters,
    gradients and buffers exceed the model budget (:func:`fxpsim.modelfile.model_budget`) or memory."""
    from ..network import build_network

    net = built(what, arch, lambda: build_network(arch, tuple(input_shape), n_classes, max_bytes=model_budget()))
    try:
        check_architecture(net.to_config(), model_budget())
    except FxpsimError as exc:
        raise FxpsimError(f"{what} {_short(arch)}: {str(exc).removeprefix('its ')}") from None
    return net


def check_shift(shift: int, input_shape, dataset: str, what: str = "--shift") -> int:
    """A translation augmentation by at most the image size less one pixel (more moves every pixel off)."""
    most = min(int(d) for d in tuple(input_shape)[1:]) - 1
    check(shift <= most, f"{what} {shift} is beyond the {'x'.join(map(str, input_shape[1:]))} images of {dataset}: "
                         f"give 0 to {most} pixels (a shift by the image size leaves only repeated edge pixels)")
    return shift


def check_pes(pes: int, rows: dict[str, int], what: str = "--pes") -> int:
    """EIE interleaves a layer's rows over the PEs (Han et al. 2016): at most the widest layer's rows
    (beyond, every added PE idles in every layer) and the sparse engine's limit."""
    most = {o.name: o for o in ENGINE_OPTIONS["sparse"]}["pes"].high
    check(pes <= most, f"{what} {pes} is more than the sparse engine's {most} PEs: give e.g. 64 (EIE)")
    if rows:
        name, n = max(rows.items(), key=lambda kv: kv[1])
        check(pes <= n, f"{what} {pes} is more than the {n} rows of the widest sparse layer ({name}): a layer's "
                        f"rows are interleaved over the PEs, so PEs beyond {n} only idle; give 1 to {n}")
    return pes


def model_record(path, model) -> ModelRecord:
    """What a config records about the model it was made for (:func:`fxpsim.simulate.model_record`)."""
    from ..simulate.stages import model_record as record

    return record(path, model)


def add_parallel_options(p) -> None:
    """``--jobs N`` (worker processes, one thread each) and ``--scheduler local|tcp://HOST:PORT``
    (Dask distributed, the ``[dist]`` extra): where a search's independent evaluations run."""
    from ..parallel import MAX_JOBS

    p.add_argument("--jobs", type=whole(1, MAX_JOBS, "--jobs", f"worker processes, 1 (here, in order) to "
                                                             f"{MAX_JOBS}, e.g. 2 (one per core)"), default=1,
                   help="worker processes for independent evaluations (default 1; the reports are the same)")
    p.add_argument("--scheduler", default=None,
                   help="run the evaluations on Dask: 'local' (a LocalCluster of --jobs workers) or "
                        "tcp://HOST:PORT (a running scheduler); needs the [dist] extra")


def parallel_of(args):
    """The :class:`fxpsim.parallel.Parallel` of ``--jobs`` / ``--scheduler``."""
    from ..parallel import Parallel

    return Parallel(getattr(args, "jobs", 1), getattr(args, "scheduler", None))
