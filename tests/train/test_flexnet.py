"""FlexNet (fxpsim.train.flexnet): bit-progressive training, one BatchNorm set per width, one model file.

The shared weights must be the same for every width and the BatchNorm re-fit must leave them
bit-identical; the model file must keep every set and refuse a damaged one; ``fxpsim eval
--config``, the Python API and the training forward must all run the set of the config's widths.
No new backward: FlexNet trains through QATNetwork's STE; the check below is that of the
BatchNorm-only path it adds (only gamma and beta move, with their folded gradients).
"""

import zipfile

import numpy as np
import pytest
from gradcheck import numeric_grad

import fxpsim
from fxpsim.cli import main as cli_main
from fxpsim.config import NetworkConfig
from fxpsim.errors import FxpsimError
from fxpsim.graph.build import build_network
from fxpsim.modelfile import Model, bn_set_key, bn_state_keys, load_model, save_model, select_bn_set
from fxpsim.simulate import Simulator, model_record
from fxpsim.train.data import Preprocess, load_dataset, train_val_split
from fxpsim.train.flexnet import BatchNormOnly, FlexNetRun, recalibrate_bn, train_flexnet, width_config
from fxpsim.train.transfer import clone
from fxpsim.train.qat import QATNetwork
from fxpsim.train.trainer import TrainConfig, evaluate, train

SPEC = "conv4x3p1-bn-relu-maxpool2-fc12-bn-relu-fc10"


@pytest.fixture(scope="module")
def flex(tmp_path_factory):
    """A small float network with BatchNorm on the digits, its FlexNet at 6 and 3 bits, saved."""
    data = load_dataset("digits")
    base = TrainConfig(epochs=2, seed=0, threads=1)
    model, _ = train(data, SPEC, base, progress=False)
    prep = model.preprocess
    x_tr, y_tr, x_val, y_val = train_val_split(data.x_train, data.y_train, base.val_fraction, base.seed)
    splits = (prep.apply(x_tr), y_tr, prep.apply(x_val), y_val)
    run = FlexNetRun(widths=(6, 3), epochs=1, bn_epochs=1)
    result = train_flexnet(model, splits, x_val[:200], base, run)
    path = tmp_path_factory.mktemp("flex") / "flex.npz"
    save_model(path, result.model)
    cfgs = {}
    for b, cfg in result.configs.items():
        cfgs[b] = path.parent / f"w{b}.json"
        cfg.for_model(model_record(path, result.model)).save(cfgs[b])
    return data, model, splits, run, base, result, path, cfgs


def test_weights_shared_and_sets_kept_through_the_file(flex):
    data, model, splits, run, base, result, path, _ = flex
    loaded = load_model(path)
    assert sorted(loaded.bn_sets) == ["w3a3", "w6a6"]
    bn = set(bn_state_keys(loaded.network))
    state = loaded.network.state_dict()
    for key, bnset in result.model.bn_sets.items():
        assert set(bnset) == bn
        for k, v in bnset.items():
            np.testing.assert_array_equal(loaded.bn_sets[key][k], v)
        picked = select_bn_set(loaded, result.configs[int(key[1])]).network.state_dict()
        for k in state:  # the conv/fc weights are the same for every width, the BatchNorm state is the set's
            np.testing.assert_array_equal(picked[k], bnset[k] if k in bn else state[k])
    for name in ("gamma", "running_mean", "running_var"):  # one set per width: trained and re-estimated apart
        assert any(not np.array_equal(result.model.bn_sets["w6a6"][k], result.model.bn_sets["w3a3"][k])
                   for k in bn if k.endswith(name))
    assert loaded.metadata["flexnet"]["widths"] == [6, 3]


def test_training_repeats_bit_for_bit(flex):
    data, model, splits, run, base, result, _, _ = flex
    again = train_flexnet(model, splits, _cal(data, base), base, run)
    for key in result.model.bn_sets:
        for k, v in result.model.bn_sets[key].items():
            np.testing.assert_array_equal(again.model.bn_sets[key][k], v)
    for k, v in result.model.network.state_dict().items():
        np.testing.assert_array_equal(again.model.network.state_dict()[k], v)


