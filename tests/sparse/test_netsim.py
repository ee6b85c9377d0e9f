"""A pruned network on EIE's sparse datapath == the dense integer simulation, bit for bit; its cycles."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fxpsim.cli import main
from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.errors import FxpsimError
from fxpsim.kernels import conv2d
from fxpsim.modelfile import Model, load_model, save_model
from fxpsim.network import Conv2D, Flatten, Network, build_network
from fxpsim.qformat import QFormat
from fxpsim.simulate import Evaluator, Simulator, config_from_profile, profile
from fxpsim.sparse.csc import encode
from fxpsim.sparse.kernel import sparse_conv2d
from fxpsim.sparse.netsim import SparseSimulator, cycle_stats, sparse_config
from fxpsim.sparse.pe import eie_matrix
from fxpsim.sparse.prune import apply_mask, sparsity_mask
from fxpsim.train.data import load_dataset

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """The digits MLP and CNN, 80 % of each layer's weights pruned by magnitude (no retraining)."""
    d = tmp_path_factory.mktemp("sparse")
    out = {}
    for name in ("digits-mlp", "digits-cnn"):
        model = load_model(MODELS / f"{name}.npz")
        for layer in model.network.layers:
            if layer.kind in ("dense", "conv2d"):
                w = layer.params["W"]
                w[...] = apply_mask(w, sparsity_mask(w, 0.8))
        out[name] = save_model(d / f"{name}-pruned.npz", model)
    return out


def _narrow(sim, x, overflow):
    """8-bit formats and 12-bit accumulators: the first layer overflows."""
    return config_from_profile(profile(sim, x), weight_bits=8, data_bits=8, acc_bits=12, overflow=overflow)


def _without_additions(stats):
    """Layer statistics minus ``additions``: the sparse count is the additions performed."""
    return [replace(s, additions=0) for s in stats]


@pytest.mark.parametrize("name, conv", [("digits-mlp", False), ("digits-cnn", False), ("digits-cnn", True)])
@pytest.mark.parametrize("overflow", ["wrap", "clip", "ideal"])
def test_sparse_run_equals_dense_run(pruned, digits, name, conv, overflow):
    model = load_model(pruned[name])
    dense_sim = Simulator(model)
    cfg = _narrow(dense_sim, digits.x_train[:200], overflow)
    dense = dense_sim.simulate(digits.x_test, cfg, digits.y_test, batch_size=300)  # two batches
    sparse = SparseSimulator(model, n_pes=4, index_bits=2, conv=conv).simulate(
        digits.x_test, cfg, digits.y_test, batch_size=300)
    np.testing.assert_array_equal(sparse.logits, dense.logits)
    np.testing.assert_array_equal(sparse.predictions, dense.predictions)
    assert sparse.accuracy == dense.accuracy and sparse.float_accuracy == dense.float_accuracy
    assert _without_additions(sparse.layer_stats) == _without_additions(dense.layer_stats)
    overflows = sum(s.overflow_count for s in dense.layer_stats)
    assert overflows > 0 if overflow != "ideal" else overflows == 0
    names = [s.layer for s in sparse.cycle_stats]
    assert names == [s.name for s in dense_sim.stages if conv or s.kind == "dense"]
    for s in sparse.cycle_stats:  # every test image counted once, 80 % of the weights pruned
        assert s.images == len(digits.x_test)
        assert s.nonzeros == pytest.approx(0.2 * s.weights, abs=1)
        assert s.pe.total_cycles <= s.cycles_dense_input * s.vectors


def test_every_stage_output_is_identical(pruned, digits):
    """Each stage's raw kernel output and stage output, through the Evaluator's prefix cache too."""
    model = load_model(pruned["digits-cnn"])
    sim = Simulator(model)
    cfg = _narrow(sim, digits.x_train[:200], "wrap")
    dense = Evaluator(sim, digits.x_test[:100], digits.y_test[:100]).stage_outputs(cfg)
    sparse = Evaluator(SparseSimulator(model, 3, 1, conv=True), digits.x_test[:100],
                       digits.y_test[:100]).stage_outputs(cfg)
    for (dk, do, _), (sk, so, _) in zip(dense, sparse):
        np.testing.assert_array_equal(sk, dk)
        np.testing.assert_array_equal(so, do)


