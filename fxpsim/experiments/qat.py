"""Training for the datapath: normalized accuracy vs BW_acc after post-training search, fine-tuning
and accumulator-aware fine-tuning (issue 19; de Bruin et al. DSD 2018; Colbert et al. ICCV 2023).

Two library functions, testable without argv:

- :func:`finetune_model` (what ``fxpsim finetune`` runs): one model fine-tuned to one config
  (:func:`fxpsim.train.qat.fine_tune`), with the integer run of the test split under the config
  before and after (:class:`fxpsim.simulate.Simulator`, i.e. ``fxpsim eval MODEL --config CFG``);
- :func:`run_qat_study`: for each BW_acc and constraint, de Bruin's search on the calibration
  sample (:func:`fxpsim.search.accumulator_search`, the post-training result), then the model
  fine-tuned to that config with the accumulator simulated, then accumulator-aware (A2Q
  projection), each measured by the integer run on the test split.

    python -m fxpsim.experiments.qat [MODEL] [--data-dir DIR] [--out reports] [--bits 8-16]

writes ``<model>_qat.csv``, ``.md`` and ``.png``. Normalized accuracy = the integer run's test
accuracy / the ORIGINAL float model's test accuracy. Fine-tuning is a float32 training: it repeats
bit for bit on one BLAS kernel (one thread), like every training report.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..cli.common import calibration_set
from ..config import NetworkConfig
from ..constraints import CONSTRAINTS
from ..errors import FxpsimError, check
from ..modelfile import DEFAULT_MODEL
from ..tables import format_table, model_provenance, new_figure, save_figure, write_table
from ..search import accumulator_search, check_acc_bits, layer_ranges
from ..simulate import Evaluator, SimResult, Simulator, profile
from ..train.qat import FineTune, FineTuneResult, accumulator_bounds, fine_tune
from ..train.trainer import evaluate
from .prune import RetrainSetup, Retraining, load_for_retraining

__all__ = ["METHODS", "AlternateResult", "FinetuneOutcome", "QatReport", "QatStudy", "alternate", "finetune_model",
           "main", "plot_qat", "run_qat_study", "search_config"]

METHODS = ("post-training", "fine-tuned", "acc-aware")
"""The study's rows per (constraint, BW_acc): the search's config as it is, the model fine-tuned to it
(accumulator simulated), and fine-tuned with the A2Q projection."""

ALTERNATING = "alternating"
"""The optional fourth row (``QatStudy.rounds``): search and acc-aware fine-tuning alternated (:func:`alternate`)."""


@dataclass(frozen=True, eq=False)
class FinetuneOutcome:
    """One fine-tuning: the result (model, history, ...), the integer runs of the test split under the
    config ``before`` and ``after``, the float test accuracies and the analytic accumulator bounds."""

    result: FineTuneResult
    before: SimResult
    after: SimResult
    float_before: float
    float_after: float
    bounds: list[dict]

    def summary(self) -> pd.DataFrame:
        """One row each for the model before and after: float and fixed-point test accuracy,
        normalized (by the float model before), overflows on the test split and the largest
        |final accumulator| as a share of 2**(BW_acc-1) (max over layers)."""
        rows = []
        for label, sim, flt in (("before", self.before, self.float_before), ("after", self.after, self.float_after)):
            rows.append({"model": label, "float_accuracy": flt, "fixed_point_accuracy": sim.accuracy,
                         "normalized_accuracy": sim.accuracy / self.float_before,
                         "overflow_count": sum(s.overflow_count for s in sim.layer_stats),
                         "max_abs_acc_share": max(s.max_abs_acc / (1 << (b["acc_bits"] - 1))
                                                  for s, b in zip(sim.layer_stats, self.bounds))})
        return pd.DataFrame(rows)


def finetune_model(setup: RetrainSetup, config: NetworkConfig, run: FineTune, log=None) -> FinetuneOutcome:
    """Fine-tune ``setup.model`` to ``config`` on its training split (selected on its validation
    split) and run the test split through the integer datapath before and after.

    The fine-tuned model's metadata keeps the original split seed (so calibration samples stay
    apart from training) and records, under ``finetune``, the run and its test accuracies.
    """
    Simulator(setup.model).check_config(config)
    x_tr, y_tr, x_val, y_val, x_te, y_te = setup.splits
    before = Simulator(setup.model, seed=run.sim_seed).simulate(setup.data.x_test, config, setup.data.y_test)
    result = fine_tune(setup.model, config, (x_tr, y_tr, x_val, y_val), setup.base, run, log=log)
    after = Simulator(result.model, seed=run.sim_seed).simulate(setup.data.x_test, config, setup.data.y_test)
    float_after = evaluate(result.model.network, x_te, y_te)[1]
    md = result.model.metadata
    md["finetune"].update(test_accuracy_fixed_point=after.accuracy, test_accuracy_fixed_point_before=before.accuracy)
    md["test_accuracy"] = float(float_after)  # the float network's, as `fxpsim train` records it
    bounds = accumulator_bounds(result.model, config, run.sim_seed)
    return FinetuneOutcome(result, before, after, float(before.float_accuracy), float(float_after), bounds)


# --- search and fine-tuning alternated ----------------------------------------------------------------

def search_config(model, calibration, bits: int, constraint: str, overflow: str, seed: int = 0) -> NetworkConfig:
    """de Bruin's search (:func:`fxpsim.search.accumulator_search`) on ``model`` with ``calibration = (x, y)``."""
    sim = Simulator(model, seed=seed)
    ev = Evaluator(sim, *calibration)
    return accumulator_search(ev, profile(sim, ev.x, prepared=True), bits, constraint, overflow)[0]


