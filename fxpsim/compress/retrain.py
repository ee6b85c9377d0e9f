"""Network-level iterative pruning with retraining (Han et al., NIPS 2015).

Iterative magnitude pruning (Han 2015, Sec. 3): each iteration removes the
connections of every pruned layer below ``threshold = quality * std`` of
that layer's kept weights (:func:`fxpsim.compress.prune.threshold_mask`),
then retrains the survivors with the mask held; the quality grows from
iteration to iteration, so a weight once pruned stays pruned. With a
target sparsity the quality of an iteration is solved by bisection so that
the network's pruned fraction reaches the iteration's share of the target
(kept fraction ``(1 - S) ** (i / N)``, i = 1..N: geometric, each iteration
removes the same fraction of what is left). One quality for all layers (the
paper's single "quality parameter"); per-layer targets give each layer its
own quality.

Retraining (Sec. 3.1-3.3): the learning rate of the original training
divided by ``lr_divisor`` (Han: 1/10 for LeNet), L2 weight decay (the paper
finds L2 better than L1 after retraining), dropout scaled to the remaining
connections, ``D_r = D_o sqrt(C_ir / C_io)`` with ``C_i`` the connections of
the layer the dropout feeds. The mask is held by :class:`MaskHook`: the
gradients of pruned weights are zeroed before each optimizer step and the
mask is re-applied after it, so pruned weights are exactly zero at every
step (an optimizer with momentum or L2 cannot move them).

Weight sharing with retraining is :mod:`fxpsim.compress.finetune`.

Layers are named as in the simulator: ``fc1, fc2, ...`` for Dense and
``conv1, conv2, ...`` for Conv2D, in network order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import check
from ..train.trainer import evaluate, fit
from .prune import check_sparsity, mask_sparsity, sparsity_mask, threshold_mask

WEIGHTED = {"dense": "fc", "conv2d": "conv"}


def weighted_layers(network) -> dict[str, int]:
    """``{name: layer index}`` of the Dense (``fc<i>``) and Conv2D (``conv<i>``) layers, in order."""
    names, counts = {}, {"fc": 0, "conv": 0}
    for i, layer in enumerate(network.layers):
        prefix = WEIGHTED.get(layer.kind)
        if prefix is not None:
            counts[prefix] += 1
            names[f"{prefix}{counts[prefix]}"] = i
    return names


def select_layers(network, names=None) -> dict[str, int]:
    """The named weighted layers (None: all of them), or a one-line error naming what exists."""
    available = weighted_layers(network)
    check(bool(available), "the model has no Dense or Conv2D layer to prune")
    if names is None:
        return available
    names = [n.strip().lower() for n in names if n.strip()]
    check(bool(names), f"no layer named: give some of {', '.join(available)}")
    missing = [n for n in names if n not in available]
    check(not missing, f"layer(s) {', '.join(missing)} not in the model: its weighted layers are "
                       f"{', '.join(available)}")
    check(len(set(names)) == len(names), f"a layer is named twice in {', '.join(names)}")
    return {n: available[n] for n in available if n in names}  # network order


def weights_of(network, layers: dict[str, int]) -> dict[str, np.ndarray]:
    """``{name: W}`` by reference."""
    return {n: network.layers[i].params["W"] for n, i in layers.items()}


def masks_from_zeros(network, layers: dict[str, int]) -> dict[str, np.ndarray]:
    """The pruning masks a pruned model file implies: kept = non-zero weight."""
    return {n: w != 0 for n, w in weights_of(network, layers).items()}


def sparsity_of(masks: dict[str, np.ndarray]) -> float:
    """Pruned fraction over all weights of the masked layers."""
    total = sum(m.size for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def _threshold_masks(weights, masks, qualities) -> dict[str, np.ndarray]:
    return {n: threshold_mask(weights[n], qualities[n], masks[n]) for n in weights}


def solve_quality(weights: dict, masks: dict, target: float, layers=None, tol: float = 1e-7) -> float:
    """The smallest quality q whose masks ``|w| >= q std`` prune at least ``target`` of ``layers``.

    Bisection on q (the pruned fraction grows with q). ``layers`` (default
    all) are the names that share the quality; the others are left as they are.
    """
    layers = list(weights) if layers is None else list(layers)
    w = {n: np.asarray(weights[n], np.float64) for n in layers}
    m = {n: masks[n] for n in layers}
    if sparsity_of(m) >= target:
        return 0.0
    lo, hi = 0.0, 1.0
    while sparsity_of(_threshold_masks(w, m, dict.fromkeys(w, hi))) < target:
        hi *= 2
        check(hi < 1e6, f"sparsity {target} cannot be reached by thresholds (too many equal weights)")
    while hi - lo > tol * max(1.0, hi):
        mid = (lo + hi) / 2
        if sparsity_of(_threshold_masks(w, m, dict.fromkeys(w, mid))) >= target:
            hi = mid
        else:
            lo = mid
    return hi


class MaskHook:
    """Holds pruning masks during :func:`fxpsim.train.trainer.fit` (pass its two methods)."""

    def __init__(self, network, layers: dict[str, int], masks: dict[str, np.ndarray]):
        self.pairs = []
        for n, i in layers.items():
            layer = network.layers[i]
            m = masks[n].astype(layer.params["W"].dtype)
            self.pairs.append((layer.params["W"], layer.grads["W"], m))

    def after_backward(self) -> None:
        """Zero the gradients of pruned weights (so momentum/Adam state stays zero for them)."""
        for _, g, m in self.pairs:
            g *= m

    def after_step(self) -> None:
        """Re-apply the masks (L2 decay or momentum cannot revive a pruned weight)."""
        for w, _, m in self.pairs:
            w *= m

    def apply(self) -> None:
        self.after_step()


def _connections(network, layers) -> dict[int, int]:
    return {i: int(np.count_nonzero(network.layers[i].params["W"])) for i in layers.values()}


def scale_dropout(network, original_p: dict[int, float], original_c: dict[int, int]) -> dict[int, float]:
    """Han's ``D_r = D_o sqrt(C_ir / C_io)`` for every Dropout layer; returns ``{index: new p}``.

    ``C_i`` counts the non-zero connections of the first weighted layer after
    the dropout (the layer whose inputs it drops); a dropout with no pruned
    layer after it keeps its rate.
    """
    new = {}
    weighted = [i for i, layer in enumerate(network.layers) if layer.kind in WEIGHTED]
    for i, p in original_p.items():
        nxt = next((j for j in weighted if j > i), None)
        if nxt is None or nxt not in original_c or original_c[nxt] == 0:
            continue
        c_now = int(np.count_nonzero(network.layers[nxt].params["W"]))
        network.layers[i].p = float(p * math.sqrt(c_now / original_c[nxt]))
        new[i] = network.layers[i].p
    return new


@dataclass(frozen=True)
class PruneConfig:
    """Iterative pruning: ``target_sparsity`` (float, or ``{layer: sparsity}``) or ``quality``.

    ``iterations`` prune-retrain rounds, ``retrain_epochs`` per round (0: prune
    only), retraining with ``train`` (a :class:`TrainConfig`) whose lr is
    divided by ``lr_divisor`` and whose L2 is ``weight_decay``.
    """

    target_sparsity: float | dict | None = None
    quality: float | None = None
    iterations: int = 3
    retrain_epochs: int = 2
    lr_divisor: float = 10.0
    weight_decay: float = 1e-5
    final_epochs: int = 0
    """Extra retraining epochs after the last round (Han retrains the final sparsity longest)."""

    def __post_init__(self) -> None:
        check((self.target_sparsity is None) != (self.quality is None),
              "give exactly one of target sparsity and quality")
        if isinstance(self.target_sparsity, dict):
            for n, s in self.target_sparsity.items():
                check_sparsity(s)
        elif self.target_sparsity is not None:
            object.__setattr__(self, "target_sparsity", check_sparsity(self.target_sparsity))
        if self.quality is not None:
            q = float(self.quality)
            check(math.isfinite(q) and q > 0, f"quality={self.quality!r} must be a number > 0, e.g. 1.0")
        check(isinstance(self.iterations, int) and self.iterations >= 1,
              f"iterations={self.iterations!r} must be a whole number >= 1")
        check(isinstance(self.retrain_epochs, int) and self.retrain_epochs >= 0,
              f"retrain_epochs={self.retrain_epochs!r} must be a whole number >= 0")
        check(isinstance(self.final_epochs, int) and self.final_epochs >= 0,
              f"final_epochs={self.final_epochs!r} must be a whole number >= 0")
        check(self.lr_divisor > 0, f"lr_divisor={self.lr_divisor!r} must be > 0 (Han: 10 for LeNet)")
        check(self.weight_decay >= 0, f"weight_decay={self.weight_decay!r} must be >= 0")


def _accuracy(network, x, y):
    return evaluate(network, x, y)[1] if x is not None and len(x) else None


def iterative_prune(network, layers: dict[str, int], config: PruneConfig, train_config, x, y,
                    x_val=None, y_val=None, *, masks=None, progress: bool = False, log=None):
    """Prune ``layers`` of ``network`` in place, retraining after each round.

    ``train_config``: the retraining :class:`TrainConfig` before Han's
    changes (its lr is divided by ``config.lr_divisor``, its L2 set to
    ``config.weight_decay``, epochs = ``config.retrain_epochs``). Returns
    ``(masks, records)``; the masks start from the zeros of the weights (or
    ``masks``); one record per round (quality, sparsity, validation
    accuracy after pruning and after retraining, dropout rates).
    """
    weights = weights_of(network, layers)
    # a weight that is already zero is a pruned connection: it stays pruned
    masks = masks_from_zeros(network, layers) if masks is None else dict(masks)
    dropout_p = {i: layer.p for i, layer in enumerate(network.layers) if layer.kind == "dropout"}
    original_c = _connections(network, layers)
    rt = replace(train_config, lr=train_config.lr / config.lr_divisor, weight_decay=config.weight_decay,
                 l1=0.0, epochs=max(1, config.retrain_epochs), patience=None)
    records = []
    n_it = config.iterations
    for it in range(1, n_it + 1):
        if config.quality is not None:
            q = config.quality * it / n_it
            qualities = dict.fromkeys(weights, q)
        elif isinstance(config.target_sparsity, dict):
            qualities = {}
            for n in weights:
                s = config.target_sparsity.get(n)
                goal = 1.0 - (1.0 - s) ** (it / n_it) if s is not None else 0.0
                qualities[n] = solve_quality(weights, masks, goal, [n])
        else:
            goal = 1.0 - (1.0 - config.target_sparsity) ** (it / n_it)
            q = solve_quality(weights, masks, goal)
            qualities = dict.fromkeys(weights, q)
        masks = _threshold_masks(weights, masks, qualities)
        hook = MaskHook(network, layers, masks)
        hook.apply()
        new_p = scale_dropout(network, dropout_p, original_c)
        rec = {"iteration": it, "quality": float(np.mean(list(qualities.values()))),
               "sparsity": sparsity_of(masks),
               **{f"{n}_kept_pct": 100 * (1 - mask_sparsity(m)) for n, m in masks.items()},
               "val_acc_pruned": _accuracy(network, x_val, y_val)}
        if config.retrain_epochs > 0:
            fit(network, x, y, rt, x_val, y_val, progress=progress, log=log,
                after_backward=hook.after_backward, after_step=hook.after_step)
            hook.apply()  # fit may have restored the best epoch's state: it was masked as well
        if it == n_it and config.final_epochs > 0:
            fit(network, x, y, replace(rt, epochs=config.final_epochs), x_val, y_val, progress=progress, log=log,
                after_backward=hook.after_backward, after_step=hook.after_step)
            hook.apply()
        rec["val_acc_retrained"] = _accuracy(network, x_val, y_val)
        rec["dropout_p"] = ",".join(f"{p:.3f}" for p in new_p.values()) or "-"
        records.append(rec)
        if log is not None:
            log(f"prune round {it}/{n_it}: quality {rec['quality']:.3f}, sparsity {rec['sparsity']:.4f}, "
                f"val acc pruned {rec['val_acc_pruned']}, retrained {rec['val_acc_retrained']}")
    return masks, records


def sensitivity(network, layers: dict[str, int], x, y, ratios) -> list[dict]:
    """Han's Fig. 5 without retraining: accuracy when one layer alone is pruned to each ratio.

    Each layer's weights are restored afterwards. Pruning at a ratio keeps the
    largest-magnitude ``1 - ratio`` of the layer (= a threshold q std with q
    solved for that ratio).
    """
    rows = []
    base = _accuracy(network, x, y)
    for n, i in layers.items():
        w = network.layers[i].params["W"]
        saved = w.copy()
        for r in ratios:
            w[...] = np.where(sparsity_mask(saved, r), saved, 0) if r > 0 else saved
            acc = _accuracy(network, x, y) if r > 0 else base
            rows.append({"layer": n, "sparsity": float(r), "accuracy": acc, "accuracy_loss": base - acc})
        w[...] = saved
    return rows
