"""``fxpsim binary``: train (or load) binary/ternary variants of an architecture and compare them.

For each method (``float`` plus BC, BC-stochastic, BNN, BWN, XNOR, TWN,
TTQ; :mod:`fxpsim.binary.train_layers`) the float architecture is turned
into the method's variant (:func:`fxpsim.binary.train_layers.binary_spec`),
trained with the NumPy trainer (or loaded from ``--model-dir`` with
``--reuse``), and tested. The table: test error, the paper's figure where
there is one, model size in bits (1 bit per binary, 2 per ternary weight,
32 per other number), the binary layers' share of the multiply-accumulates,
and for BNN the accuracy of the integer run (XNOR-popcount, thresholds,
bit-plane first layer: :class:`fxpsim.binary.netsim.BnnSimulator`).
``--append`` merges the rows into an existing report of the same name
(one row per architecture and method), so runs of several architectures
build one table. ``--loss square-hinge`` trains with the papers' L2-SVM
output cost instead of softmax cross-entropy (:mod:`fxpsim.train.losses`).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from .common import (BATCH_TYPE, DECAY_TYPE, LR_TYPE, QUIET_HELP, SHIFT_TYPE, VAL_FRACTION_TYPE, check_out_dir,
                     check_shift, checked_network, epochs_type, progress_of, seed_type, stem_type, threads_type)

DEFAULT_ARCH = "fc256-bn-relu-fc256-bn-relu-fc10"
ALL_METHODS = ("float", "bc", "bcs", "bnn", "bwn", "xnor", "twn", "ttq")
PAPER_ERROR = {  # MNIST test error in % (the targets; shown for --dataset mnist only)
    "bc": "1.29 (BC, MLP 3x1024)",
    "bnn": "1.40 (BNN, MLP 3x4096)",
    "twn": "0.65 (TWN, LeNet-5 32C5-MP2-64C5-MP2-512FC)",
}


def add_parser(sub) -> None:
    p = sub.add_parser("binary", help="train/compare BinaryConnect, BNN, BWN, XNOR-Net, TWN, TTQ variants")
    p.add_argument("--arch", default=DEFAULT_ARCH,
                   help=f"float architecture (name or spec) to binarize (default {DEFAULT_ARCH})")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated subset of {','.join(ALL_METHODS)} (bcs: stochastic BinaryConnect)")
    p.add_argument("--dataset", default="digits", help="digits (embedded) or mnist")
    p.add_argument("--data-dir", default=None, help="directory with the four MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--epochs", type=epochs_type(), default=20, help="passes over the training split, per method")
    p.add_argument("--lr", type=LR_TYPE, default=3e-3, help="initial learning rate (Adam)")
    p.add_argument("--optimizer", default="adam", help="sgd, momentum, nesterov, adagrad, rmsprop, "
                                                        "rmsprop-nesterov, adam")
    p.add_argument("--schedule", default="exponential", help="constant, step, exponential, inverse")
    p.add_argument("--decay", type=DECAY_TYPE, default=None,
                   help="k of the exponential decay per epoch (default: lr falls 100x over the run)")
    p.add_argument("--loss", default="cross-entropy",
                   help="training loss: cross-entropy (softmax) or square-hinge (the L2-SVM output of "
                        "BinaryConnect and BNN: mean of max(0, 1 - t z)^2, t = +-1 one-hot)")
    p.add_argument("--batch-size", type=BATCH_TYPE, default=100, help="images per optimizer step")
    p.add_argument("--seed", type=seed_type(), default=0, help="seed of initialisation, splits and batches")
    p.add_argument("--val-fraction", type=VAL_FRACTION_TYPE, default=0.1,
                   help="share of the training data held out for validation (0 to below 1)")
    p.add_argument("--shift", type=SHIFT_TYPE, default=0, help="random translation augmentation (pixels)")
    p.add_argument("--threads", type=threads_type(), default=1, help="BLAS threads (default 1)")
    p.add_argument("--model-dir", default="models/binary", help="where the trained models are written/read")
    p.add_argument("--reuse", action="store_true",
                   help="load a method's model from --model-dir if it exists instead of training it")
    p.add_argument("--report", type=stem_type("--report"), default=None,
                   help="report name stem (default binary-<dataset>)")
    p.add_argument("--append", action="store_true",
                   help="merge the rows into an existing report of the same name (per arch and method)")
    p.add_argument("--out", default="reports", help="folder for the CSV/Markdown report (default reports/)")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.set_defaults(func=run)


def parse_methods(text: str) -> list[str]:
    """Canonical method names from a comma list; ``float`` allowed; one-line error otherwise."""
    from ..binary.train_layers import parse_method
    from ..errors import check

    out = []
    for item in str(text).split(","):
        item = item.strip().lower()
        if not item:
            continue
        out.append("float" if item == "float" else parse_method(item))
    check(bool(out), f"--methods {text!r} names no method: give some of {','.join(ALL_METHODS)}")
    return list(dict.fromkeys(out))


def model_bits(network) -> tuple[int, int]:
    """(bits of this network's stored numbers, bits of its float32 twin).

    Binary layers: 1 bit per weight (2 for ternary), 32 per scale (one per
    filter for bwn/xnor, one per layer for twn, two for ttq) and per bias;
    every other parameter and BatchNorm statistic 32 bits.
    """
    from ..binary.train_layers import WEIGHT_BITS

    bits = floats = 0
    for layer in network.layers:
        arrays = {**layer.params, **layer.buffers}
        n_all = sum(int(a.size) for a in arrays.values())
        method = getattr(layer, "method", None)
        if method is None or not hasattr(layer, "codes"):
            bits += 32 * n_all
            floats += 32 * n_all
            continue
        w = arrays["W"].size
        out_axis = 1 if layer.params["W"].ndim == 2 else 0
        scales = {"bwn": layer.params["W"].shape[out_axis], "xnor": layer.params["W"].shape[out_axis],
                  "twn": 1}.get(method, 0)  # ttq's W_p, W_n are parameters, counted below
        bits += WEIGHT_BITS[method] * w + 32 * (n_all - w + scales)
        floats += 32 * n_all
    return bits, floats


def macs(network) -> tuple[int, int]:
    """(multiply-accumulates per image in binary layers, in all fc/conv layers)."""
    binary = total = 0
    for layer, shape_in, shape_out in zip(network.layers, network.shapes[:-1], network.shapes[1:]):
        if "W" not in layer.params:
            continue
        w = layer.params["W"]
        n = int(w.size) if w.ndim == 2 else int(w.size) * int(shape_out[1]) * int(shape_out[2])
        total += n
        if hasattr(layer, "codes"):
            binary += n
    return binary, total


def _gap_notes(df) -> str:
    """One line per row with a paper figure: our error, the paper's, the gap and what differs."""
    lines = []
    for row in df.to_dict("records"):
        paper = str(row.get("paper_error_pct") or "")
        if not paper:
            continue
        ref = float(paper.split()[0])
        gap = float(row["test_error_pct"]) - ref
        lines.append(f"- {row['method']}: {float(row['test_error_pct']):.2f} % vs paper {paper}: "
                     f"{gap:+.2f} points; ours: {row['spec']}, {row['epochs']} epochs"
                     + (" (beyond the 0.5-point aim: smaller network and far fewer epochs than the paper)"
                        if gap > 0.5 else ""))
    return ("\n\nAgainst the papers:\n\n" + "\n".join(lines)) if lines else ""


PLACEMENT_OPTIONS = ("--out", "--model-dir")
"""Options that say where files go, not what is computed: left out of a recorded command."""


def recorded_command(argv: list[str] | None) -> str:
    """The command line as a report records it: ``--data-dir`` shown as ``DIR``, no placement options.

    The same run gives the same text wherever the data and the output folders are
    (``fxpsim.experiments.reproduce``); ``""`` when the argv is unknown.
    """
    if argv is None:
        return ""
    words, skip = ["fxpsim"], False
    for word in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = word.partition("=")
        if name in PLACEMENT_OPTIONS:
            skip = not eq
            continue
        if name == "--data-dir":
            words += ["--data-dir", "DIR"]
            skip = not eq
            continue
        words.append(word)
    return shlex.join(words)


def _train_or_load(method, base_spec, data, args, path, log):
    from ..modelfile import load_model, save_model
    from ..train.trainer import TrainConfig, train

    if args.reuse and path.exists():
        log(f"{method}: loading {path}")
        return load_model(path), True
    decay = args.decay if args.decay is not None else (4.6 / max(1, args.epochs - 1))  # exp(-4.6) ~ 1/100
    config = TrainConfig(optimizer=args.optimizer, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                         seed=args.seed, schedule=args.schedule, decay=decay, val_fraction=args.val_fraction,
                         loss=args.loss,
                         shift=args.shift, threads=args.threads,
                         preprocess="none" if method == "bnn" else "standardize",
                         init="xavier-uniform" if method != "float" else "he",
                         method=None if method == "float" else method)
    log(f"{method}: training {base_spec} ({args.epochs} epochs, {config.optimizer} lr {config.lr:g}, "
        f"{config.schedule} k={decay:.3g}, batch {config.batch_size}, {config.loss} loss, "
        f"preprocess {config.preprocess})")
    bars, epoch_log = progress_of(args, log)
    model, _ = train(data, base_spec, config, progress=bars, log=epoch_log)
    model.metadata["binary_method"] = method
    model.metadata["command"] = recorded_command(getattr(args, "argv", None))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model)
    return model, False


