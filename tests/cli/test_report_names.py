"""Issue 17, item 3: report file names carry the options that vary (defaults keep today's names), and
the tolerance search prints each config's path, the one to run next and its test result in one line."""

from __future__ import annotations

from pathlib import Path

from fxpsim.cli import build_parser, main
from fxpsim.cli.sweep import DEFAULT_BITS, report_stem
from fxpsim.modelfile import DEFAULT_MODEL

MLP = str(Path(__file__).resolve().parents[2] / "models" / "digits-mlp.npz")


def test_sweep_names():
    assert report_stem("m", None, DEFAULT_BITS) == "m_sweep"
    assert report_stem("m", ["weight-frac", "data-int", "data-frac"], DEFAULT_BITS) == "m_sweep"
    assert report_stem("m", ["data-frac"], DEFAULT_BITS) == "m_sweep_data-frac"
    assert report_stem("m", ["data-frac", "data-frac"], range(-2, 9)) == "m_sweep_data-frac_bits-2to8"
    assert report_stem("m", ["data-int", "weight-frac"], DEFAULT_BITS) == "m_sweep_data-int-weight-frac"


def test_sweep_defaults_to_the_shipped_model():
    args = build_parser().parse_args(["sweep"])
    assert args.model is None and DEFAULT_MODEL.exists()


def test_a_one_field_sweep_does_not_overwrite_the_all_fields_one(tmp_path, capsys):
    (tmp_path / "digits-mlp_sweep.csv").write_text("all fields\n")
    assert main(["sweep", MLP, "--what", "data-frac", "--bits", "0:2", "--samples", "50", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "digits-mlp_sweep.csv").read_text() == "all fields\n"
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["digits-mlp_sweep.csv"] + [f"digits-mlp_sweep_data-frac_bits0to2{s}" for s in (".csv", ".md", ".png")]
    assert f"wrote {tmp_path / 'digits-mlp_sweep_data-frac_bits0to2'}.csv" in capsys.readouterr().out


def test_the_tolerance_search_names_its_table_and_prints_its_configs(tmp_path, capsys):
    assert main(["search", MLP, "--tolerance", "0.03", "--samples", "100", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    stem = "digits-mlp_tolerance1-2-3-5-10"  # a tolerance beyond 1, 2, 5, 10 % adds a row: its own table
    assert (tmp_path / f"{stem}.csv").exists() and not (tmp_path / "digits-mlp_tolerance.csv").exists()
    configs = [line for line in out if line.startswith("config for ")]
    assert [c.split()[2] for c in configs] == ["1", "2", "3", "5", "10"]
    for line, pct in zip(configs, ("1", "2", "3", "5", "10")):
        path = tmp_path / f"digits-mlp_tolerance{pct}_config.json"
        assert str(path) in line and path.exists()
    chosen = [c for c in configs if c.endswith("<- --tolerance 0.03")]
    assert len(chosen) == 1 and "tolerance3_config" in chosen[0]
    result = [line for line in out if line.startswith("test split: relative accuracy")]
    assert len(result) == 1 and " loss at a 3 % tolerance (" in result[0]
    assert out[-1].endswith(f"next: fxpsim eval {MLP} --config {tmp_path / 'digits-mlp_tolerance3_config.json'}")
