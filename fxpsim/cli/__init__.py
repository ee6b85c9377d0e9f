"""``fxpsim <command>``: argparse subcommands, one module each in this package.

Each command module has ``add_parser(subparsers)`` that registers its
subparser and sets ``func(args) -> int``. Commands only parse, build a
frozen config, call the library and write reports. Bad input surfaces as
:class:`fxpsim.FxpsimError` (or an ``OSError`` for files) and is printed
here as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import FxpsimError

_COMMANDS = (
    "fxpsim.cli.formats",
    "fxpsim.cli.train",
    "fxpsim.cli.evaluate",
    "fxpsim.cli.data",
    "fxpsim.cli.sweep",
    "fxpsim.cli.search",
    "fxpsim.cli.stripes",
    "fxpsim.cli.binary",
    "fxpsim.cli.prune",
    "fxpsim.cli.compress",
    "fxpsim.cli.importer",
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def arg_type(parse):
    """Wrap a parser that raises FxpsimError so argparse prints its message."""

    def convert(text: str):
        try:
            return parse(text)
        except FxpsimError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, from every module in ``_COMMANDS``."""
    parser = _Parser(prog="fxpsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fxpsim`` script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return int(exc.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given, for reports that quote it
    try:
        return int(args.func(args) or 0)
    except FxpsimError as exc:
        print(f"fxpsim {args.command}: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"fxpsim {args.command}: error: {exc.strerror or exc}"
              f"{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"fxpsim {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2
