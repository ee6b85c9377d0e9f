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
import difflib
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


DESCRIPTION = """\
Bit-accurate fixed-point inference of neural networks: Q-formats, accumulators that wrap or clip,
the dense, sparse (EIE), bit-serial (Stripes) and XNOR (BNN) engines, ONNX/QONNX in and out, golden
vectors for RTL. MODEL defaults to the shipped digits CNN (models/digits-cnn.npz); every command
prints a table and writes CSV/Markdown under reports/.

common commands:
  fxpsim eval [MODEL] [--config CFG]       float and fixed-point accuracy, per-layer overflow table
  fxpsim search [MODEL] --acc-bits 16      per-layer formats for a 16-bit accumulator (writes a config)
  fxpsim sweep [MODEL] --what data-frac    accuracy vs uniform bits of one field (Judd et al. Fig. 2)
  fxpsim train --arch cnn-small --dataset digits --out models/my.npz   train a float model
  fxpsim format Q4.12 -0.75 3.2            a format's range and the bits of values in it"""

EPILOG = "`fxpsim COMMAND --help` lists a command's options; docs/QUICKSTART.md shows the Python API."


class _Help(argparse.HelpFormatter):
    """Help that shows every option's default: ``(default: X)`` is added to an option whose help does
    not already say its default (flags and options without a default value are left as written)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.nargs == 0 or action.default in (None, argparse.SUPPRESS)
                or action.required or (not action.option_strings and action.nargs not in ("?", "*"))):
            return text
        return f"{text} (default: %(default)s)"


class _TopHelp(argparse.RawDescriptionHelpFormatter, _Help):
    """The top-level help: the description's command examples keep their lines."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, exit status 2, and whose help shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

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
    parser = _Parser(prog="fxpsim", description=DESCRIPTION, epilog=EPILOG, formatter_class=_TopHelp)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                title="commands")
    for name in _COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def version() -> str:
    """The installed package's version (its metadata), else the source tree's ``fxpsim.__version__``."""
    from importlib import metadata

    try:
        return metadata.version("fxpsim")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def _commands(parser) -> dict:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def unknown_command(parser, argv: list[str]) -> str | None:
    """The one-line error for a command name that is not one (with the closest names), else None."""
    if not argv or argv[0].startswith("-") or argv[0] in _commands(parser):
        return None
    close = difflib.get_close_matches(argv[0], list(_commands(parser)), n=3, cutoff=0.6)
    listed = "`fxpsim --help` lists the commands"
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? ({listed})" if close else listed
    return f"fxpsim: error: {_one_line(argv[0])!r} is not a command: {hint}"


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
        parser = build_parser()
        argv = list(sys.argv[1:] if argv is None else argv)
        if not argv:  # bare `fxpsim`: the command list, and a one-line usage error
            parser.print_help(sys.stdout)
            print("fxpsim: error: give a COMMAND (listed above), e.g. fxpsim eval", file=sys.stderr)
            return 2
        wrong = unknown_command(parser, argv)
        if wrong is not None:
            print(wrong, file=sys.stderr)
            return 2
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, or a usage error already printed as one line
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None) * 2
        command = f"fxpsim {args.command}"
        args.argv = argv  # the command as given, for reports
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
