"""Deep Compression's pipeline on a model, sized for EIE's PEs (Han et al., NIPS 2015 / ICLR 2016 / ISCA 2016).

What ``fxpsim compress`` reports, as a library function testable without
argv: :func:`run_compress` takes a frozen :class:`CompressStudy` and
returns a :class:`CompressReport` that the caller writes. The stages:
optionally prune with retraining (:func:`fxpsim.experiments.prune.prune_network`;
without a target the model's zeros are the pruning), share weights by
k-means (optionally fine-tuning the centroids, Deep Compression Sec. 3.3),
Huffman code, and size every layer in EIE's per-PE CSC
(:func:`fxpsim.sparse.pipeline.compress_layer`: weights, non-zeros,
index bits, padding entries, bits per weight, storage, cycles per PE
min/mean/max with zero activations skipped); per stage the network's
storage, compression rate and test error, beside Han et al.'s figures
when the model is one of their LeNets. A rank makes the truncated-SVD
table of the FC layers (:func:`lowrank_table`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ..compress.finetune import fine_tune_shared, share_weights
from ..compress.lowrank import multiplications, truncated_svd
from ..compress.prune import check_sparsity
from ..compress.retrain import masks_from_zeros, sparsity_of
from ..compress.sharing import INITS
from ..errors import check
from ..graph import Network
from ..graph.geometry import conv_out_size
from ..datapath.core import im2col
from ..modelfile import Model
from ..sparse.csc import check_index_bits
from ..sparse.pe import check_pes
from ..sparse.pipeline import compress_layer, network_stages
from .prune import Retraining, check_targets, float_accuracy, load_for_retraining, prune_network

__all__ = ["HAN", "CompressReport", "CompressStudy", "check_clusters", "layer_inputs", "lowrank_table",
           "run_compress"]

# Han et al. 2015 (Table 1: error, parameters kept, 12x) and Deep Compression 2016 (Table 1: 40x / 39x)
HAN = {
    "lenet300": {"paper_net": "LeNet-300-100", "paper_weights": "267K", "paper_kept_pct": 8.0,
                 "paper_error_ref": 1.64, "paper_error_pruned": 1.59, "paper_error_compressed": 1.58,
                 "paper_rate_pruned": 12.0, "paper_rate_compressed": 40.0, "paper_kb_ref": 1070.0,
                 "paper_kb_compressed": 27.0},
    "lenet5-caffe": {"paper_net": "LeNet-5 (Caffe, 431K)", "paper_weights": "431K", "paper_kept_pct": 8.0,
                     "paper_error_ref": 0.80, "paper_error_pruned": 0.77, "paper_error_compressed": 0.74,
                     "paper_rate_pruned": 12.0, "paper_rate_compressed": 39.0, "paper_kb_ref": 1720.0,
                     "paper_kb_compressed": 44.0},
}
HAN["lenet5"] = dict(HAN["lenet5-caffe"], paper_net="LeNet-5 (Caffe, 431K; this model is LeCun's 61K LeNet-5)")


@dataclass(frozen=True, slots=True)
class CompressStudy:
    """One compression run of the model file ``model``.

    ``prune``: target sparsity (a float or ``{layer: sparsity}``) to prune
    to first with ``retraining``, None: the model's zeros are the pruning.
    EIE: ``pes`` PEs (rows interleaved), relative indices of ``index_bits``
    (``conv_index_bits`` for conv layers, None: the same). Sharing:
    ``clusters`` per FC layer (``conv_clusters`` per conv layer), k-means
    ``init``, ``fine_tune_epochs`` of centroid retraining (lr = original /
    ``retraining.lr_divisor``). ``huffman`` adds the Huffman stage;
    ``value_bits``: bits of a value before sharing and of the dense
    baseline; ``rank``: add the rank-K SVD table of the FC layers;
    ``samples``: test images the PE cycles are counted on.
    """

    model: Path
    retraining: Retraining = Retraining()
    prune: float | dict | None = None
    pes: int = 64
    index_bits: int = 4
    conv_index_bits: int | None = None
    clusters: int = 16
    conv_clusters: int | None = None
    init: str = "linear"
    fine_tune_epochs: int = 0
    huffman: bool = False
    value_bits: int = 32
    rank: int | None = None
    samples: int = 500

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        if isinstance(self.prune, dict):
            object.__setattr__(self, "prune", {str(n).strip().lower(): check_sparsity(s)
                                               for n, s in self.prune.items()})
        elif self.prune is not None:
            object.__setattr__(self, "prune", check_sparsity(self.prune))
        check_pes(self.pes)
        for name in ("index_bits", "conv_index_bits"):
            if getattr(self, name) is not None:
                check_index_bits(getattr(self, name))
        for name in ("clusters", "conv_clusters"):
            k = getattr(self, name)
            check(k is None or (isinstance(k, int) and not isinstance(k, bool) and k >= 2),
                  f"{name}={k!r} must be a whole number >= 2: e.g. 16 for 4-bit indices")
        check(self.init in INITS, f"init={self.init!r} is not one of {', '.join(INITS)}: 'linear' is recommended")
        check(isinstance(self.fine_tune_epochs, int) and self.fine_tune_epochs >= 0,
              f"fine_tune_epochs={self.fine_tune_epochs!r} must be a whole number >= 0")
        check(isinstance(self.value_bits, int) and 1 <= self.value_bits <= 64,
              f"value_bits={self.value_bits!r} must be in [1, 64]")
        check(isinstance(self.samples, int) and self.samples >= 1, f"samples={self.samples!r} must be >= 1")
        check(self.rank is None or (isinstance(self.rank, int) and self.rank >= 1),
              f"rank={self.rank!r} must be >= 1")

    @property
    def name(self) -> str:
        """The report stem: ``<model>-<P>pe`` (reports ``<name>-compress[-stages].csv/.md``)."""
        return f"{self.model.stem}-{self.pes}pe"

    def clusters_of(self, kind: str) -> int:
        """Shared weights of a layer of ``kind`` (``dense`` or ``conv2d``)."""
        return (self.conv_clusters or self.clusters) if kind == "conv2d" else self.clusters

    def index_bits_of(self, kind: str) -> int:
        """Relative index bits of a layer of ``kind``."""
        return (self.conv_index_bits or self.index_bits) if kind == "conv2d" else self.index_bits

    @property
    def settings(self) -> str:
        """The settings sentence of the reports (without the measured part)."""
        return (f"{self.pes} PEs, relative indices {self.index_bits} bits (conv {self.index_bits_of('conv2d')}), "
                f"{self.clusters} clusters per FC layer (conv {self.clusters_of('conv2d')}), "
                f"init {self.init}, centroid fine-tune {self.fine_tune_epochs} epochs, "
                f"values {self.value_bits} bits before sharing, Huffman {'on' if self.huffman else 'off'}")


@dataclass(frozen=True, eq=False)
class CompressReport:
    """What the study reports: ``layers`` (a row per layer), ``stages`` (a row per stage; also as
    ``stage_rows``), ``lowrank`` (None without a rank), the Markdown ``settings`` (layer table) and
    ``text`` (stage table), the compressed ``model`` (pruned + shared; its metadata records the
    stages) and the weights' pruned fraction ``sparsity``."""

    source: Path
    name: str
    layers: pd.DataFrame
    stages: pd.DataFrame
    stage_rows: tuple[dict, ...]
    lowrank: pd.DataFrame | None
    settings: str
    text: str
    model: Model
    sparsity: float

    @property
    def summary(self) -> str:
        """One line: weights kept, the last stage's storage and rate, the test error first -> last."""
        last = self.stage_rows[-1]
        return (f"{100 * (1 - self.sparsity):.2f} % of weights kept, {last['stage']} stage "
                f"{last['storage_kb']:.1f} KB = {last['compression_rate']:.1f}x smaller than dense, test error "
                f"{self.stage_rows[0]['test_error_pct']:.2f} % -> {last['test_error_pct']:.2f} %")


