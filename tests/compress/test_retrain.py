"""Network-level pruning with retraining (Han et al. 2015) and the weight-sharing fine-tune (Deep Compression)."""

import math

import numpy as np
import pytest

from fxpsim.compress.finetune import SharingHook, fine_tune_shared, share_weights
from fxpsim.compress.retrain import (MaskHook, PruneConfig, iterative_prune, masks_from_zeros, scale_dropout,
                                     select_layers, sensitivity, solve_quality, sparsity_of, weighted_layers)
from fxpsim.errors import FxpsimError
from fxpsim.network import build_network
from fxpsim.train.trainer import TrainConfig, evaluate, fit


def _blobs(n=600, d=20, classes=3, seed=0, spread=3.0):
    """Synthetic data: Gaussian classes whose means are ``spread`` apart (3: separable, 0.7: overlapping)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, spread, (classes, d))
    y = rng.integers(0, classes, n)
    x = (means[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return x, y


def _trained(spec="fc32-relu-fc16-relu-fc3", seed=0, epochs=3, spread=3.0, batch_size=64):
    x, y = _blobs(seed=seed, spread=spread)
    net = build_network(spec, (20,), 3, seed=seed)
    fit(net, x[:500], y[:500], TrainConfig(epochs=epochs, lr=3e-3, val_fraction=0.0, batch_size=batch_size),
        progress=False)
    return net, x, y


def test_layer_names_follow_the_simulator_and_unknown_names_fail():
    net = build_network("conv4x3-relu-maxpool2-fc8-relu-fc3", (1, 8, 8), 3)
    assert weighted_layers(net) == {"conv1": 0, "fc1": 4, "fc2": 6}
    assert list(select_layers(net, ["fc2", "conv1"])) == ["conv1", "fc2"]  # network order
    with pytest.raises(FxpsimError, match="fc9.*not in the model.*conv1, fc1, fc2"):
        select_layers(net, ["fc9"])


@pytest.mark.parametrize("target", [0.0, 0.3, 0.9, 0.97])
def test_solve_quality_reaches_the_target_with_one_quality(target):
    rng = np.random.default_rng(1)
    weights = {"a": rng.normal(0, 1, (40, 30)), "b": rng.normal(0, 0.1, (30, 10))}
    masks = {n: np.ones(w.shape, bool) for n, w in weights.items()}
    q = solve_quality(weights, masks, target)
    got = {n: np.abs(w) >= q * w.std() for n, w in weights.items()}
    s = sparsity_of(got)
    assert s >= target - 1e-12
    assert s - target <= 2 / 1500  # the smallest q: one weight more would undershoot
    # the threshold scales with each layer's std, so both layers lose about the same share
    if target > 0:
        assert abs(sparsity_of({"a": got["a"]}) - sparsity_of({"b": got["b"]})) < 0.1


def test_mask_hook_keeps_pruned_weights_exactly_zero_under_momentum_and_l2():
    net, x, y = _trained()
    layers = weighted_layers(net)
    w0 = {n: net.layers[i].params["W"].copy() for n, i in layers.items()}
    masks = {n: np.abs(w) >= np.quantile(np.abs(w), 0.7) for n, w in w0.items()}
    hook = MaskHook(net, layers, masks)
    hook.apply()
    cfg = TrainConfig(optimizer="momentum", lr=1e-2, weight_decay=1e-3, epochs=2, val_fraction=0.0)
    fit(net, x, y, cfg, progress=False, after_backward=hook.after_backward, after_step=hook.after_step)
    for n, i in layers.items():
        w = net.layers[i].params["W"]
        assert np.all(w[~masks[n]] == 0)
        assert not np.array_equal(w[masks[n]], w0[n][masks[n]])  # the survivors did retrain
    # without the hook, momentum + L2 would move the zeros: the hook is what holds them
    fit(net, x, y, cfg, progress=False)
    assert any(np.any(net.layers[i].params["W"][~masks[n]] != 0) for n, i in layers.items())


def test_iterative_pruning_reaches_target_keeps_masks_nested_and_retraining_helps():
    net, x, y = _trained("fc64-relu-fc32-relu-fc3", epochs=4, spread=0.7, batch_size=16)
    layers = weighted_layers(net)
    base = TrainConfig(lr=3e-3, val_fraction=0.0, seed=0, batch_size=16)
    cfg = PruneConfig(target_sparsity=0.95, iterations=3, retrain_epochs=3, lr_divisor=3)
    masks, rec = iterative_prune(net, layers, cfg, base, x[:500], y[:500], x[500:], y[500:])
    assert abs(sparsity_of(masks) - 0.95) < 2e-3
    got = masks_from_zeros(net, layers)
    assert all(np.array_equal(got[n] | masks[n], masks[n]) for n in layers)  # zeros where pruned
    kept = [1 - r["sparsity"] for r in rec]
    np.testing.assert_allclose(kept, [0.05 ** (i / 3) for i in (1, 2, 3)], atol=3e-3)  # geometric schedule
    # round 2 removes most of what is left and costs accuracy; retraining wins most of it back
    assert rec[1]["val_acc_pruned"] < 0.7 and rec[1]["val_acc_retrained"] > rec[1]["val_acc_pruned"] + 0.15
    assert evaluate(net, x[500:], y[500:])[1] >= 0.75


def test_quality_mode_grows_quality_linearly_and_per_layer_targets_hold():
    net, x, y = _trained()
    layers = weighted_layers(net)
    base = TrainConfig(lr=1e-3, val_fraction=0.0)
    _, rec = iterative_prune(net, layers, PruneConfig(quality=1.2, iterations=3, retrain_epochs=0), base, x, y)
    assert [r["quality"] for r in rec] == pytest.approx([0.4, 0.8, 1.2])
    assert all(a["sparsity"] < b["sparsity"] for a, b in zip(rec, rec[1:]))
    net, x, y = _trained()
    per = {"fc1": 0.8, "fc3": 0.5}
    masks, _ = iterative_prune(net, layers, PruneConfig(target_sparsity=per, iterations=2, retrain_epochs=1),
                               base, x, y)
    assert sparsity_of({"fc1": masks["fc1"]}) == pytest.approx(0.8, abs=2 / 640)
    assert sparsity_of({"fc3": masks["fc3"]}) == pytest.approx(0.5, abs=2 / 48)
    assert sparsity_of({"fc2": masks["fc2"]}) == 0.0


def test_dropout_is_scaled_by_the_square_root_of_the_remaining_connections():
    net = build_network("fc32-relu-dropout50-fc3", (20,), 3)
    layers = weighted_layers(net)
    orig = {i: int(np.count_nonzero(net.layers[i].params["W"])) for i in layers.values()}
    w = net.layers[layers["fc2"]].params["W"]
    w[:, :] = np.where(np.arange(w.size).reshape(w.shape) % 4 == 0, w, 0)  # keep 1/4
    new = scale_dropout(net, {2: 0.5}, orig)
    assert new == {2: pytest.approx(0.5 * math.sqrt(0.25))}
    assert net.layers[2].p == pytest.approx(0.25)


def test_sensitivity_restores_weights_and_degrades_with_the_ratio():
    net, x, y = _trained()
    layers = weighted_layers(net)
    before = {n: net.layers[i].params["W"].copy() for n, i in layers.items()}
    rows = sensitivity(net, layers, x, y, (0.0, 0.5, 0.99))
    for n, i in layers.items():
        np.testing.assert_array_equal(net.layers[i].params["W"], before[n])
    base = evaluate(net, x, y)[1]
    assert all(r["accuracy"] == base for r in rows if r["sparsity"] == 0)
    assert min(r["accuracy"] for r in rows if r["sparsity"] == 0.99) < base


def test_sharing_hook_steps_each_centroid_by_the_sum_of_its_weights_gradients():
    net, x, y = _trained()
    layers = {"fc1": weighted_layers(net)["fc1"]}
    layer = net.layers[layers["fc1"]]
    shared = share_weights(net, layers, {"fc1": 4})
    assert len(np.unique(layer.params["W"][layer.params["W"] != 0])) <= 4
    hook = SharingHook(net, layers, shared, "sgd", 0.01)
    g = np.random.default_rng(0).normal(size=layer.grads["W"].shape).astype(layer.grads["W"].dtype)
    layer.grads["W"][...] = g
    hook.after_backward()
    hook.after_step()
    labels = shared["fc1"].labels
    for k in range(4):
        expect = shared["fc1"].centroids[k] - 0.01 * g[labels == k].astype(np.float64).sum()
        np.testing.assert_allclose(layer.params["W"][labels == k], expect, rtol=1e-6)


def test_fine_tune_keeps_zero_pattern_and_cluster_count():
    net, x, y = _trained()
    layers = weighted_layers(net)
    w = net.layers[layers["fc1"]].params["W"]
    w[np.abs(w) < np.quantile(np.abs(w), 0.5)] = 0
    zeros = {n: net.layers[i].params["W"] == 0 for n, i in layers.items()}
    shared = share_weights(net, layers, dict.fromkeys(layers, 8))
    tuned = fine_tune_shared(net, layers, shared, TrainConfig(lr=1e-3, val_fraction=0.0), 1, x, y)
    for n, i in layers.items():
        wn = net.layers[i].params["W"]
        np.testing.assert_array_equal(wn == 0, zeros[n])
        np.testing.assert_array_equal(wn, tuned[n].weights().astype(wn.dtype))
        assert not np.allclose(tuned[n].centroids, shared[n].centroids)
    with pytest.raises(FxpsimError, match="clusters=9999 for layer fc1 is outside"):
        share_weights(net, layers, dict.fromkeys(layers, 9999))