def run(args) -> int:
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from ..binary.train_layers import METHOD_NAMES
    from ..network import resolve_spec
    from ..tables import format_table, write_table
    from ..train.data import DATASET_SHAPES, load_dataset, parse_dataset
    from ..train.trainer import evaluate

    dataset = parse_dataset(args.dataset)
    methods = parse_methods(args.methods)
    from ..train.losses import parse_loss

    args.loss = parse_loss(args.loss)  # a bad --loss fails before any work
    shape, n_classes = DATASET_SHAPES[dataset]
    base_spec = resolve_spec(args.arch, shape, n_classes)
    checked_network(base_spec, shape, n_classes)  # a bad or oversized arch fails before any work
    check_shift(args.shift, shape, dataset)
    from ..binary.train_layers import binary_spec

    for m in methods:  # every variant must build before any training starts
        if m != "float":
            checked_network(binary_spec(base_spec, m), shape, n_classes)
    stem = args.report or f"binary-{dataset}"
    model_dir = check_out_dir(args.model_dir, "--model-dir")
    check_out_dir(args.out)
    data = load_dataset(dataset, args.data_dir)
    log = print
    rows = []
    safe = base_spec.replace("-", "_")[:80]
    for method in methods:
        path = model_dir / f"{dataset}-{safe}-{method}.npz"
        t0 = time.perf_counter()
        model, loaded = _train_or_load(method, base_spec, data, args, path, log)
        net = model.network
        with threadpool_limits(limits=args.threads, user_api="blas"):
            x_test = model.preprocess.apply(data.x_test)
            _, acc = evaluate(net, x_test, data.y_test)
        int_acc = None
        if method == "bnn":
            from ..binary.netsim import BnnSimulator

            from ..errors import FxpsimError

            try:
                sim = BnnSimulator(model)
            except FxpsimError as err:  # e.g. average pooling or a non-bnn layer order: no integer BNN mapping
                log(f"bnn: no integer run ({err})")
            else:
                int_acc = float((sim.predict(data.x_test) == data.y_test).mean())
        bits, fbits = model_bits(net)
        b_macs, t_macs = macs(net)
        md = model.metadata
        rows.append({
            "arch": base_spec,
            "method": method,
            "name": "float32" if method == "float" else METHOD_NAMES[method],
            "spec": net.spec(),
            "test_error_pct": round(100 * (1 - acc), 2),
            "int_sim_error_pct": None if int_acc is None else round(100 * (1 - int_acc), 2),
            "paper_error_pct": PAPER_ERROR.get(method, "") if dataset == "mnist" else "",
            "model_bits": bits,
            "compression": round(fbits / bits, 1),
            "binary_mac_share_pct": round(100 * b_macs / t_macs, 1) if t_macs else 0.0,
            "epochs": md.get("epochs_run"),
            "command": md.get("command", ""),
        })  # no wall-clock column: the report is reproducible byte for byte; the time is in the model file
        log(f"{method}: test error {100 * (1 - acc):.2f} %"
            + (f", integer BNN run {100 * (1 - int_acc):.2f} %" if int_acc is not None else "")
            + f" ({'loaded' if loaded else f'{time.perf_counter() - t0:.0f} s'}; training "
            f"{md.get('train_seconds', float('nan')):.0f} s recorded in the model)")
        df = pd.DataFrame(rows)
        outdir = Path(args.out)
        if args.append and (outdir / f"{stem}.csv").exists():
            old = pd.read_csv(outdir / f"{stem}.csv", keep_default_na=False)
            keys = set(zip(df["arch"], df["method"]))
            old = old[[(a, m) not in keys for a, m in zip(old["arch"], old["method"])]]
            old = old.reindex(columns=df.columns, fill_value="")  # columns of this version only
            df = pd.concat([old, df], ignore_index=True)
        text = (f"Dataset {dataset} ({len(data.x_train)} train / {len(data.x_test)} test images). "
                "test_error_pct: the trained model in float with its binary/ternary weights; "
                "int_sim_error_pct: BNN on the integer datapath (bit-plane first layer, XNOR-popcount, "
                "BN+sign thresholds, fixed-point output BN). model_bits: 1 bit per binary, 2 per ternary "
                "weight, 32 per other stored number; binary_mac_share_pct: share of the multiply-"
                "accumulates done in binary/ternary layers. Paper figures are for the papers' larger "
                "networks and longer training (see the command column for ours).")
        text += _gap_notes(df)
        write_table(df, stem, outdir, title=f"Binary and ternary networks on {dataset}", text=text)
    shown = pd.DataFrame(rows).drop(columns=["command", "spec", "arch"])
    print(format_table(shown))
    print(f"wrote {Path(args.out) / (stem + '.csv')} and .md")
    return 0