def layer_inputs(network: Network, layers: dict[str, int], x: np.ndarray) -> dict[str, np.ndarray]:
    """Non-zero pattern of each weighted layer's inputs on ``x``: (B, K) dense, (B, P, K) conv.

    A conv layer has one input vector per output position ``P = ho * wo``
    (row-major), its columns in the datapath's accumulation order (channel,
    kernel row, kernel column): the datapath's im2col of the pattern.
    """
    out, idx = {}, {i: n for n, i in layers.items()}
    h = x
    for i, layer in enumerate(network.layers):
        if i in idx and layer.kind == "dense":
            out[idx[i]] = h.reshape(len(h), -1) != 0
        elif i in idx:
            k, s, p = layer.k, layer.stride, layer.padding
            ho, wo = conv_out_size(h.shape[2], k, s, p), conv_out_size(h.shape[3], k, s, p)
            cols = im2col((h != 0).view(np.int8), k, k, s, p, ho, wo)  # (B * ho * wo, C * k * k)
            out[idx[i]] = cols.reshape(len(h), ho * wo, -1) != 0
        h = layer.forward(h, training=False)
    return out


def check_clusters(network: Network, layers: dict[str, int], clusters: dict[str, int], prune) -> None:
    """Clusters <= non-zeros of each layer (after pruning to ``prune``), checked before any training."""
    for n, i in layers.items():
        w = network.layers[i].params["W"]
        if prune is None:
            nnz = int(np.count_nonzero(w))
        else:
            s = prune.get(n, 0.0) if isinstance(prune, dict) else prune
            nnz = int(round((1 - s) * w.size))
        check(clusters[n] <= nnz, f"clusters={clusters[n]} for layer {n} is more than its {nnz} non-zero "
                                  "weights: give 2 <= clusters <= non-zeros")