# EIE matrix (rows = outputs, columns = inputs) of the hand-checked layer
M = np.array([[1, 1, 1, 1],
              [0, 1, 0, 0],
              [1, 0, 1, 0],
              [0, 1, 0, 1]], dtype=float)
CFG = NetworkConfig((LayerConfig("fc1", "Q2.6", "Q4.4", "Q8.8", acc_bits=32, overflow="wrap"),))
X = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])  # the second image skips column 0


def _hand_net():
    net = build_network("fc4", (4,), 4)
    net.layers[0].params["W"][...] = M.T  # Dense W is (inputs, outputs) = M.T
    net.layers[0].params["b"][...] = 0
    return net


def test_cycles_two_pes_by_hand():
    """PE 0 holds rows 0, 2 (entries per column 2 1 2 1), PE 1 rows 1, 3 (0 2 0 1).

    Image 1: PEs 6 / 3 -> queued 6, lock-step 2+2+2+1 = 7, 9 MACs; image 2 (column 0
    skipped): 4 / 3 -> queued 4, lock-step 2+2+1 = 5, 7 MACs.
    """
    res = SparseSimulator(_hand_net(), n_pes=2, index_bits=4).simulate(X, CFG)
    np.testing.assert_array_equal(res.logits, Simulator(_hand_net()).simulate(X, CFG).logits)
    (st,) = res.cycle_stats
    np.testing.assert_array_equal(st.pe.entries, [10, 6])
    assert (st.pe.total_cycles, st.pe.lockstep_cycles, st.additions) == (10, 12, 16)
    row = st.record()
    assert (row["cycles"], row["cycles_lockstep"], row["cycles_dense_input"]) == (5, 6, 6)
    assert (row["pe_cycles_min"], row["pe_cycles_mean"], row["pe_cycles_max"]) == (3, 4, 5)
    assert row["load_imbalance"] == 1.25 and row["macs"] == 8
    assert (row["padding_entries"], row["padding_cycles"], row["nonzeros_pct"]) == (0, 0, 56.25)


def test_cycles_with_padding_by_hand():
    """One PE, 1-bit indices (gaps of at most 1 zero): column 3 (rows 0, 3) needs a padding
    entry; entries per column 2 3 2 3 -> 10 cycles, then 8 without column 0."""
    (st,) = SparseSimulator(_hand_net(), n_pes=1, index_bits=1).simulate(X, CFG).cycle_stats
    row = st.record()
    assert (row["cycles_total"], row["cycles"], row["load_imbalance"]) == (18, 9, 1.0)
    assert (row["padding_entries"], row["padding_cycles"], row["macs"]) == (1, 1, 8)


def test_bad_arguments_are_one_line_errors():
    net = _hand_net()
    with pytest.raises(FxpsimError, match=r"pes=0 is outside \[1, 4096\]"):
        SparseSimulator(net, n_pes=0)
    with pytest.raises(FxpsimError, match=r"index_bits=17 is outside \[1, 16\]"):
        SparseSimulator(net, index_bits=17)


@pytest.fixture
def conv_only(tmp_path, pruned):
    """A model with a conv layer and no FC layer (EIE's kernel has nothing to run)."""
    base = load_model(pruned["digits-cnn"])
    net = Network([Conv2D(1, 10, 8), Flatten()], (1, 8, 8))
    return save_model(tmp_path / "conv-only.npz", Model(net, base.preprocess, base.metadata))