def _cal(data, base):
    return train_val_split(data.x_train, data.y_train, base.val_fraction, base.seed)[2][:200]


def test_recalibration_at_16_bits_gives_the_float_batch_statistics(flex):
    """At 16 bits the integer run feeds every BatchNorm almost what the float network does: the re-estimated
    statistics are the float network's statistics over the images (each BatchNorm on its batch, in order)."""
    data, model, splits, _, _, _, _, _ = flex
    x = splits[0]
    net = clone(model.network)
    assert recalibrate_bn(net, width_config(model, data.x_train[:200], 16, acc_bits=48), x, batch_size=300) == 2
    h = np.asarray(x, np.float64)
    for j, layer in enumerate(clone(model.network).layers):
        if layer.kind == "batchnorm":
            axes = (0, 2, 3) if h.ndim == 4 else (0,)
            np.testing.assert_allclose(net.layers[j].buffers["running_mean"], h.mean(axis=axes), atol=2e-3)
            np.testing.assert_allclose(net.layers[j].buffers["running_var"], h.var(axis=axes), rtol=2e-3, atol=2e-3)
            assert not np.allclose(layer.buffers["running_var"], h.var(axis=axes), rtol=1e-3)  # they moved
        h = layer.forward(h, training=layer.kind == "batchnorm")


def test_eval_api_and_training_forward_run_the_configs_set(flex, capsys):
    data, _, _, _, _, result, path, cfgs = flex
    x_te = result.model.preprocess.apply(data.x_test)
    for b, cfg_path in cfgs.items():
        cfg = NetworkConfig.load(cfg_path)
        picked = select_bn_set(result.model, cfg)
        acc = Simulator(picked).simulate(data.x_test, cfg, data.y_test).accuracy
        assert evaluate(QATNetwork(picked.network, cfg), x_te, data.y_test)[1] == acc  # fake quant == integer
        assert fxpsim.load(path).simulate(cfg).accuracy == acc
        assert cli_main(["eval", str(path), "--config", str(cfg_path)]) == 0
        assert f"fixed-point accuracy {acc * 100:.2f} %" in capsys.readouterr().out
    other = Simulator(select_bn_set(result.model, NetworkConfig.load(cfgs[6]))).simulate(
        data.x_test, NetworkConfig.load(cfgs[3]), data.y_test).accuracy
    assert other != Simulator(select_bn_set(result.model, NetworkConfig.load(cfgs[3]))).simulate(
        data.x_test, NetworkConfig.load(cfgs[3]), data.y_test).accuracy  # the set matters