def lowrank_table(network: Network, layers: dict[str, int], rank: int, x, y, threads: int = 1) -> pd.DataFrame:
    """Each FC layer (and all together) replaced by its rank-K SVD: multiplications and accuracy.

    No retraining; the weights are restored afterwards. Multiplications per
    input vector ``m k + k^2 + k n`` (:func:`fxpsim.compress.lowrank.multiplications`).
    """
    rows, saved = [], {}
    fcs = {n: i for n, i in layers.items() if network.layers[i].kind == "dense"}
    check(bool(fcs), "a low-rank table needs Dense (fc) layers, the model has none among the chosen layers")
    top = max(min(network.layers[i].params["W"].shape) for i in fcs.values())
    check(1 <= rank < top, f"rank {rank} is outside [1, {top - 1}]: it must be below the smaller side of "
                           "at least one FC layer")
    base = float_accuracy(network, x, y, threads)
    ranks = {}
    for n, i in fcs.items():
        w = network.layers[i].params["W"]
        saved[n] = w.copy()
        ranks[n] = min(rank, min(w.shape))  # a layer narrower than the rank keeps its full rank
        w[...] = truncated_svd(saved[n], ranks[n]).reconstruct()
        acc = float_accuracy(network, x, y, threads)
        m, k = w.shape
        low = multiplications(m, k, ranks[n]) if ranks[n] < min(w.shape) else multiplications(m, k)
        rows.append({"layer": n, "shape": f"{m}x{k}", "rank": ranks[n], "mults_dense": multiplications(m, k),
                     "mults_lowrank": low, "mults_ratio": low / multiplications(m, k),
                     "test_error_pct": 100 * (1 - acc), "error_change_pct": 100 * (base - acc)})
        w[...] = saved[n]
    for n, i in fcs.items():
        network.layers[i].params["W"][...] = truncated_svd(saved[n], ranks[n]).reconstruct()
    acc = float_accuracy(network, x, y, threads)
    md = sum(r["mults_dense"] for r in rows)
    ml = sum(r["mults_lowrank"] for r in rows)
    rows.append({"layer": "all fc", "shape": "-", "rank": rank, "mults_dense": md, "mults_lowrank": ml,
                 "mults_ratio": ml / md, "test_error_pct": 100 * (1 - acc), "error_change_pct": 100 * (base - acc)})
    for n, i in fcs.items():
        network.layers[i].params["W"][...] = saved[n]
    return pd.DataFrame(rows)


def _paper_columns(stage_rows: list[dict], han: dict, huffman: bool) -> None:
    """Han et al.'s figures beside each stage row (in place).

    Han 2015's pruning figure (12x) counts parameters, not bits: only its kept % is comparable.
    """
    paper = {"dense": (100.0, han["paper_kb_ref"], 1.0, han["paper_error_ref"]),
             "pruned": (han["paper_kept_pct"], None, None, han["paper_error_pruned"]),
             "huffman" if huffman else "shared": (han["paper_kept_pct"], han["paper_kb_compressed"],
                                                  han["paper_rate_compressed"], han["paper_error_compressed"])}
    for r in stage_rows:
        kept, kb, rate, err = paper.get(r["stage"], (None, None, None, None))
        r.update(paper_weights_kept_pct=kept, paper_storage_kb=kb, paper_compression_rate=rate,
                 paper_error_pct=err)


