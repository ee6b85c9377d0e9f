"""``fxpsim data download mnist``: fetch MNIST into the cache with md5 verification."""

from __future__ import annotations

from .common import check_out_dir, real


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="manage datasets (download MNIST)")
    dsub = p.add_subparsers(dest="action", required=True)
    d = dsub.add_parser("download", help="download a dataset into the cache, verifying md5 sums")
    d.add_argument("name", choices=["mnist"], help="dataset to fetch (digits is embedded, no download)")
    d.add_argument("--cache-dir", default=None, help="target directory (default $FXPSIM_CACHE or ~/.cache/fxpsim)")
    d.add_argument("--timeout", type=real(0, 3600, "--timeout", "seconds to wait for a mirror, above 0 and at most "
                                                            "an hour, e.g. 30", lo_open=True),
                   default=30.0, help="timeout of one connection attempt, in seconds")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.data import default_cache_dir, download_mnist

    check_out_dir(args.cache_dir if args.cache_dir is not None else default_cache_dir(), "--cache-dir")
    target = download_mnist(args.cache_dir, timeout=args.timeout)
    print(f"MNIST ready in {target} (use it with --data-dir {target.parent} or FXPSIM_DATA={target.parent})")
    return 0