def config_formats(config: NetworkConfig) -> str:
    """``conv1 Q2.7*Q2.5 ... fc2 Q1.4*Q5.-1 out Q5.14``: each layer's weight and data format and the last
    layer's output format (the others' outputs are the next layer's data), a config's compact view."""
    return " ".join(f"{layer.name} {layer.fmt_w}*{layer.fmt_x}" for layer in config.layers) + \
        f" out {config.layers[-1].fmt_y}"


@dataclass(frozen=True, eq=False)
class AlternateResult:
    """The model fine-tuned to ``config`` in the last round, its fine-tuning ``result``, one row per
    round (``rounds``) and whether the search found the same config again (``converged``)."""

    model: object
    config: NetworkConfig
    result: FineTuneResult
    rounds: pd.DataFrame
    converged: bool


def alternate(setup: RetrainSetup, calibration, bits: int, constraint: str, overflow: str, run: FineTune,
              rounds: int, first: tuple[NetworkConfig, FineTuneResult] | None = None, log=None) -> AlternateResult:
    """Search, fine-tune to the config found, search again on the fine-tuned model, ...: stops when
    the search returns the config the model was just fine-tuned to, or after ``rounds`` fine-tunings
    (or when the new search has no solution). ``first``: round 1 already done (its config and result).
    Each round's row: its config, validation and test accuracy (integer run), the next search's verdict."""
    check(isinstance(rounds, int) and rounds >= 1, f"rounds={rounds!r} must be a whole number >= 1")
    x_tr, y_tr, x_val, y_val, _, _ = setup.splits
    x_test, y_test = setup.data.x_test, setup.data.y_test
    config = first[0] if first is not None else search_config(setup.model, calibration, bits, constraint,
                                                              overflow, run.sim_seed)
    rows, converged = [], False
    for k in range(1, rounds + 1):
        result = first[1] if (k == 1 and first is not None) else \
            fine_tune(setup.model if k == 1 else result.model, config, (x_tr, y_tr, x_val, y_val), setup.base, run)
        test = Simulator(result.model, seed=run.sim_seed).simulate(x_test, config, y_test)
        try:
            nxt = search_config(result.model, calibration, bits, constraint, overflow, run.sim_seed)
            verdict = "same config: stop" if nxt == config else "new config"
        except FxpsimError as exc:
            nxt, verdict = config, f"no solution: stop ({exc})"
        rows.append({"round": k, "formats": config_formats(config), "val_accuracy": result.val_accuracy,
                     "kept_epoch": result.kept_epoch, "test_accuracy": test.accuracy, "next_search": verdict})
        if log is not None:
            log(f"round {k}: val {result.val_accuracy:.4f} test {test.accuracy:.4f}; next search: {verdict}")
        converged = nxt == config
        if converged or k == rounds:
            break
        config = nxt
    return AlternateResult(result.model, config, result, pd.DataFrame(rows), converged)