def run_compress(study: CompressStudy, log=None) -> CompressReport:
    """Run the compression stages of ``study`` on its model; ``log``: one line per pruning round."""
    t = study.retraining.threads
    setup = load_for_retraining(study.model, study.retraining)
    model, path, layers = setup.model, setup.path, setup.layers
    net = model.network
    x_tr, y_tr, x_val, y_val, x_te, y_te = setup.splits
    kinds = {n: net.layers[i].kind for n, i in layers.items()}
    clusters = {n: study.clusters_of(kinds[n]) for n in layers}
    index_bits = {n: study.index_bits_of(kinds[n]) for n in layers}
    check_targets(study.prune, layers)
    check_clusters(net, layers, clusters, study.prune)
    lowrank = lowrank_table(net, layers, study.rank, x_te, y_te, t) if study.rank else None

    stages = {"dense": float_accuracy(net, x_te, y_te, t)}
    if study.prune is None and "test_accuracy_before_pruning" in model.metadata:
        stages["dense"] = float(model.metadata["test_accuracy_before_pruning"])  # `fxpsim prune` recorded it
    if study.prune is not None:
        prune_network(setup, study.retraining.prune_config(study.prune), study.retraining, log=log)
    stages["pruned"] = float_accuracy(net, x_te, y_te, t)
    sparsity = sparsity_of(masks_from_zeros(net, layers))
    idx = np.random.default_rng(0).choice(len(x_te), min(study.samples, len(x_te)), replace=False)
    active = layer_inputs(net, layers, x_te[np.sort(idx)])
    shared = share_weights(net, layers, clusters, init=study.init, seed=0)
    stages["shared"] = float_accuracy(net, x_te, y_te, t)
    kmeans_acc = stages["shared"]
    if study.fine_tune_epochs:
        tune = replace(setup.base, lr=setup.base.lr / study.retraining.lr_divisor)  # the retraining lr
        with threadpool_limits(limits=t, user_api="blas"):
            shared = fine_tune_shared(net, layers, shared, tune, study.fine_tune_epochs, x_tr, y_tr, x_val, y_val,
                                      progress=study.retraining.progress, log=log)
        stages["shared"] = float_accuracy(net, x_te, y_te, t)
    if study.huffman:
        stages["huffman"] = stages["shared"]  # lossless

    lcs = [compress_layer(n, kinds[n], net.layers[i].params["W"], n_pes=study.pes, index_bits=index_bits[n],
                          dense_bits=study.value_bits, value_bits=study.value_bits, shared=shared[n],
                          huffman=study.huffman, active=active[n]) for n, i in layers.items()]
    layer_df = pd.DataFrame([lc.record() for lc in lcs])
    stage_rows = network_stages(lcs)
    if not study.huffman:
        stage_rows = [r for r in stage_rows if r["stage"] != "huffman"]
    for r in stage_rows:
        r["test_error_pct"] = 100 * (1 - stages[r["stage"]])
        if study.fine_tune_epochs:  # the error of plain k-means, before the centroids were fine-tuned
            r["kmeans_error_pct"] = 100 * (1 - kmeans_acc) if r["stage"] in ("shared", "huffman") else None
    han = HAN.get(str(model.metadata.get("arch", "")))
    if han is not None:
        _paper_columns(stage_rows, han, study.huffman)
    settings = (f"{study.settings}; weights kept {100 * (1 - sparsity):.2f} %; cycles per PE per image on "
                f"{len(idx)} test images (zero activations skipped).")
    text = settings + (f" Paper: Han et al. {han['paper_net']}: pruning (NIPS 2015 Table 1: "
                       f"{han['paper_kept_pct']:g} % of the weights kept, {han['paper_rate_pruned']:g}x fewer "
                       "parameters) and the whole pipeline (Deep Compression, ICLR 2016, Table 1); the paper's "
                       "sizes use 32-bit floats for the dense network." if han else "")
    md = dict(model.metadata)
    md["compressed"] = {"clusters": clusters, "index_bits": index_bits, "pes": study.pes,
                        "stages": stage_rows, "sparsity": sparsity}
    md["test_accuracy"] = stages["shared"]
    return CompressReport(path, study.name, layer_df, pd.DataFrame(stage_rows), tuple(stage_rows), lowrank,
                          settings, text, Model(net, model.preprocess, md), sparsity)
