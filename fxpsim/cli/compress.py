"""``fxpsim compress``: Deep Compression's pipeline on a model, sized for EIE's PEs.

``fxpsim compress MODEL [--prune S] --pes 64 --index-bits 4 --clusters 16
[--huffman] [--fine-tune-epochs E] [--rank K]``: optionally prunes (with
retraining, as ``fxpsim prune``; without ``--prune`` the model's zeros are
the pruning), shares weights by k-means (optionally fine-tuning the
centroids), Huffman codes, and reports per layer (weights, non-zeros %,
index bits, padding entries, bits per weight, storage, cycles per PE
min/mean/max with zero activations skipped) and per stage (storage,
compression rate, test error), beside Han et al.'s figures when the model is
one of their LeNets. ``--rank K`` adds the truncated-SVD table of the FC layers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import arg_type
from .common import int_in
from .prune import add_retrain_args, check_retrain_args, load_for_retraining, parse_sparsity, test_accuracy
from ..errors import check
from ..reports import REPORTS_DIR, format_table, write_table

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


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="prune, share weights, Huffman code; storage and PE cycles per layer")
    p.add_argument("model", help="model file (.npz); a pruned one (from `fxpsim prune`) or any")
    p.add_argument("--prune", type=arg_type(parse_sparsity), default=None,
                   help="target sparsity to prune to first (e.g. 0.92 or fc1=0.92,...); default: the "
                        "model's zeros are the pruning")
    p.add_argument("--pes", type=arg_type(int_in(1, None, "--pes", "give the number of PEs, e.g. 64")),
                   default=64, help="processing elements; rows interleaved (default 64)")
    p.add_argument("--index-bits", type=arg_type(int_in(1, 16, "--index-bits", "EIE uses 4 or 5 for FC")),
                   default=4, help="relative index width for FC layers (default 4)")
    p.add_argument("--conv-index-bits",
                   type=arg_type(int_in(1, 16, "--conv-index-bits", "Han uses 8 for conv layers")),
                   default=None, help="relative index width for conv layers (default: --index-bits)")
    p.add_argument("--clusters", type=arg_type(int_in(2, None, "--clusters", "e.g. 16 for 4-bit indices")),
                   default=16, help="shared weights per FC layer (default 16)")
    p.add_argument("--conv-clusters",
                   type=arg_type(int_in(2, None, "--conv-clusters", "e.g. 256 for 8-bit indices")),
                   default=None, help="shared weights per conv layer (default: --clusters)")
    p.add_argument("--init", default="linear", choices=("linear", "density", "forgy"),
                   help="k-means centroid initialisation (default linear, Han's recommendation)")
    p.add_argument("--fine-tune-epochs", type=int, default=0,
                   help="retrain the shared centroids (summed gradients) for E epochs (default 0)")
    p.add_argument("--huffman", action="store_true", help="Huffman code cluster and relative indices")
    p.add_argument("--value-bits", type=int, default=32,
                   help="bits per stored value before weight sharing, and of the dense baseline (default 32)")
    p.add_argument("--rank", type=int, default=None, help="also report rank-K truncated SVD of the FC layers")
    p.add_argument("--samples", type=int, default=500, help="test images for the PE cycle counts (default 500)")
    p.add_argument("--save", default=None, help="write the compressed (pruned + shared) model to this .npz")
    p.add_argument("--reports", default=str(REPORTS_DIR), help="folder for reports (default reports/)")
    add_retrain_args(p)
    p.set_defaults(func=run, target_sparsity=None, quality=None)


def layer_inputs(network, layers: dict[str, int], x: np.ndarray) -> dict[str, np.ndarray]:
    """Non-zero pattern of each weighted layer's inputs on ``x``: (B, K) dense, (B, P, K) conv."""
    from numpy.lib.stride_tricks import sliding_window_view

    out, idx = {}, {i: n for n, i in layers.items()}
    h = x
    for i, layer in enumerate(network.layers):
        if i in idx and layer.kind == "dense":
            out[idx[i]] = h.reshape(len(h), -1) != 0
        elif i in idx:  # conv: one input vector per output position, columns channel, kernel row, column
            k, s, p = layer.k, layer.stride, layer.padding
            nz = np.pad(h != 0, ((0, 0), (0, 0), (p, p), (p, p)))
            win = sliding_window_view(nz, (k, k), axis=(2, 3))[:, :, ::s, ::s]  # (B, C, ho, wo, k, k)
            out[idx[i]] = win.transpose(0, 2, 3, 1, 4, 5).reshape(len(h), -1, layer.c_in * k * k)
        h = layer.forward(h, training=False)
    return out


def _check_clusters(network, layers, clusters: dict[str, int], prune) -> None:
    """Clusters <= non-zeros of each layer, checked before any training."""
    for n, i in layers.items():
        w = network.layers[i].params["W"]
        if prune is None:
            nnz = int(np.count_nonzero(w))
        else:
            s = prune.get(n, 0.0) if isinstance(prune, dict) else prune
            nnz = int(round((1 - s) * w.size))
        check(clusters[n] <= nnz, f"--clusters {clusters[n]} for layer {n} is more than its {nnz} non-zero "
                                  "weights: give 2 <= clusters <= non-zeros")


