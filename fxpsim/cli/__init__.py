"""``fxpsim <command>``: argparse subcommands, one module each in this package.

Each command module has ``add_parser(subparsers)`` that registers its
subparser and sets ``func(args) -> int``. Commands only parse, build a
frozen config, call the library and write reports. Bad input surfaces as
:class:`fxpsim.FxpsimError` (or an ``OSError`` for files) and is printed
here as one line, exit status 2; Ctrl-C at any time (start-up included:
:mod:`.startup`) is ``interrupted``, exit 130; any other exception that
escapes is one line naming it and asking for a bug report, exit 70.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import FxpsimError
from . import startup

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
    "fxpsim.cli.finetune",
    "fxpsim.cli.export",
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def arg_type(parse):
    """Wrap a parser that raises FxpsimError so argparse prints its message."""

    def convert(text: str):
        try:
            return parse(text)
        except FxpsimError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    if hasattr(parse, "bounds"):  # a range (fxpsim.cli.common.int_in / real_in), for the hostile-input tests
        convert.bounds = parse.bounds
    return convert


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, from every module in ``_COMMANDS``."""
    parser = _Parser(prog="fxpsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


MAX_LINE = 1000
"""Longest error line printed: a hostile value (a 5000-digit number) is cut, not echoed whole."""


def _one_line(text: str) -> str:
    """``text`` with its line breaks shown as spaces and cut to :data:`MAX_LINE` characters: an error
    is one line, whatever a value held."""
    line = " ".join(str(text).splitlines())
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fxpsim`` script; returns the exit status (0, 1, 2, 70 or 130)."""
    command = "fxpsim"
    try:
        startup.release()  # from here on this function reports Ctrl-C and crashes itself
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, or a usage error already printed as one line
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None) * 2
        command = f"fxpsim {args.command}"
        args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given, for reports
        return int(args.func(args) or 0)
    except FxpsimError as exc:
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
    except OSError as exc:
        print(_one_line(f"{command}: error: {exc.strerror or exc}"
                        f"{': ' + str(exc.filename) if exc.filename else ''}"), file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return startup.EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the catch-all: one line, never a traceback
        print(startup.internal_error_line(exc, command), file=sys.stderr)
        return startup.EXIT_INTERNAL
    return 2