def test_a_width_without_a_set_is_one_line(flex, tmp_path, capsys):
    data, _, _, _, _, result, path, cfgs = flex
    cfg = NetworkConfig.load(cfgs[3])
    five = cfg.with_all(fmt_w="Q2.3", fmt_x="Q3.2", fmt_y="Q3.2")
    five.save(tmp_path / "w5.json")
    assert cli_main(["eval", str(path), "--config", str(tmp_path / "w5.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "w5a5" in err and "w6a6, w3a3" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    mixed = cfg.with_layer(0, fmt_w="Q2.4")
    with pytest.raises(FxpsimError, match=r"weight widths \[3, 6\].*w6a6, w3a3"):
        select_bn_set(result.model, mixed)
    with pytest.raises(FxpsimError, match="w5a5"):
        fxpsim.load(path).simulate(five)
    found = fxpsim.load(path).search(acc_bits=16, samples=60, test_samples=60)  # mixed widths: the set it holds
    assert found.test.accuracy == Simulator(result.model).simulate(data.x_test[:60], found.config,
                                                                    data.y_test[:60]).accuracy


def _rewrite(src, dst, drop=(), add=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if item.filename not in drop:
                zout.writestr(item, zin.read(item.filename))
        for name, arr in (add or {}).items():
            with zout.open(name + ".npy", "w") as f:
                np.lib.format.write_array(f, arr)


@pytest.mark.parametrize("case,needle", [
    ("missing", "missing ['bnset/w3a3/1.beta']"),
    ("shape", "has shape (5,)"),
    ("dtype", "not float16/32/64"),
    ("nan", "NaN/inf"),
])
def test_reader_checks_every_bn_set_array(flex, tmp_path, case, needle):
    path = flex[6]
    bad = tmp_path / "bad.npz"
    name = "bnset/w3a3/1.beta"
    if case == "missing":
        _rewrite(path, bad, drop=(name + ".npy",))
    else:
        arr = {"shape": np.zeros(5, np.float32), "dtype": np.zeros(4, np.int64),
               "nan": np.full(4, np.nan, np.float32)}[case]
        _rewrite(path, bad, drop=(name + ".npy",), add={name: arr})
    with pytest.raises(FxpsimError, match="not a readable fxpsim model file") as exc:
        load_model(bad)
    assert needle in str(exc.value)


def test_bn_sets_need_batchnorm_and_match_its_state(tmp_path):
    net = build_network("fc5-relu-fc3", (1, 2, 2), 3, seed=0)
    prep = Preprocess.fit(np.ones((2, 1, 2, 2)), "none")
    with pytest.raises(FxpsimError, match="no BatchNorm layer"):
        save_model(tmp_path / "m.npz", Model(net, prep, {}, {"w4a4": {}}))
    bn_net = build_network("fc5-bn-relu-fc3", (1, 2, 2), 3, seed=0)
    with pytest.raises(FxpsimError, match="the network's BatchNorm state"):
        save_model(tmp_path / "m.npz", Model(bn_net, prep, {}, {"w4a4": {"1.gamma": np.ones(5, np.float32)}}))
    with pytest.raises(FxpsimError, match="is not w<W>a<A>"):
        save_model(tmp_path / "m.npz", Model(bn_net, prep, {}, {"four": {}}))
    assert bn_set_key(4, 3) == "w4a3"


def test_batchnorm_only_moves_gamma_and_beta_with_their_gradients():
    """The BatchNorm-only path's gradients (folded BatchNorm, STE surrogate) against central differences."""
    from .test_qat import net64, uniform_config  # noqa: PLC0415  (the QAT tests' helpers)

    net = net64("conv3x3p1-bn-relu-maxpool2-fc5-bn-relu-fc4", (2, 6, 6))
    only = BatchNormOnly(QATNetwork(net, uniform_config(net), quantize=False))
    kinds = {net.layers[int(k.split(".")[0])].kind for k, _, _ in only.params_and_grads()}
    assert kinds == {"batchnorm"} and {k.split(".")[1] for k, _, _ in only.params_and_grads()} == {"gamma", "beta"}
    rng = np.random.default_rng(3)
    x = 1.5 * rng.standard_normal((3, 2, 6, 6))
    g = rng.standard_normal(only.forward(x, training=True).shape)
    only.backward(g)
    analytic = {k: grad.copy() for k, _, grad in only.params_and_grads()}
    for key, p, _ in only.params_and_grads():
        np.testing.assert_allclose(analytic[key], numeric_grad(lambda: float(np.sum(only.forward(x) * g)), p),
                                   rtol=1e-5, atol=1e-8, err_msg=key)


@pytest.mark.parametrize("kw,needle", [
    ({"widths": (3, 6)}, "strictly decreasing"), ({"widths": (8, 1)}, "2..16"), ({"epochs": 0}, "epochs=0"),
    ({"bn_epochs": -1}, "bn_epochs=-1"), ({"lr": 2.0}, "lr=2.0"), ({"acc_bits": 4}, "acc_bits=4"),
])
def test_run_settings_refuse_bad_values(kw, needle):
    with pytest.raises(FxpsimError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        FlexNetRun(**kw)


def test_a_network_without_batchnorm_is_refused():
    data = load_dataset("digits")
    model, _ = train(data, "fc8-relu-fc10", TrainConfig(epochs=1, threads=1), progress=False)
    with pytest.raises(FxpsimError, match="no BatchNorm layer"):
        train_flexnet(model, (None, None, np.zeros(1), None), data.x_train[:10], TrainConfig(), FlexNetRun())