def lowrank_table(network, layers, rank: int, x, y, threads: int) -> pd.DataFrame:
    """Each FC layer (and all together) replaced by its rank-K SVD: multiplications and accuracy."""
    from ..sparse.lowrank import multiplications, truncated_svd

    rows, saved = [], {}
    fcs = {n: i for n, i in layers.items() if network.layers[i].kind == "dense"}
    check(bool(fcs), "--rank needs Dense (fc) layers, the model has none among the chosen layers")
    top = max(min(network.layers[i].params["W"].shape) for i in fcs.values())
    check(1 <= rank < top, f"--rank {rank} is outside [1, {top - 1}]: it must be below the smaller side of "
                           "at least one FC layer")
    base = test_accuracy(network, x, y, threads)
    ranks = {}
    for n, i in fcs.items():
        w = network.layers[i].params["W"]
        saved[n] = w.copy()
        ranks[n] = min(rank, min(w.shape))  # a layer narrower than the rank keeps its full rank
        w[...] = truncated_svd(saved[n], ranks[n]).reconstruct()
        acc = test_accuracy(network, x, y, threads)
        m, k = w.shape
        low = multiplications(m, k, ranks[n]) if ranks[n] < min(w.shape) else multiplications(m, k)
        rows.append({"layer": n, "shape": f"{m}x{k}", "rank": ranks[n], "mults_dense": multiplications(m, k),
                     "mults_lowrank": low, "mults_ratio": low / multiplications(m, k),
                     "test_error_pct": 100 * (1 - acc), "error_change_pct": 100 * (base - acc)})
        w[...] = saved[n]
    for n, i in fcs.items():
        network.layers[i].params["W"][...] = truncated_svd(saved[n], ranks[n]).reconstruct()
    acc = test_accuracy(network, x, y, threads)
    md = sum(r["mults_dense"] for r in rows)
    ml = sum(r["mults_lowrank"] for r in rows)
    rows.append({"layer": "all fc", "shape": "-", "rank": rank, "mults_dense": md, "mults_lowrank": ml,
                 "mults_ratio": ml / md, "test_error_pct": 100 * (1 - acc), "error_change_pct": 100 * (base - acc)})
    for n, i in fcs.items():
        network.layers[i].params["W"][...] = saved[n]
    return pd.DataFrame(rows)