# --- the study ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class QatStudy:
    """The study of one model: ``stem`` names the reports and ``source`` describes the model;
    ``bits`` the accumulator widths; ``constraints`` de Bruin's / A2Q's (``fxpsim.constraints``);
    ``overflow`` the accumulator mode of every config; ``run`` the fine-tuning settings (the same
    for both fine-tuned rows, ``acc_aware`` set per row); ``samples`` calibration samples of the
    validation split (the search's), ``seed`` their draw."""

    stem: str
    source: str
    bits: tuple[int, ...] = tuple(range(8, 17))
    constraints: tuple[str, ...] = ("act-w", "a2q", "act-y")
    overflow: str = "wrap"
    run: FineTune = FineTune(epochs=5, lr=1e-3)
    samples: int = 500
    seed: int = 0
    rounds: int = 0
    """> 0: add the ``alternating`` row, at most this many fine-tunings (:func:`alternate`)."""

    def __post_init__(self) -> None:
        check(isinstance(self.rounds, int) and 0 <= self.rounds <= 20, f"rounds={self.rounds!r} must be 0 to 20")
        bits = tuple(self.bits)
        check(bool(bits) and all(isinstance(b, int) and not isinstance(b, bool) and 2 <= b <= 32 for b in bits),
              f"bits={bits!r} must be accumulator widths in 2..32, e.g. 8, 9, ..., 16")
        object.__setattr__(self, "bits", bits)
        cons = tuple(self.constraints)
        bad = [c for c in cons if c not in CONSTRAINTS]
        check(bool(cons) and not bad, f"constraints {bad or cons!r}: use some of {', '.join(CONSTRAINTS)}")
        object.__setattr__(self, "constraints", cons)
        check(self.overflow in ("wrap", "clip"), f"overflow={self.overflow!r} must be wrap or clip")
        check(isinstance(self.samples, int) and self.samples >= 1, f"samples={self.samples!r} must be >= 1")


@dataclass(frozen=True, eq=False)
class QatReport:
    """The table (one row per constraint, BW_acc and method), its title and Markdown text."""

    stem: str
    table: pd.DataFrame
    title: str
    text: str

    def pivot(self) -> pd.DataFrame:
        """Normalized accuracy with BW_acc down and (constraint, method) across: the printed view."""
        wide = self.table.pivot_table(index="acc_bits", columns=["constraint", "method"],
                                      values="normalized_accuracy", dropna=False, sort=False)
        wide.columns = [f"{c} {m}" for c, m in wide.columns]
        return wide.reset_index()


def float_test_accuracy(sim: Simulator, x, y, batch_size: int = 2000) -> float:
    """The float model's accuracy as :meth:`Simulator.simulate` reports it (``float_accuracy``)."""
    logits = [sim.float_trace(sim.prepare(x[i:i + batch_size]))[-1][1].reshape(len(x[i:i + batch_size]), -1)
              for i in range(0, len(x), batch_size)]
    return float(np.mean(np.concatenate(logits).argmax(axis=1) == np.asarray(y)))


def _row(constraint, bits, method, sim: SimResult | None, float_acc, model=None, config=None, result=None,
         seed=0) -> dict:
    row = {"constraint": constraint, "acc_bits": bits, "method": method, "accuracy": np.nan,
           "normalized_accuracy": np.nan, "overflow_count": np.nan, "outputs_affected": np.nan,
           "worst_case_safe": None, "range_used": np.nan, "val_accuracy": np.nan,
           "kept_epoch": np.nan, "rescaled_channels": np.nan}
    if sim is None:
        return row
    bounds = accumulator_bounds(model, config, seed)
    row.update(accuracy=sim.accuracy, normalized_accuracy=sim.accuracy / float_acc,
               overflow_count=sum(s.overflow_count for s in sim.layer_stats),
               outputs_affected=sum(s.outputs_affected for s in sim.layer_stats),
               worst_case_safe=all(b["safe"] for b in bounds),
               range_used=max(b["range_used"] for b in bounds))
    if result is not None:
        row.update(val_accuracy=result.val_accuracy, kept_epoch=result.kept_epoch,
                   rescaled_channels=result.rescaled_channels)
    return row


