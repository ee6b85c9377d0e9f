"""Report tables that explain themselves (issue 17 items 4, 5) and the package-layout trap.

- ``fxpsim.tables`` is not named like a top-level folder of the checkout
  (``reports/`` shadowed the old ``fxpsim.reports`` when the checkout was
  imported as a namespace package from the folder above it);
- columns carry their unit, blanks are blank (never ``nan``), every printed
  or Markdown table ends with its legend; checked on the writers and on
  every committed report.
"""

from __future__ import annotations

import io
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fxpsim
from fxpsim.experiments.reproduce import BENCHMARK_REPORTS, all_entries
from fxpsim.simulate.simulator import TABLE_COLUMNS, LayerStats, SimResult
from fxpsim.tables import GLOSSARY, format_table, legend, markdown, to_csv, write_table

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
PACKAGE = Path(fxpsim.__file__).resolve().parent

# --------------------------------------------------------------------------- the package-layout trap


def test_no_module_is_named_like_a_top_level_folder():
    """A checkout imported as a namespace package resolves ``fxpsim.X`` to the folder ``X`` beside
    the package first: no submodule may share a name with a top-level folder."""
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
    modules = {m.name for m in pkgutil.iter_modules([str(PACKAGE)])}
    assert "reports" in folders and "tables" in modules
    assert not folders & modules, f"fxpsim modules named like top-level folders: {sorted(folders & modules)}"


