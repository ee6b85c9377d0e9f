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
The study is :func:`fxpsim.experiments.compress.run_compress`.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import arg_type
from .common import (check_out_dir, check_out_file, check_pes, epochs_type, int_in, progress_of, samples_type,
                     whole)
from .retraining import add_retrain_args, retraining_from, sparsity_arg
from ..compress.retrain import select_layers
from ..errors import check
from ..experiments.compress import CompressStudy, run_compress
from ..modelfile import load_model, save_model
from ..tables import REPORTS_DIR, format_table, write_table
from ..sparse.pe import eie_matrix


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="prune, share weights, Huffman code; storage and PE cycles per layer")
    p.add_argument("model", help="model file (.npz); a pruned one (from `fxpsim prune`) or any")
    p.add_argument("--prune", type=sparsity_arg, default=None,
                   help="target sparsity to prune to first (e.g. 0.92 or fc1=0.92,...); default: the "
                        "model's zeros are the pruning")
    p.add_argument("--pes", type=arg_type(int_in(1, None, "--pes", "give the number of PEs, e.g. 64")),
                   default=None, help="processing elements; rows interleaved (default 64)")
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
    p.add_argument("--fine-tune-epochs", type=epochs_type("--fine-tune-epochs", lo=0), default=0,
                   help="retrain the shared centroids (summed gradients) for E epochs (default 0)")
    p.add_argument("--huffman", action="store_true", help="Huffman code cluster and relative indices")
    p.add_argument("--value-bits", type=whole(1, 64, "--value-bits", "bits of a stored value, 1 to 64 (float32: 32)"),
                   default=32,
                   help="bits per stored value before weight sharing, and of the dense baseline (default 32)")
    p.add_argument("--rank", type=whole(1, 1 << 16, "--rank", "the rank K of the truncated SVD, below the smaller "
                                                            "side of an FC layer, e.g. 20"),
                   default=None, help="also report rank-K truncated SVD of the FC layers")
    p.add_argument("--samples", type=samples_type("--samples"), default=500,
                   help="test images for the PE cycle counts (default 500)")
    p.add_argument("--save", default=None, help="write the compressed (pruned + shared) model to this .npz")
    p.add_argument("--reports", default=str(REPORTS_DIR), help="folder for reports (default reports/)")
    add_retrain_args(p)
    p.set_defaults(func=run)


def _rows(study: CompressStudy) -> dict[str, int]:
    """Rows (outputs) of each layer the study compresses: what EIE interleaves over its PEs."""
    net = load_model(study.model).network
    return {n: eie_matrix(net.layers[i].params["W"]).shape[0]
            for n, i in select_layers(net, study.retraining.layers).items()}


def run(args) -> int:
    """Build the study from the arguments, run it, write and print its tables (and the model with --save)."""
    study = CompressStudy(args.model, retraining_from(args), prune=args.prune, pes=args.pes or 64,
                          index_bits=args.index_bits, conv_index_bits=args.conv_index_bits,
                          clusters=args.clusters, conv_clusters=args.conv_clusters, init=args.init,
                          fine_tune_epochs=args.fine_tune_epochs, huffman=args.huffman,
                          value_bits=args.value_bits, rank=args.rank, samples=args.samples)
    if args.save:
        check(Path(args.save).suffix == ".npz", f"--save {args.save} must end in .npz")
        check_out_file(Path(args.save), "--save")
    check_out_dir(args.reports, "--reports")
    if args.pes is not None:  # more PEs asked than rows fails before the pruning, not after
        check_pes(args.pes, _rows(study))
    t0 = time.perf_counter()
    report = run_compress(study, log=progress_of(args)[1])
    name, source = report.name, report.source
    write_table(report.layers, f"{name}-compress", args.reports, title=f"Compression of {source.name} per layer",
                text=report.settings)
    write_table(report.stages, f"{name}-compress-stages", args.reports,
                title=f"Compression stages of {source.name}", text=report.text)
    print(format_table(report.layers.drop(columns=["kind"]), floatfmt=".4g"))
    print()
    print(format_table(report.stages, floatfmt=".4g"))
    if report.lowrank is not None:
        write_table(report.lowrank, f"{source.stem}-lowrank", args.reports,
                    title=f"Rank-{args.rank} SVD of the FC layers of {source.name}",
                    text="Each FC layer alone, then all together, replaced by its truncated SVD "
                         "(no retraining); multiplications per input vector m k + k^2 + k n.")
        print()
        print(format_table(report.lowrank, floatfmt=".4g"))
    if args.save:
        save_model(Path(args.save), report.model)
    print(f"{source.name}: {report.summary} ({time.perf_counter() - t0:.0f} s)")
    return 0
