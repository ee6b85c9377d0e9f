"""``fxpsim train``: train a network on digits or MNIST and save it as a model file."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import check
from .common import (BATCH_TYPE, DECAY_TYPE, LR_TYPE, QUIET_HELP, SHIFT_TYPE, VAL_FRACTION_TYPE, check_out_file,
                     check_shift, checked_network, epochs_type, model_path, penalty_type, progress_of, real,
                     seed_type, threads_type)

DEFAULT_OUT = "models/{arch}-{dataset}.npz"


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a network with the embedded NumPy trainer and save it")
    p.add_argument("--arch", default="mlp",
                   help="architecture name (mlp, lenet300, mlp-small, lenet5, lenet5-caffe, cnn-small) "
                        "or spec string, e.g. conv6x5-relu-maxpool2-fc84-relu-fc10")
    p.add_argument("--dataset", default="digits", help="digits (embedded), mnist, or digits28 (digits upsampled to 28x28, MNIST's layout)")
    p.add_argument("--data-dir", default=None, help="directory with the four MNIST IDX files (or $FXPSIM_DATA)")
    p.add_argument("--optimizer", default="adam",
                   help="sgd, momentum, nesterov, adagrad, rmsprop, rmsprop-nesterov, adam")
    p.add_argument("--lr", type=LR_TYPE, default=1e-3, help="initial learning rate epsilon_0")
    p.add_argument("--momentum", type=real(0, 1, "--momentum", "alpha weighs the past gradients: a fraction "
                                           "from 0 (none) to below 1, e.g. 0.9", hi_open=True),
                   default=0.9, help="alpha of momentum/nesterov/rmsprop-nesterov")
    p.add_argument("--schedule", default="constant", help="constant, step, exponential, inverse (1/t)")
    p.add_argument("--decay", type=DECAY_TYPE, default=0.1, help="k of exponential and 1/t decay (per epoch)")
    p.add_argument("--step-every", type=epochs_type("--step-every"), default=10,
                   help="step decay: epochs between steps (T)")
    p.add_argument("--step-factor", type=real(0, 1, "--step-factor", "the rate is multiplied by it at each "
                                              "step: in (0, 1], e.g. 0.5", lo_open=True),
                   default=0.5, help="step decay: factor per step")
    p.add_argument("--epochs", type=epochs_type(), default=10, help="passes over the training split")
    p.add_argument("--batch-size", type=BATCH_TYPE, default=64, help="images per optimizer step")
    p.add_argument("--seed", type=seed_type(), default=0, help="seed of initialisation, splits, batches, dropout")
    p.add_argument("--weight-decay", type=penalty_type("--weight-decay"), default=0.0,
                   help="L2 coefficient lambda (weights only)")
    p.add_argument("--l1", type=penalty_type("--l1"), default=0.0, help="L1 coefficient (weights only)")
    p.add_argument("--val-fraction", type=VAL_FRACTION_TYPE, default=0.1,
                   help="validation split of the training data")
    p.add_argument("--patience", type=epochs_type("--patience"), default=None,
                   help="early stopping: epochs without a better validation accuracy (default: run all epochs; "
                        "the best epoch's weights are kept either way)")
    p.add_argument("--shift", type=SHIFT_TYPE, default=0,
                   help="data augmentation: random translation of training images by up to N pixels (0: off)")
    p.add_argument("--augment", default=None,
                   help="data augmentation of training batches: shift=PIXELS,rotate=DEGREES, e.g. shift=2,rotate=10 "
                        "(random whole-pixel shifts, then small rotations; seeded by --seed)")
    p.add_argument("--from", dest="start", default=None, metavar="MODEL",
                   help="transfer learning: start from MODEL's trained weights instead of --arch")
    p.add_argument("--new-head", default=None, metavar="LAYER",
                   help="with --from: replace the last layer (e.g. fc3) by a fresh one for this data set's classes")
    p.add_argument("--freeze", default=None, metavar="LAYERS",
                   help="layers not updated, named as in configs, e.g. conv1,conv2")
    p.add_argument("--init", default="he", help="small, xavier-uniform, xavier-normal, he")
    p.add_argument("--preprocess", default="standardize", help="none, mean-image, per-channel, standardize")
    p.add_argument("--threads", type=threads_type(), default=1,
                   help="BLAS threads (default 1: deterministic, and fastest on a shared machine)")
    p.add_argument("--method", default=None,
                   help="binary/ternary variant of --arch: bc, bcs, bnn, bwn, xnor, twn, ttq (see `fxpsim binary`)")
    p.add_argument("--out", default=None, help=f"model file to write (default {DEFAULT_OUT})")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.set_defaults(func=run)


def default_out(arch: str, dataset: str) -> Path:
    """``models/<arch>-<dataset>.npz``; a spec string is shortened to ``custom``."""
    name = arch if re.fullmatch(r"[a-z0-9-]{1,20}", arch) else "custom"
    return Path(DEFAULT_OUT.format(arch=name, dataset=dataset))


def run(args) -> int:
    from ..modelfile import save_model
    from ..experiments.transfer import train_from
    from ..interop.models import read_model
    from ..train.data import DATASET_SHAPES, load_dataset, parse_dataset
    from ..train.augment import Augment, parse_augment
    from ..train.trainer import TrainConfig, train

    dataset = parse_dataset(args.dataset)
    arch = args.arch.strip().lower()
    shape, n_classes = DATASET_SHAPES[dataset]
    check(args.augment is None or not args.shift, "--shift and --augment both give a shift: use --augment shift=N")
    augment = Augment(args.shift) if args.augment is None else parse_augment(args.augment)
    check(args.start is not None or args.new_head is None, "--new-head replaces a layer of a trained model: "
                                                           "give --from MODEL too")
    base = read_model(model_path(args.start)) if args.start is not None else None
    if base is None:
        spec = checked_network(arch, shape, n_classes).spec()  # a bad or oversized arch fails before any work
    else:
        arch = spec = base.network.spec()
    check_shift(augment.shift, shape, dataset)
    config = TrainConfig(optimizer=args.optimizer, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                         seed=args.seed, momentum=args.momentum, schedule=args.schedule, decay=args.decay,
                         step_every=args.step_every, step_factor=args.step_factor,
                         weight_decay=args.weight_decay, l1=args.l1, val_fraction=args.val_fraction,
                         patience=args.patience, shift=augment.shift, rotate=augment.rotate, freeze=args.freeze,
                         init=args.init, preprocess=args.preprocess, threads=args.threads, method=args.method)
    out = Path(args.out) if args.out else default_out(arch if base is None else "transfer", dataset)
    if args.out is None:
        out.parent.mkdir(parents=True, exist_ok=True)
    check_out_file(out)  # before training, not after
    data = load_dataset(dataset, args.data_dir)
    print(f"training {arch} ({spec}) on {dataset}: "
          f"{len(data.x_train)} train / {len(data.x_test)} test images, {config.optimizer} lr {config.lr:g}, "
          f"{config.epochs} epochs, batch {config.batch_size}, seed {config.seed}")
    if base is None:
        model, history = train(data, arch, config, progress=progress_of(args)[0], log=progress_of(args)[1])
    else:
        model, history = train_from(data, base, Path(args.start).name, config, args.new_head,
                                    progress=progress_of(args)[0], log=progress_of(args)[1])
    save_model(out, model)
    md = model.metadata
    print(f"test accuracy {md['test_accuracy'] * 100:.2f} % (error {100 - md['test_accuracy'] * 100:.2f} %), "
          f"best epoch {md['best_epoch']}/{md['epochs_run']}, training {md['train_seconds']:.1f} s "
          f"({md['train_seconds'] / md['epochs_run']:.1f} s/epoch); saved {out}")
    return 0