def test_import_from_the_folder_above_a_checkout(tmp_path):
    """The issue's reproduction: from a folder holding a checkout named ``fxpsim`` (its own
    ``fxpsim/`` package and a ``reports/`` folder beside it), the report module imports whole."""
    checkout = tmp_path / "fxpsim"
    for folder in ("reports", "docs", "models", "tests", "benchmarks", "fxpsim"):
        (checkout / folder).mkdir(parents=True)
    (checkout / "reports" / "digits-cnn_sweep.csv").write_text("what,bits\n")
    code = textwrap.dedent("""
        from fxpsim.tables import write_text_atomic, write_table
        import fxpsim.tables as t
        print(t.__file__)
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()).resolve() == PACKAGE / "tables.py"


def test_the_old_name_is_gone():
    with pytest.raises(ModuleNotFoundError):
        __import__("fxpsim.reports")


# --------------------------------------------------------------------------- the writers


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"layer": ["conv1", "fc1"], "weights": ["Q2.5", "Q5.-1"],
                         "worst_case_acc": [1234, None], "accuracy": [0.5, np.nan],
                         "paper_error_pct": [np.nan, 1.58], "plain": [1.0, 2.0]})


def test_blank_cells_and_legend_in_every_format(tmp_path):
    df = _frame()
    csv_path, md_path = write_table(df, "t", tmp_path, title="T", text="Some text.")
    csv, md, term = csv_path.read_text(), md_path.read_text(), format_table(df)
    for text in (csv, md, term):
        assert not re.search(r"\bnan\b", text, re.I), text
    assert csv.splitlines()[2] == "fc1,Q5.-1,,,1.58,2"
    md_rows = [ln for ln in md.splitlines() if ln.startswith("| fc1")]
    assert [c.strip() for c in md_rows[0].strip("|").split("|")] == ["fc1", "Q5.-1", "", "", "1.58", "2"]
    line = legend(df)
    assert md.rstrip().endswith(line) and term.endswith(line)
    for words in ("Q5.-1 is 4 bits with LSB 2", "worst_case_acc", "raw accumulator LSBs", "act-y",
                  "no formats meet the constraint", "no value in the paper"):
        assert words in line, words
    assert "plain" not in line  # a column the glossary does not name needs no legend


def test_no_legend_when_nothing_to_explain():
    df = pd.DataFrame({"layer": ["fc1"], "test_error_pct": [1.5]})
    assert legend(df) is None
    assert format_table(df) == df.to_markdown(index=False, tablefmt="simple", floatfmt=".4g")
    assert "Legend" not in markdown(df)


def test_legend_explains_il_against_int_bits():
    line = legend(pd.DataFrame({"il_wc": [3], "fl_acc": [10], "data": ["Q4.4"]}))
    assert "excl. the sign" in line and "incl. the sign (int_bits)" in line and "BW_acc = IL_acc + fl_acc + 1" in line


def test_glossary_names_each_column_once():
    names = [c for cols, _ in GLOSSARY for c in cols]
    assert len(names) == len(set(names))


def test_stats_table_columns_carry_their_unit():
    stats = LayerStats("fc1", 4, 8, 1, 2, 1, 300, 10, -1.0, 1.0, 0.5, 0.25, 0, max_abs_prefix=310)
    table = SimResult(np.zeros(1), np.zeros((1, 2)), [stats]).stats_table()
    assert {"max_abs_acc_lsb", "max_abs_prefix_lsb"} <= set(table.columns)
    assert not {"max_abs_acc", "max_abs_prefix"} & set(table.columns)
    assert table.loc[0, "max_abs_acc_lsb"] == 300 and table.loc[0, "max_abs_prefix_lsb"] == 310
    assert set(TABLE_COLUMNS) <= set(LayerStats.__slots__)


def test_printing_goes_through_the_shared_writer():
    """No module prints or writes a table by hand (``to_markdown``/``to_string``): every table gets
    its blanks and legend from :mod:`fxpsim.tables`."""
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if p.name != "tables.py" and re.search(r"\.to_(markdown|string)\(", p.read_text())]
    assert not offenders, offenders


# --------------------------------------------------------------------------- the committed reports

UNIT_SUFFIXES = ("_pct", "_kb", "_lsb", "_bits", "_cycles", "_count", "_count_test", "_channels", "_entries",
                 "_accuracy", "_speedup", "_rate", "_ratio", "_epoch", "_error_pct")
"""Name endings that say the unit (or that the value is a count or an accuracy)."""
SELF_EXPLANATORY = {
    "layer", "kind", "stage", "profile", "overflow", "method", "model", "arch", "name", "spec", "command",
    "optimizer", "lr", "iteration", "epochs", "accuracy", "speedup", "macs", "weights_kept_pct", "weights",
    "nonzeros_pct", "clusters", "index_bits", "candidates", "outputs_affected", "overflow_count", "images",
    "cycles", "load_imbalance", "n_pes", "shape", "rank", "mults_dense", "mults_lowrank", "mults_ratio",
    "sparsity", "quality", "dropout_p", "val_acc_pruned", "val_acc_retrained", "worst_case_safe",
    "kept_epoch", "final_train_loss", "evaluations", "compression", "model_bits", "tolerance_pct",
    "epochs_to_val_0.97", "paper_error_pct", "accuracy_loss", "float_accuracy", "quantized_accuracy",
    "rounding", "a2q", "engine", "engine_options", "additions", "outputs", "part", "variant", "augment",
}
"""Columns whose meaning and unit a newcomer reads from the name."""
GLOSSED = {c for cols, _ in GLOSSARY for c in cols}
TIMINGS = {p.name for pattern in BENCHMARK_REPORTS for p in REPORTS.glob(pattern)}
ENTRY_OF = {f: e for e in all_entries() for f in e.files}


def _committed(suffix: str) -> list[Path]:
    return sorted(p for p in REPORTS.glob(f"*{suffix}") if p.name not in TIMINGS)


def _tables(md: str) -> list[list[str]]:
    """The Markdown tables of a report, each as its lines, plus the line after it (or '')."""
    lines, out, cur = md.splitlines(), [], []
    for i, ln in enumerate(lines + [""]):
        if ln.startswith("|"):
            cur.append(ln)
        elif cur:
            after = next((x for x in lines[i:] if x.strip()), "")
            out.append(cur + [after])
            cur = []
    return out


@pytest.mark.parametrize("path", _committed(".csv"), ids=lambda p: p.name)
def test_committed_csv_columns_say_their_unit_or_are_glossed(path):
    cols = pd.read_csv(path, nrows=0).columns
    unclear = [c for c in cols if c not in SELF_EXPLANATORY and c not in GLOSSED
               and not c.endswith(UNIT_SUFFIXES) and not c.startswith("paper_")
               and "cycles" not in c]
    assert not unclear, f"{path.name}: columns without a unit or a legend entry: {unclear}"
    assert not {"max_abs_acc", "bits_per_weight", "max_abs_prefix"} & set(cols)


@pytest.mark.parametrize("path", _committed(".csv") + _committed(".md"), ids=lambda p: p.name)
def test_committed_reports_have_no_nan_text(path):
    text = path.read_text()
    cells = [c.strip() for ln in text.splitlines() for c in re.split(r"[|,]", ln)] if path.suffix == ".csv" \
        else [c.strip() for ln in text.splitlines() if ln.startswith("|") for c in ln.split("|")]
    assert "nan" not in {c.lower() for c in cells}, (
        f"{path.name} has nan cells: regenerate it "
        f"(python -m fxpsim.experiments.reproduce --only {ENTRY_OF[path.name].name} --out reports)")


APPENDED = {"binary_mnist.csv"}
"""Written by ``binary --append``, which reads the earlier rows back as text (a blank is ``""``, not
missing): its legend is that of the last row's frame, which the CSV alone does not give."""


@pytest.mark.parametrize("path", [p for p in _committed(".csv") if p.with_suffix(".md").exists()
                                  and p.name not in APPENDED], ids=lambda p: p.name)
def test_committed_markdown_tables_end_with_their_legend(path):
    df = pd.read_csv(path, keep_default_na=True)
    want = legend(df)
    tables = _tables(path.with_suffix(".md").read_text())
    main = max(tables, key=len)  # the report's own table (a Stripes text holds a summary too)
    if want is None:
        assert not main[-1].startswith("Legend:")
    else:
        assert main[-1] == want, (f"{path.name}: the Markdown table lacks its legend: regenerate it "
                                  f"(reproduce --only {ENTRY_OF[path.name].name} --out reports)")


def test_every_committed_report_is_a_reproduce_file():
    """The checks above name the entry to re-run: every report file belongs to one."""
    missing = [p.name for p in _committed(".csv") + _committed(".md") if p.name not in ENTRY_OF]
    assert not missing, missing


def test_csv_reader_keeps_blank_as_missing():
    """The legend check reads a CSV's blanks back as missing (as the writer had them)."""
    df = pd.read_csv(io.StringIO(to_csv(_frame())))
    assert legend(df) == legend(_frame())


# --------------------------------------------------------------------------- plots


def _texts(fig) -> list[str]:
    out = [fig._suptitle.get_text()] if fig._suptitle else []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel()]
    for leg in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        out += [leg.get_title().get_text()] + [t.get_text() for t in leg.get_texts()]
    return out