def run_qat_study(study: QatStudy, setup: RetrainSetup, calibration, log=None) -> QatReport:
    """Every (constraint, BW_acc): search on ``calibration = (x, y)`` (from the validation split),
    fine-tune, accumulator-aware fine-tune, each run on the test split. A width with no solution
    under a constraint gives rows without numbers."""
    model = setup.model
    x_tr, y_tr, x_val, y_val, _, _ = setup.splits
    x_cal, y_cal = calibration
    sim = Simulator(model, seed=study.run.sim_seed)
    ev = Evaluator(sim, x_cal, y_cal)
    prof = profile(sim, ev.x, prepared=True)
    ranges = layer_ranges(ev, prof)
    x_test, y_test = setup.data.x_test, setup.data.y_test
    float_acc = float_test_accuracy(sim, x_test, y_test)
    methods = METHODS + ((ALTERNATING,) if study.rounds else ())
    rows = []
    for constraint in study.constraints:
        for bits in study.bits:
            try:
                check_acc_bits(constraint, ranges, bits)
            except FxpsimError:
                rows += [_row(constraint, bits, m, None, float_acc) for m in methods]
                continue
            config, _ = accumulator_search(ev, prof, bits, constraint, study.overflow)
            ptq = sim.simulate(x_test, config, y_test)
            rows.append(_row(constraint, bits, METHODS[0], ptq, float_acc, model, config, seed=study.run.sim_seed))
            for method, aware in zip(METHODS[1:], (False, True)):
                run = replace(study.run, acc_aware=aware)
                res = fine_tune(model, config, (x_tr, y_tr, x_val, y_val), setup.base, run)
                out = Simulator(res.model, seed=run.sim_seed).simulate(x_test, config, y_test)
                rows.append(_row(constraint, bits, method, out, float_acc, res.model, config, res, run.sim_seed))
            if study.rounds:  # round 1 is the acc-aware row's fine-tuning
                alt = alternate(setup, calibration, bits, constraint, study.overflow, run, study.rounds,
                                first=(config, res))
                out = Simulator(alt.model, seed=run.sim_seed).simulate(x_test, alt.config, y_test)
                rows.append(_row(constraint, bits, ALTERNATING, out, float_acc, alt.model, alt.config, alt.result,
                                 run.sim_seed) | {"rounds": len(alt.rounds), "converged": alt.converged})
            if log is not None:
                done = rows[-len(methods):]
                log(f"{constraint} BW_acc={bits}: normalized " + ", ".join(
                    f"{r['method']} {r['normalized_accuracy']:.4f}" for r in done))
    table = pd.DataFrame(rows)
    r = study.run
    text = (
        f"Model {study.source}; float test accuracy {float_acc:.4f} (the denominator of normalized_accuracy). "
        f"Per constraint and BW_acc: de Bruin's search ({study.overflow} accumulators) on "
        f"{len(ev.y)} calibration samples of the validation split gives the post-training config; "
        f"`fine-tuned`: the model fine-tuned to that config for {r.epochs} epochs ({setup.base.optimizer}, "
        f"lr {r.train_config(setup.base).lr:g}, batch {r.train_config(setup.base).batch_size}, seed {r.seed}) "
        "on the training split, the forward pass being the config's integer run (accumulator simulated) "
        "and the backward the clipped straight-through estimator, the best validation epoch (integer "
        "accuracy; 0 = the starting weights) kept; `acc-aware`: the same with every output channel's "
        "integer weights projected after each step onto the A2Q bound ||w||_1 <= (2^(BW_acc-1) - 1 - |b|) / "
        "x_max (Colbert et al., ICCV 2023), so no input can overflow. Every accuracy is the integer "
        "run (fxpsim.simulate.Simulator) of the test split under the searched config. "
        "`worst_case_safe`: in every layer the accumulator's extremes over all inputs of the data format, "
        "b_c + sum_i max/min(w_ic x), lie in the BW_acc range (`range_used`: the largest share of the "
        "range they reach, > 1 when some input overflows); `overflow_count`: additions "
        "that overflowed on the test split; `rescaled_channels`: channel rescalings of the projection, "
        "summed over the steps. A width without a solution under a constraint has empty rows.")
    if study.rounds:
        text += (f" `alternating`: the acc-aware model searched again on the same calibration samples, fine-tuned "
                 f"(acc-aware) to the new config, and so on, at most {study.rounds} fine-tunings in all, stopping "
                 "when the search returns the config the model was fine-tuned to (`converged`); the row is the "
                 "last model under its own config (`rounds`: fine-tunings run).")
    return QatReport(study.stem, table, f"Post-training vs fine-tuned vs accumulator-aware: {study.stem}", text)