def run(args) -> int:
    from ..modelfile import Model, check_writable, save_model
    from ..sparse.pipeline import compress_layer, network_stages
    from ..sparse.retrain import fine_tune_shared, share_weights, sparsity_of, masks_from_zeros

    check_retrain_args(args)
    check(args.fine_tune_epochs >= 0, f"--fine-tune-epochs {args.fine_tune_epochs} must be >= 0")
    check(1 <= args.value_bits <= 64, f"--value-bits {args.value_bits} must be in [1, 64]")
    check(args.samples >= 1, f"--samples {args.samples} must be >= 1")
    check(args.rank is None or args.rank >= 1, f"--rank {args.rank} must be >= 1")
    if args.save:
        check(Path(args.save).suffix == ".npz", f"--save {args.save} must end in .npz")
        check_writable(Path(args.save))
    t0 = time.perf_counter()
    path, model, data, layers, splits, base = load_for_retraining(args)
    net = model.network
    x_tr, y_tr, x_val, y_val, x_te, y_te = splits
    kinds = {n: net.layers[i].kind for n, i in layers.items()}
    clusters = {n: (args.conv_clusters or args.clusters) if kinds[n] == "conv2d" else args.clusters
                for n in layers}
    index_bits = {n: (args.conv_index_bits or args.index_bits) if kinds[n] == "conv2d" else args.index_bits
                  for n in layers}
    if isinstance(args.prune, dict):
        missing = [n for n in args.prune if n not in layers]
        check(not missing, f"--prune names layer(s) {', '.join(missing)} not in the model: its layers are "
                           f"{', '.join(layers)}")
    _check_clusters(net, layers, clusters, args.prune)
    log = print if args.quiet else None
    stem = f"{path.stem}-{args.pes}pe"  # reports: <model>-<P>pe-compress[-stages].csv/.md
    arch = str(model.metadata.get("arch", ""))
    lowrank = lowrank_table(net, layers, args.rank, x_te, y_te, args.threads) if args.rank else None

    stages = {"dense": test_accuracy(net, x_te, y_te, args.threads)}
    if args.prune is None and "test_accuracy_before_pruning" in model.metadata:
        stages["dense"] = float(model.metadata["test_accuracy_before_pruning"])  # `fxpsim prune` recorded it
    if args.prune is not None:
        from .prune import prune_model

        args.target_sparsity = args.prune
        prune_model(args, path, model, layers, splits, base, log=log)
    stages["pruned"] = test_accuracy(net, x_te, y_te, args.threads)
    sparsity = sparsity_of(masks_from_zeros(net, layers))
    idx = np.random.default_rng(0).choice(len(x_te), min(args.samples, len(x_te)), replace=False)
    active = layer_inputs(net, layers, x_te[np.sort(idx)])
    shared = share_weights(net, layers, clusters, init=args.init, seed=0)
    stages["shared"] = test_accuracy(net, x_te, y_te, args.threads)
    kmeans_acc = stages["shared"]
    if args.fine_tune_epochs:
        from dataclasses import replace

        from threadpoolctl import threadpool_limits

        tune = replace(base, lr=base.lr / args.lr_divisor)  # the retraining learning rate
        with threadpool_limits(limits=args.threads, user_api="blas"):
            shared = fine_tune_shared(net, layers, shared, tune, args.fine_tune_epochs, x_tr, y_tr, x_val, y_val,
                                      progress=not args.quiet, log=log)
        stages["shared"] = test_accuracy(net, x_te, y_te, args.threads)
    if args.huffman:
        stages["huffman"] = stages["shared"]  # lossless

    lcs = [compress_layer(n, kinds[n], net.layers[i].params["W"], n_pes=args.pes, index_bits=index_bits[n],
                          dense_bits=args.value_bits, value_bits=args.value_bits, shared=shared[n],
                          huffman=args.huffman, active=active[n]) for n, i in layers.items()]
    layer_df = pd.DataFrame([lc.record() for lc in lcs])
    stage_rows = network_stages(lcs)
    if not args.huffman:
        stage_rows = [r for r in stage_rows if r["stage"] != "huffman"]
    for r in stage_rows:
        r["test_error_pct"] = 100 * (1 - stages[r["stage"]])
        if args.fine_tune_epochs:  # the error of plain k-means, before the centroids were fine-tuned
            r["kmeans_error_pct"] = 100 * (1 - kmeans_acc) if r["stage"] in ("shared", "huffman") else None
    han = HAN.get(arch)
    if han is not None:
        # Han 2015's pruning figure (12x) counts parameters, not bits: only its kept % is comparable
        paper = {"dense": (100.0, han["paper_kb_ref"], 1.0, han["paper_error_ref"]),
                 "pruned": (han["paper_kept_pct"], None, None, han["paper_error_pruned"]),
                 "huffman" if args.huffman else "shared": (han["paper_kept_pct"], han["paper_kb_compressed"],
                                                           han["paper_rate_compressed"],
                                                           han["paper_error_compressed"])}
        for r in stage_rows:
            kept, kb, rate, err = paper.get(r["stage"], (None, None, None, None))
            r.update(paper_weights_kept_pct=kept, paper_storage_kb=kb, paper_compression_rate=rate,
                     paper_error_pct=err)
    stage_df = pd.DataFrame(stage_rows)
    settings = (f"{args.pes} PEs, relative indices {args.index_bits} bits (conv {args.conv_index_bits or args.index_bits}), "
                f"{args.clusters} clusters per FC layer (conv {args.conv_clusters or args.clusters}), "
                f"init {args.init}, centroid fine-tune {args.fine_tune_epochs} epochs, "
                f"values {args.value_bits} bits before sharing, Huffman {'on' if args.huffman else 'off'}; "
                f"weights kept {100 * (1 - sparsity):.2f} %; cycles per PE per image on {len(idx)} test images "
                "(zero activations skipped).")
    text = settings + (f" Paper: Han et al. {han['paper_net']}: pruning (NIPS 2015 Table 1: "
                       f"{han['paper_kept_pct']:g} % of the weights kept, {han['paper_rate_pruned']:g}x fewer "
                       "parameters) and the whole pipeline (Deep Compression, ICLR 2016, Table 1); the paper's "
                       "sizes use 32-bit floats for the dense network." if han else "")
    write_table(layer_df, f"{stem}-compress", args.reports, title=f"Compression of {path.name} per layer",
                text=settings)
    write_table(stage_df, f"{stem}-compress-stages", args.reports, title=f"Compression stages of {path.name}",
                text=text)
    print(format_table(layer_df.drop(columns=["kind"]), floatfmt=".4g"))
    print()
    print(format_table(stage_df, floatfmt=".4g"))
    if lowrank is not None:
        write_table(lowrank, f"{path.stem}-lowrank", args.reports, title=f"Rank-{args.rank} SVD of the FC layers of "
                    f"{path.name}", text="Each FC layer alone, then all together, replaced by its truncated SVD "
                                        "(no retraining); multiplications per input vector m k + k^2 + k n.")
        print()
        print(format_table(lowrank, floatfmt=".4g"))
    if args.save:
        md = dict(model.metadata)
        md["compressed"] = {"clusters": clusters, "index_bits": index_bits, "pes": args.pes,
                            "stages": stage_rows, "sparsity": sparsity}
        md["test_accuracy"] = stages["shared"]
        save_model(Path(args.save), Model(net, model.preprocess, md))
    last = stage_rows[-1]
    print(f"{path.name}: {100 * (1 - sparsity):.2f} % of weights kept, {last['stage']} stage "
          f"{last['storage_kb']:.1f} KB = {last['compression_rate']:.1f}x smaller than dense, test error "
          f"{stage_rows[0]['test_error_pct']:.2f} % -> {last['test_error_pct']:.2f} % "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0