def test_cli_prints_cycles_equal_accuracy_and_writes_the_report(pruned, digits, tmp_path, capsys):
    model = load_model(pruned["digits-mlp"])
    cfg = _narrow(Simulator(model), digits.x_train[:200], "clip").save(tmp_path / "c.json")
    rc = main(["eval", str(pruned["digits-mlp"]), "--config", str(cfg), "--sparse", "--pes", "8",
               "--index-bits", "4", "--images", "200", "--report", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "logits bit-identical to the dense integer run" in out
    acc = [line.split()[2] for line in out.splitlines() if "accuracy" in line and "%" in line]
    assert acc[-1] == acc[-2]  # sparse accuracy == fixed-point (dense integer) accuracy
    table = pd.read_csv(tmp_path / "digits-mlp-pruned-8pe-sparse.csv")
    assert list(table["layer"]) == ["fc1", "fc2", "fc3"]
    assert (table["images"] == 200).all() and (table["n_pes"] == 8).all()
    assert (table["cycles"] == table["cycles_total"] / 200).all()
    assert (tmp_path / "digits-mlp-pruned-8pe-sparse.md").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--sparse", "--pes", "0"], "--pes '0' is not a whole number >= 1"),
    (["--sparse", "--index-bits", "0"], "--index-bits '0' is outside [1, 16]"),
    (["--sparse", "--index-bits", "17"], "--index-bits '17' is outside [1, 16]"),
    (["--pes", "8"], "configure the sparse datapath: add --sparse"),
    ("conv-only", "no FC (Dense) layer"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, needle, pruned, conv_only, tmp_path, capsys):
    if argv == "conv-only":
        argv = [str(conv_only), "--sparse"]
    else:
        argv = [str(pruned["digits-mlp"])] + argv
    rc = main(["eval"] + argv + ["--report", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("stride, padding, overflow", [(1, 0, "wrap"), (2, 2, "clip"), (3, 1, "wrap")])
def test_sparse_conv2d_equals_the_dense_conv(stride, padding, overflow):
    """im2col columns are the conv's accumulation order: same y, acc and overflow statistics."""
    rng = np.random.default_rng(stride)
    fmt = QFormat(1, 5)
    w = rng.integers(-32, 32, (5, 3, 3, 3)) * (rng.random((5, 3, 3, 3)) < 0.3)
    x = rng.integers(-32, 32, (4, 3, 9, 9)) * (rng.random((4, 3, 9, 9)) < 0.6)
    b = rng.integers(-200, 200, 5)
    cfg = dict(fmt_x=fmt, fmt_w=fmt, fmt_y=QFormat(3, 5), acc_bits=10, overflow=overflow, activation="relu")
    de = conv2d(x, w, b, stride=stride, padding=padding, **cfg)
    sp = sparse_conv2d(x, encode(eie_matrix(w), 2, 2), b, kernel_size=3, stride=stride, padding=padding, **cfg)
    np.testing.assert_array_equal(sp.y, de.y)
    np.testing.assert_array_equal(sp.acc, de.acc)
    assert replace(sp.stats, additions=0) == replace(de.stats, additions=0) and de.stats.overflow_count > 0
    # stochastic rounding: the core's counter-based draw per output of the dense layout, on both paths
    sto = dict(cfg, fmt_y=QFormat(3, 3), rounding="stochastic", seed=1)
    np.testing.assert_array_equal(
        sparse_conv2d(x, encode(eie_matrix(w), 2, 2), b, kernel_size=3, stride=stride, padding=padding, **sto).y,
        conv2d(x, w, b, stride=stride, padding=padding, **sto).y)


# ---------------------------------------------------------------- the sparse engine by config

def test_sparse_simulator_is_the_sparse_engine_named_by_the_config(pruned, digits):
    """SparseSimulator == Simulator on sparse_config(...): the same logits, stats and cycles; an
    Evaluator on either serves cached stages with their cycles (counted once, never missed)."""
    model = load_model(pruned["digits-cnn"])
    sim = Simulator(model)
    cfg = _narrow(sim, digits.x_train[:200], "clip")
    named = sparse_config(cfg, sim.stages, 4, 2, conv=True, conv_index_bits=3)
    assert [(c.engine, c.options.get("index_bits")) for c in named] == [("sparse", 3)] * 2 + [("sparse", 2)] * 2
    assert [c.engine for c in sparse_config(cfg, sim.stages)] == ["dense", "dense", "sparse", "sparse"]
    x, y = digits.x_test[:150], digits.y_test[:150]
    by_class = SparseSimulator(model, 4, 2, conv=True, conv_index_bits=3).simulate(x, cfg, y)
    by_config = sim.simulate(x, named, y)
    np.testing.assert_array_equal(by_class.logits, by_config.logits)
    assert by_class.layer_stats == by_config.layer_stats
    want = [s.record() for s in cycle_stats(by_config.engine_extras)]
    assert [s.record() for s in by_class.cycle_stats] == want and len(want) == 4
    for ev_sim, config in ((sim, named), (SparseSimulator(model, 4, 2, conv=True, conv_index_bits=3), cfg)):
        ev = Evaluator(ev_sim, x, y)
        ev.accuracy(config)
        served = ev.stage_outputs(config)  # every stage from the cache now
        assert [s.record() for s in cycle_stats(served)] == want


def test_cli_config_naming_sparse_equals_the_sparse_shorthand(pruned, digits, tmp_path, capsys):
    model = load_model(pruned["digits-mlp"])
    sim = Simulator(model)
    cfg = _narrow(sim, digits.x_train[:200], "wrap")
    dense_path = cfg.save(tmp_path / "dense.json")
    sparse_path = sparse_config(cfg, sim.stages, 8, 3).save(tmp_path / "sparse.json")
    outs = []
    for argv, out in ((["--config", dense_path, "--sparse", "--pes", "8", "--index-bits", "3"], "a"),
                      (["--config", sparse_path], "b")):
        rc = main(["eval", str(pruned["digits-mlp"]), *map(str, argv), "--images", "200", "--report",
                   "--out", str(tmp_path / out)])
        assert rc == 0
        lines = capsys.readouterr().out.replace(str(tmp_path / out), "OUT").splitlines()[4:]  # past "config F:"
        # the per-layer report is named after the config file (dense.json vs sparse.json): all else equal
        assert sum("_eval_" in ln for ln in lines) == 2
        outs.append([ln for ln in lines if "_eval_" not in ln])
    assert outs[0] == outs[1]
    assert "sparse accuracy" in outs[0][-1] and "bit-identical to the dense integer run" in outs[0][-1]
    for suffix in (".csv", ".md"):
        name = f"digits-mlp-pruned-8pe-sparse{suffix}"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize("overflow, lanes, needle, rc", [
    ("wrap", 16, "bit-serial accuracy", 0),
    ("clip", 16, "DIFFERENT from", 0),  # signed bricks under clip: allowed to differ, said so
])
def test_cli_config_naming_bitserial_runs_it_and_checks_it(tmp_path, capsys, digits, overflow, lanes, needle, rc):
    model = MODELS / "digits-mlp.npz"
    sim = Simulator(load_model(model))
    cfg = _narrow(sim, digits.x_train[:200], overflow).with_engine("bitserial", ["fc1"], lanes=lanes)
    code = main(["eval", str(model), "--config", str(cfg.save(tmp_path / "c.json")), "--images", "100"])
    out = capsys.readouterr().out
    assert code == rc and needle in out.splitlines()[-1]
    assert "bit-serial datapath (Stripes)" in out and "sip_cycles" in out
    if overflow == "clip":
        assert "(allowed: clip on the bit-serial engine" in out


def test_cli_report_needs_an_integer_run(pruned, tmp_path, capsys):
    rc = main(["eval", str(pruned["digits-mlp"]), "--report", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "--report writes the per-layer table of the integer simulation: add --config CFG" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