def plot_qat(report: QatReport):
    """Normalized accuracy vs BW_acc, a panel per constraint, a line per method (each method
    nudged 0.1 bit sideways so that coinciding lines stay visible); the 99 % line labelled."""
    df = report.table
    cons = list(dict.fromkeys(df["constraint"]))
    fig, axes = new_figure(1, len(cons), figsize=(4.2 * len(cons), 3.8), squeeze=False)
    for ax, c in zip(axes[0], cons):
        for k, (method, marker) in enumerate(zip(dict.fromkeys(df["method"]), ("o", "s", "^", "D"))):
            part = df[(df["constraint"] == c) & (df["method"] == method)]
            ax.plot(part["acc_bits"] + 0.1 * (k - 1), part["normalized_accuracy"], marker=marker, label=method)
        ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":", label="99 % of float accuracy")
        ax.set_title(f"constraint {c}", fontsize=9)
        ax.set_xlabel("accumulator width BW_acc (bits)")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalized accuracy (accuracy / float)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels),
               title="weights from", title_fontsize=8)
    fig.suptitle(report.title, fontsize=10)
    return fig


def _bits(text: str) -> tuple[int, ...]:
    """``8-16`` or ``8,10,12``."""
    try:
        if "-" in text:
            lo, hi = (int(t) for t in text.split("-"))
            return tuple(range(lo, hi + 1))
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise FxpsimError(f"--bits {text!r} is not a range such as 8-16 or a list such as 8,10,12") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fxpsim.experiments.qat", description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help="model file (default: the digits CNN)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--out", default="reports", help="report folder (default reports/)")
    p.add_argument("--bits", default="8-16", help="accumulator widths, e.g. 8-16 or 8,10,12")
    p.add_argument("--constraints", default="act-w,a2q,act-y", help=f"some of {', '.join(CONSTRAINTS)}")
    p.add_argument("--overflow", default="wrap", choices=("wrap", "clip"))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed (mini-batch order)")
    p.add_argument("--samples", type=int, default=500, help="calibration samples of the search")
    p.add_argument("--rounds", type=int, default=0,
                   help="> 0: add the alternating search / acc-aware fine-tuning row, at most ROUNDS fine-tunings; "
                        "the report is then <model>_qat_alternating")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        path = Path(args.model)
        study = QatStudy(path.stem, model_provenance(path), _bits(args.bits), tuple(args.constraints.split(",")),
                         args.overflow, FineTune(epochs=args.epochs, lr=args.lr, seed=args.seed),
                         samples=args.samples, rounds=args.rounds)
        setup = load_for_retraining(path, Retraining(data_dir=args.data_dir, progress=False))
        calibration = calibration_set(setup.model, setup.data, study.samples, study.seed)
        report = run_qat_study(study, setup, calibration, log=None if args.quiet else print)
    except (FxpsimError, OSError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    out, name = Path(args.out), f"{study.stem}_qat" + ("_alternating" if study.rounds else "")
    for f in write_table(report.table, name, out, title=report.title, text=report.text):
        print(f"wrote {f}")
    print(f"wrote {save_figure(plot_qat(report), out / f'{name}.png')}")
    print(format_table(report.pivot()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