def _legend_off_data(fig) -> bool:
    """Every legend lies outside its axes' data area (a figure legend: below the panels)."""
    import matplotlib

    matplotlib.use("Agg")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None and leg.get_window_extent(r).overlaps(ax.get_window_extent(r)):
            return False
    for leg in fig.legends:
        box = leg.get_window_extent(r)
        if any(box.overlaps(ax.get_window_extent(r)) for ax in fig.axes):
            return False
    return True


def test_acc_sweep_plot_labels_its_lines_and_keeps_wrap_and_clip_apart():
    from fxpsim.search.accumulator import plot_acc_sweep

    df = pd.DataFrame([{"constraint": c, "overflow": o, "acc_bits": b, "accuracy": 0.9, "normalized_accuracy": 0.95}
                       for c in ("wc", "act-w") for o in ("wrap", "clip") for b in (8, 10, 12)])
    fig = plot_acc_sweep(df, "t")
    texts = _texts(fig)
    assert "99 % of float accuracy" in texts and "constraint / overflow" in texts
    assert any("bits" in t for t in texts) and _legend_off_data(fig)
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() in ("wc / wrap", "wc / clip")]
    xs = [tuple(ln.get_xdata()) for ln in lines]
    assert len(xs) == 2 and xs[0] != xs[1]  # same values, still two visible lines
    assert {ln.get_linestyle() for ln in lines} == {"-", "--"}


def test_solution_space_legend_is_plain_words_below_the_panels():
    from fxpsim.constraints import plot_solution_space

    df = pd.read_csv(REPORTS / "digits-cnn_solution_space.csv")
    fig = plot_solution_space(df, "t")
    assert not any(ax.get_legend() for ax in fig.axes) and len(fig.legends) == 1
    assert _legend_off_data(fig)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert all(" " in lab for lab in labels) and len(labels) == 5  # words, each series once
    assert "(bits)" in fig.axes[0].get_xlabel() and "(bits)" in fig.axes[0].get_ylabel()


def test_sweep_plot_names_the_field():
    from fxpsim.search.sweeps import plot_sweeps

    one = plot_sweeps(pd.DataFrame({"what": ["data-frac"] * 3, "bits": [1, 2, 3],
                                    "relative_accuracy": [0.5, 0.9, 1.0]}), "t")
    assert one.axes[0].get_xlabel().startswith("data fraction bits")
    assert "swept field" in _texts(one) and "99 % of float accuracy" in _texts(one)


def test_stripes_plot_of_a_conv_less_network_is_one_line_not_bars(tmp_path, capsys):
    from fxpsim.cli import main
    from fxpsim.experiments.stripes import plot_speedups
    from fxpsim.modelfile import save_model
    from fxpsim.train.data import load_dataset
    from fxpsim.train.trainer import TrainConfig, train

    table = pd.DataFrame({"profile": ["p"], "layer": ["total (network)"], "kind": ["total"], "speedup": [1.0]})
    assert plot_speedups(table, "t") is None
    model, _ = train(load_dataset("digits"), "fc16-relu-fc10", TrainConfig(epochs=2, seed=0), progress=False)
    save_model(tmp_path / "mlp.npz", model)
    assert main(["stripes", str(tmp_path / "mlp.npz"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no conv layer" in out and "no plot" in out
    assert not list(tmp_path.glob("*.png")) and list(tmp_path.glob("mlp_stripes*.csv"))
