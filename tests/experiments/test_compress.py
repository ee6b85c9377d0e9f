"""The compression study without argv: :func:`fxpsim.experiments.compress.run_compress`, its inputs and checks."""

from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from fxpsim.cli import main
from fxpsim.errors import FxpsimError
from fxpsim.experiments.compress import CompressStudy, layer_inputs, run_compress
from fxpsim.experiments.prune import Retraining
from fxpsim.network import build_network
from fxpsim.tables import to_csv
from fxpsim.sparse.pe import eie_matrix

MLP = Path(__file__).resolve().parents[2] / "models" / "digits-mlp.npz"
CNN = Path(__file__).resolve().parents[2] / "models" / "digits-cnn.npz"
FAST = Retraining(iterations=1, retrain_epochs=1, progress=False)


def _conv_patterns(h, k, s, p):
    """Reference: the non-zero pattern's windows by a strided view, (B, ho * wo, C * k * k), order c, i, j."""
    nz = np.pad(h != 0, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sliding_window_view(nz, (k, k), axis=(2, 3))[:, :, ::s, ::s]  # (B, C, ho, wo, k, k)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(len(h), -1, h.shape[1] * k * k)


@pytest.mark.parametrize("spec, shape", [("conv3x3s2p1-relu-fc4", (2, 7, 7)), ("conv4x5-relu-fc4", (3, 9, 8)),
                                         ("conv2x2s3p2-relu-fc4", (1, 7, 7)), ("conv5x1-relu-fc4", (2, 4, 4))])
def test_conv_input_vectors_match_the_conv_layer(spec, shape):
    """The (B, P, K) input vectors of a conv layer, times its EIE matrix, give the conv's output."""
    net = build_network(spec, shape, 4, seed=1)
    x = np.random.default_rng(0).normal(size=(5, *shape)) * (np.random.default_rng(1).random((5, *shape)) < 0.5)
    active = layer_inputs(net, {"conv1": 0, "fc1": 3}, x)
    conv = net.layers[0]
    assert active["conv1"].dtype == np.bool_
    np.testing.assert_array_equal(active["conv1"], _conv_patterns(x, conv.k, conv.stride, conv.padding))
    # with x replaced by its non-zero pattern, the conv (bias 0) equals active @ W^T
    conv.params["b"][...] = 0
    y = conv.forward((x != 0).astype(np.float64))  # (B, F, ho, wo)
    b, f, ho, wo = y.shape
    got = active["conv1"].astype(np.float64) @ eie_matrix(conv.params["W"]).T  # (B, P, F)
    np.testing.assert_allclose(got, y.transpose(0, 2, 3, 1).reshape(b, ho * wo, f), rtol=1e-5)
    assert active["fc1"].shape == (5, f * ho * wo)


def test_run_compress_prunes_shares_and_sizes_without_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = CompressStudy(MLP, FAST, prune=0.7, pes=4, clusters=8, huffman=True, rank=8, samples=50)
    report = run_compress(study)
    assert list(tmp_path.iterdir()) == []  # the caller writes
    assert report.name == "digits-mlp-4pe" and list(report.layers["layer"]) == ["fc1", "fc2", "fc3"]
    assert [r["stage"] for r in report.stage_rows] == ["dense", "pruned", "shared", "huffman"]
    assert list(report.stages["stage"]) == [r["stage"] for r in report.stage_rows]
    assert report.sparsity == pytest.approx(0.7, abs=1e-3)
    assert list(report.lowrank["layer"]) == ["fc1", "fc2", "fc3", "all fc"]
    assert "4 PEs, relative indices 4 bits (conv 4), 8 clusters per FC layer (conv 8)" in report.settings
    assert "on 50 test images" in report.settings and report.text == report.settings  # not one of Han's LeNets
    md = report.model.metadata["compressed"]
    assert md["pes"] == 4 and md["clusters"] == {"fc1": 8, "fc2": 8, "fc3": 8}
    for layer in report.model.network.layers:
        if layer.kind == "dense":
            assert len(np.unique(layer.params["W"][layer.params["W"] != 0])) <= 8
    assert "x smaller than dense" in report.summary


def test_the_cli_writes_exactly_the_study_tables(tmp_path):
    """`fxpsim compress` only writes: its CSVs are the library's tables of the same (seeded) study."""
    assert main(["compress", str(CNN), "--prune", "conv1=0.5,fc2=0.8", "--iterations", "1", "--retrain-epochs",
                 "1", "--pes", "8", "--conv-clusters", "32", "--conv-index-bits", "8", "--huffman", "--samples",
                 "40", "--reports", str(tmp_path), "--quiet"]) == 0
    study = CompressStudy(CNN, FAST, prune={"conv1": 0.5, "fc2": 0.8}, pes=8, conv_clusters=32, conv_index_bits=8,
                          huffman=True, samples=40)
    report = run_compress(study)
    assert (tmp_path / "digits-cnn-8pe-compress.csv").read_text() == to_csv(report.layers)
    assert (tmp_path / "digits-cnn-8pe-compress-stages.csv").read_text() == to_csv(report.stages)
    assert report.text in (tmp_path / "digits-cnn-8pe-compress-stages.md").read_text()
    assert list(report.layers["index_bits"]) == [8, 8, 4, 4]
    assert list(report.layers["clusters"]) == [32, 32, 16, 16]


@pytest.mark.parametrize("kwargs, needle", [
    (dict(pes=0), "n_pes"),
    (dict(index_bits=17), "index_bits=17 is outside [1, 16]"),
    (dict(conv_index_bits=0), "index_bits=0 is outside [1, 16]"),
    (dict(clusters=1), "clusters=1 must be a whole number >= 2"),
    (dict(conv_clusters=True), "conv_clusters=True"),
    (dict(init="kmeans++"), "init='kmeans++' is not one of linear, density, forgy"),
    (dict(fine_tune_epochs=-1), "fine_tune_epochs=-1"),
    (dict(value_bits=65), "value_bits=65 must be in [1, 64]"),
    (dict(samples=0), "samples=0 must be >= 1"),
    (dict(rank=0), "rank=0 must be >= 1"),
    (dict(prune=1.5), "outside [0, 1)"),
    (dict(prune={"fc1": 1.0}), "outside [0, 1)"),
])
def test_a_bad_study_is_one_line_naming_the_value(kwargs, needle):
    with pytest.raises(FxpsimError) as exc:
        CompressStudy(MLP, **kwargs)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_clusters_beyond_the_non_zeros_fail_before_any_training():
    with pytest.raises(FxpsimError, match="clusters=100 for layer fc3 is more than its 64 non-zero weights"):
        run_compress(CompressStudy(MLP, FAST, prune={"fc3": 0.9}, clusters=100))
    with pytest.raises(FxpsimError, match="fc9 not pruned / not in the model"):
        run_compress(CompressStudy(MLP, FAST, prune={"fc9": 0.5}))
