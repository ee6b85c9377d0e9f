"""`fxpsim prune` and `fxpsim compress` end to end on the digits MLP, and their bad-input lines."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxpsim.cli import main
from fxpsim.modelfile import load_model

MODELS = Path(__file__).resolve().parents[2] / "models"
MLP = str(MODELS / "digits-mlp.npz")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """The digits MLP pruned to 80 % in 2 rounds (the module's tests share it)."""
    d = tmp_path_factory.mktemp("prune")
    out = d / "mlp-pruned.npz"
    rc = main(["prune", MLP, "--target-sparsity", "0.8", "--iterations", "2", "--retrain-epochs", "3",
               "--lr-divisor", "1", "--sensitivity", "--out", str(out), "--reports", str(d), "--quiet"])
    assert rc == 0
    return d, out


def test_prune_writes_a_model_whose_zeros_are_the_masks(pruned):
    d, out = pruned
    model = load_model(out)
    ws = [layer.params["W"] for layer in model.network.layers if layer.kind == "dense"]
    kept = sum(int(np.count_nonzero(w)) for w in ws) / sum(w.size for w in ws)
    assert kept == pytest.approx(0.2, abs=1e-3)
    meta = model.metadata["pruned"]
    assert meta["sparsity"] == pytest.approx(1 - kept)
    assert set(meta["kept_fraction"]) == {"fc1", "fc2", "fc3"}
    assert len(meta["rounds"]) == 2
    # the recorded accuracy is the pruned network's, and retraining kept it useful
    assert model.metadata["test_accuracy"] > 0.85
    assert model.metadata["test_accuracy_before_pruning"] == pytest.approx(0.9733, abs=1e-3)
    rounds = pd.read_csv(d / "mlp-pruned-prune.csv")
    assert list(rounds["iteration"]) == [1, 2]
    sens = pd.read_csv(d / "digits-mlp-sensitivity.csv")
    assert set(sens["layer"]) == {"fc1", "fc2", "fc3"}
    assert (d / "digits-mlp-sensitivity.png").stat().st_size > 1000
    # pruning the last layer hard hurts more than pruning the first one as hard (Han's Fig. 5 pattern)
    at = sens[sens["sparsity"] == 0.95].set_index("layer")["accuracy"]
    assert at["fc3"] < at["fc1"]


def test_compress_reports_layers_and_stages(pruned, capsys):
    d, out = pruned
    rc = main(["compress", str(out), "--pes", "8", "--index-bits", "4", "--clusters", "16", "--huffman",
               "--rank", "8", "--fine-tune-epochs", "1", "--reports", str(d), "--quiet"])
    assert rc == 0
    layers = pd.read_csv(d / "mlp-pruned-8pe-compress.csv")
    assert list(layers["layer"]) == ["fc1", "fc2", "fc3"]
    for col in ("weights", "nonzeros_pct", "index_bits", "padding_entries", "bits_per_kept_weight", "storage_kb",
                "cycles_pe_min", "cycles_pe_mean", "cycles_pe_max"):
        assert col in layers.columns
    assert (layers["cycles_pe_min"] <= layers["cycles_pe_mean"]).all()
    assert (layers["cycles_pe_mean"] <= layers["cycles_pe_max"]).all()
    assert layers["nonzeros_pct"].between(15, 25).all()
    stages = pd.read_csv(d / "mlp-pruned-8pe-compress-stages.csv")
    assert list(stages["stage"]) == ["dense", "pruned", "shared", "huffman"]
    rates = list(stages["compression_rate"])
    assert rates[0] == 1 and rates == sorted(rates) and rates[-1] > 10
    err = stages.set_index("stage")["test_error_pct"]
    assert err["huffman"] == err["shared"]  # lossless
    assert stages.set_index("stage")["kmeans_error_pct"].notna().tolist() == [False, False, True, True]
    assert err["dense"] == pytest.approx(100 - 97.33, abs=0.01)  # the unpruned model's, from the metadata
    lowrank = pd.read_csv(d / "mlp-pruned-lowrank.csv")
    assert list(lowrank["layer"]) == ["fc1", "fc2", "fc3", "all fc"]
    assert lowrank.loc[0, "mults_lowrank"] == 64 * 8 + 8 * 8 + 8 * 128
    assert "x smaller than dense" in capsys.readouterr().out


def test_compress_prunes_when_asked_and_pes_change_cycles(tmp_path):
    args = ["compress", MLP, "--prune", "0.7", "--iterations", "1", "--retrain-epochs", "1", "--clusters", "8",
            "--index-bits", "8", "--reports", str(tmp_path), "--quiet"]
    assert main(args + ["--pes", "1"]) == 0
    one = pd.read_csv(tmp_path / "digits-mlp-1pe-compress.csv")
    assert main(args + ["--pes", "16"]) == 0
    sixteen = pd.read_csv(tmp_path / "digits-mlp-16pe-compress.csv")
    assert (one["nonzeros_pct"] - 30).abs().max() < 3
    # 8-bit indices: no padding, so the same entries spread over 16 PEs (padding would add cycles)
    assert (one["padding_entries"] == 0).all() and (sixteen["padding_entries"] == 0).all()
    np.testing.assert_allclose(sixteen["cycles_pe_mean"] * 16, one["cycles_pe_mean"], rtol=1e-5)  # CSV: 6 digits
    assert (sixteen["cycles_pe_max"] < one["cycles_pe_max"]).all()
    assert main(args + ["--pes", "1", "--index-bits", "2"]) == 0  # short indices: gaps need padding entries
    padded = pd.read_csv(tmp_path / "digits-mlp-1pe-compress.csv")
    assert (padded["padding_entries"] > 0).all()
    assert (padded["cycles_pe_mean"] > one["cycles_pe_mean"]).all()  # a padding entry costs a cycle


@pytest.mark.parametrize("argv, needle", [
    (["prune", MLP, "--target-sparsity", "1.0"], "outside [0, 1)"),
    (["prune", MLP, "--target-sparsity", "-0.1"], "outside [0, 1)"),
    (["prune", MLP, "--target-sparsity", "fc9=0.5"], "fc9"),
    (["prune", MLP, "--quality", "1", "--layers", "conv1"], "conv1 not in the model"),
    (["compress", MLP, "--index-bits", "0"], "--index-bits '0' is outside [1, 16]"),
    (["compress", MLP, "--index-bits", "17"], "--index-bits '17' is outside [1, 16]"),
    (["compress", MLP, "--pes", "0"], "--pes '0' is not a whole number >= 1"),
    (["compress", MLP, "--clusters", "1"], "--clusters '1' is not a whole number >= 2"),
    (["compress", MLP, "--clusters", "5000"], "more than its"),
    (["compress", MLP, "--prune", "0.99", "--clusters", "100"], "more than its"),
    (["compress", MLP, "--layers", "conv1"], "conv1 not in the model"),
    (["compress", MLP, "--prune", "1.5"], "outside [0, 1)"),
])
def test_bad_input_is_one_line_and_nonzero(argv, needle, tmp_path, capsys):
    out = ["--out", str(tmp_path / "x.npz")] if argv[0] == "prune" else ["--reports", str(tmp_path)]
    rc = main(argv + out)
    err = capsys.readouterr().err
    assert rc != 0
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


def test_han_lenet300_figures_are_printed_beside_ours(tmp_path):
    from fxpsim.modelfile import Model, save_model
    from fxpsim.network import build_network

    base = load_model(MLP)
    net = build_network("lenet300", (1, 8, 8), 10, seed=0)  # LeNet-300-100's layers on 8x8 digits
    path = tmp_path / "lenet300-digits.npz"
    save_model(path, Model(net, base.preprocess, dict(base.metadata, arch="lenet300")))
    assert main(["compress", str(path), "--prune", "0.9", "--iterations", "1", "--retrain-epochs", "0",
                 "--pes", "1", "--clusters", "4", "--huffman", "--reports", str(tmp_path), "--quiet"]) == 0
    stages = pd.read_csv(tmp_path / "lenet300-digits-1pe-compress-stages.csv").set_index("stage")
    assert stages["paper_error_pct"].tolist()[:2] == [1.64, 1.59]
    assert stages.loc["huffman", "paper_compression_rate"] == 40
    assert stages.loc["pruned", "paper_weights_kept_pct"] == 8
    assert stages.loc["pruned", "weights_kept_pct"] == pytest.approx(10, abs=0.1)


def test_no_cli_command_module_imports_another():
    """Issue 13: `cli/compress` imported `cli/prune`; shared plumbing lives in non-command CLI modules."""
    from fxpsim.cli import _COMMANDS
    from test_imports import import_graph

    graph = import_graph(toplevel_only=False)
    for mod in _COMMANDS:
        others = sorted(t for t in graph[mod] if t in _COMMANDS and t != mod)
        assert not others, f"{mod} imports the command module(s) {others}"
