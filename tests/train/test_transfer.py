"""Transfer learning (fxpsim.train.transfer, experiments.transfer.train_from) and the digits28
loader: frozen layers bit-identical, the gradient through a frozen layer, a new head, the CLI."""

import numpy as np
import pytest

from gradcheck import numeric_grad

from fxpsim import FxpsimError
from fxpsim.cli import main
from fxpsim.experiments.transfer import train_from
from fxpsim.modelfile import load_model
from fxpsim.network import build_network
from fxpsim.train.data import load_dataset, resize_matrix, upsample_images
from fxpsim.train.losses import LOSSES
from fxpsim.train.trainer import TrainConfig, fit, train
from fxpsim.train.transfer import check_fits, frozen_layers, layer_groups, new_head, trainable

ARCH = "conv4x3p1-relu-maxpool2-fc16-relu-fc10"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((96, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 96)


def test_layer_groups_are_the_config_names():
    net = build_network("lenet5", (1, 28, 28), 10)
    groups = layer_groups(net)
    assert list(groups) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert [net.layers[r.start].kind for r in groups.values()] == ["conv2d"] * 2 + ["dense"] * 3
    assert groups["fc3"].stop == len(net.layers) and groups["conv1"].start == 0


@pytest.mark.parametrize("freeze", [("conv1",), ("fc1",), ("conv1", "fc1")])
def test_frozen_layers_stay_bit_identical_the_others_train(data, freeze):
    x, y = data
    net = build_network(ARCH, (1, 8, 8), 10, seed=1)
    before = net.state_dict()
    fit(net, x, y, TrainConfig(epochs=2, lr=1e-2, weight_decay=1e-3, l1=1e-4, val_fraction=0, freeze=freeze),
        progress=False)
    after = net.state_dict()
    frozen = frozen_layers(net, freeze)
    for key in before:
        same = np.array_equal(before[key], after[key])
        assert same == (int(key.split(".")[0]) in frozen), key  # fc1 frozen: conv1 below still trains


def test_gradient_flows_through_a_frozen_layer_finite_differences():
    rng = np.random.default_rng(3)
    net = build_network("conv2x3-relu-fc5-relu-fc3", (1, 5, 5), 3, seed=2).astype(np.float64)
    x, y = rng.standard_normal((4, 1, 5, 5)), rng.integers(0, 3, 4)
    loss = LOSSES["cross-entropy"]
    _, dlogits = loss(net.forward(x, training=True), y)
    net.backward(dlogits)
    keys = [k for k, _, _ in trainable(net, ("fc1",))]
    assert "2.W" not in keys and "0.W" in keys  # fc1 (layer 2) frozen, conv1 below it trained
    w = net.layers[0].params["W"]
    num = numeric_grad(lambda: loss(net.forward(x, training=True), y)[0], w)
    np.testing.assert_allclose(net.layers[0].grads["W"], num, rtol=1e-5, atol=1e-8)


def test_bad_freeze_names_and_nothing_left_are_one_line(data):
    x, y = data
    net = build_network(ARCH, (1, 8, 8), 10)
    with pytest.raises(FxpsimError, match="layers are conv1, fc1, fc2"):
        fit(net, x, y, TrainConfig(epochs=1, freeze=("conv3",)), progress=False)
    with pytest.raises(FxpsimError, match="leaves nothing to train"):
        fit(net, x, y, TrainConfig(epochs=1, freeze="conv1,fc1,fc2"), progress=False)
    bn = build_network("conv4x3p1-bn-relu-fc10", (1, 8, 8), 10)
    with pytest.raises(FxpsimError, match="BatchNorm"):
        frozen_layers(bn, "conv1")


def test_new_head_is_fresh_seeded_and_leaves_the_trunk_alone():
    net = build_network(ARCH, (1, 8, 8), 10, seed=4)
    state = net.state_dict()
    a, b = new_head(net, "fc2", 3, seed=7), new_head(net, "fc2", 3, seed=7)
    assert a.output_shape == (3,) and a.layers[-1].params["W"].shape == (16, 3)
    np.testing.assert_array_equal(a.layers[-1].params["W"], b.layers[-1].params["W"])
    assert not np.array_equal(a.layers[-1].params["W"], new_head(net, "fc2", 3, seed=8).layers[-1].params["W"])
    for key, value in a.state_dict().items():
        if not key.startswith(f"{len(a.layers) - 1}."):
            np.testing.assert_array_equal(value, state[key])
    a.layers[0].params["W"][...] = 0  # a copy: the original model is untouched
    np.testing.assert_array_equal(net.state_dict()["0.W"], state["0.W"])
    with pytest.raises(FxpsimError, match="only the last layer"):
        new_head(net, "fc1", 3)
    with pytest.raises(FxpsimError, match="reads inputs"):
        check_fits(net, "mnist", (1, 28, 28), 10)
    with pytest.raises(FxpsimError, match="--new-head"):
        check_fits(net, "x", (1, 8, 8), 3)


def test_resize_matrix_known_case_and_upsampling():
    np.testing.assert_array_equal(resize_matrix(4, 2), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    np.testing.assert_allclose(resize_matrix(20, 8).sum(axis=1), 1)
    np.testing.assert_array_equal(resize_matrix(8, 8), np.eye(8))
    x = np.full((2, 1, 8, 8), 16, np.uint8)
    up = upsample_images(x, 20, 28, 255 / 16)
    assert up.dtype == np.uint8 and up.shape == (2, 1, 28, 28)
    assert (up[:, :, 4:24, 4:24] == 255).all() and up.sum() == 2 * 400 * 255  # margins stay 0


def test_digits28_has_the_digits_split_upsampled():
    d, d28 = load_dataset("digits"), load_dataset("digits28")
    assert d28.name == "digits28" and d28.x_train.shape == (len(d.x_train), 1, 28, 28)
    np.testing.assert_array_equal(d28.y_test, d.y_test)
    np.testing.assert_array_equal(d28.x_test, upsample_images(d.x_test, 20, 28, 255 / 16))
    assert d28.split == d.split and d28.x_train[:, :, :4].max() == 0


def test_train_from_with_new_head_and_freeze_keeps_the_trunk(data):
    x, y = data
    digits = load_dataset("digits")
    base, _ = train(digits, ARCH, TrainConfig(epochs=1, seed=0), progress=False)
    small = type(digits)("digits", digits.x_train[:200], digits.y_train[:200], digits.x_test, digits.y_test,
                         digits.input_shape, digits.n_classes, digits.split)
    model, _ = train_from(small, base, "base.npz", TrainConfig(epochs=2, freeze=("conv1",)), "fc2")
    assert model.metadata["transfer"] == {"from": "base.npz", "from_dataset": "digits", "new_head": "fc2",
                                          "freeze": ["conv1"]}
    np.testing.assert_array_equal(model.network.state_dict()["0.W"], base.network.state_dict()["0.W"])
    assert not np.array_equal(model.network.state_dict()["4.W"], base.network.state_dict()["4.W"])  # fc1 trains


def test_cli_train_from_freeze_new_head_augment(tmp_path, capsys):
    base, out = tmp_path / "base.npz", tmp_path / "t.npz"
    assert main(["train", "--arch", ARCH, "--epochs", "1", "--out", str(base), "--quiet"]) == 0
    assert main(["train", "--from", str(base), "--new-head", "fc2", "--freeze", "conv1,fc1", "--epochs", "1",
                 "--augment", "shift=1,rotate=10", "--out", str(out), "--quiet"]) == 0
    m, b = load_model(out), load_model(base)
    assert m.metadata["rotate"] == 10 and m.metadata["shift"] == 1 and m.metadata["freeze"] == ["conv1", "fc1"]
    for k in ("0.W", "0.b", "4.W", "4.b"):
        np.testing.assert_array_equal(m.network.state_dict()[k], b.network.state_dict()[k])
    capsys.readouterr()
    for argv, words in ((["--new-head", "fc2"], "--from"), (["--shift", "1", "--augment", "shift=1"], "both"),
                        (["--augment", "rotate=90"], "45 degrees")):
        assert main(["train", "--epochs", "1", "--out", str(tmp_path / "x.npz"), "--quiet", *argv]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
