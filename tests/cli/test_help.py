"""Issue 17, item 3: the help of every command shows each option's default; the top level lists the
commands, has a version, and answers a bare ``fxpsim`` or a mistyped command with the command list."""

from __future__ import annotations

import argparse
from importlib import metadata

import pytest

from fxpsim.cli import DESCRIPTION, build_parser, main, unknown_command


def _parsers(parser=None, name="fxpsim"):
    """Every (name, parser) of the command line, the nested ones (``data download``) included."""
    parser = parser or build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _help_line(parser, action) -> str:
    """The help text of ``action`` as ``--help`` prints it (before wrapping)."""
    text = parser._get_formatter()._get_help_string(action)
    return text % dict(vars(action), prog=parser.prog, default=action.default)


def _options_with_defaults():
    for name, parser in _parsers():
        for action in parser._actions:
            if (action.option_strings and action.nargs != 0 and not action.required
                    and action.default not in (None, argparse.SUPPRESS)):
                yield pytest.param(parser, action, id=f"{name} {action.option_strings[-1]}")


@pytest.mark.parametrize("parser, action", list(_options_with_defaults()))
def test_every_option_with_a_default_shows_it(parser, action):
    text = _help_line(parser, action)
    assert action.help, f"{action.option_strings[-1]} has no help"
    assert "default" in text
    d = action.default
    if isinstance(d, (int, float, str)) and not isinstance(d, bool):
        shown = {str(d), f"{d:g}"} if isinstance(d, float) else {str(d)}
        assert any(s in text for s in shown), f"{text!r} does not show {d!r}"


def test_the_walk_sees_every_command_and_many_options():
    names = [n for n, _ in _parsers()]
    assert {"fxpsim eval", "fxpsim sweep", "fxpsim data download", "fxpsim format"} <= set(names)
    assert len(list(_options_with_defaults())) > 60


def test_format_rounding_lists_its_choices(capsys):
    assert main(["format", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "{nearest-even,nearest,floor,toward-zero,stochastic}" in out
    assert "(default: nearest-even)" in out


def test_the_defaults_of_the_options_named_in_the_issue(capsys):
    for argv, expected in ((["train"], ("--epochs EPOCHS passes over the training split (default: 10)",
                                        "images per optimizer step (default: 64)")),
                           (["binary"], ("(default: adam)", "(default: 0.1)", "(default: 20)")),
                           (["search"], ("(saturate) (default: wrap)", "sample (default: 0)")),
                           (["data", "download"], ("in seconds (default: 30.0)",))):
        assert main([*argv, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        for e in expected:
            assert e in out, (argv, e)


def test_version_is_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"fxpsim {metadata.version('fxpsim')}\n"
    assert main(["--version"]) == 0


def test_bare_fxpsim_prints_the_command_list(capsys):
    assert main([]) == 2
    printed = capsys.readouterr()
    for command in ("eval", "search", "sweep", "train", "format", "prune", "compress", "stripes", "data"):
        assert f"\n    {command} " in printed.out
    assert DESCRIPTION.splitlines()[0] in printed.out
    assert printed.err == "fxpsim: error: give a COMMAND (listed above), e.g. fxpsim eval\n"


def test_the_top_level_help_is_for_users(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "argparse" not in out and "one module each" not in out
    examples = [line for line in out.splitlines() if line.startswith("  fxpsim ")]
    assert len(examples) == 5 and {e.split()[1] for e in examples} >= {"eval", "search", "train"}


@pytest.mark.parametrize("typo, suggested", [("evl", "eval"), ("swep", "sweep"), ("serach", "search"),
                                             ("prnue", "prune")])
def test_a_mistyped_command_gets_a_suggestion(typo, suggested, capsys):
    assert main([typo, "--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"did you mean '{suggested}'?" in err and repr(typo) in err


def test_an_unknown_command_far_from_any_gets_the_list_pointer(capsys):
    assert main(["xyzzy"]) == 2
    err = capsys.readouterr().err
    assert err == "fxpsim: error: 'xyzzy' is not a command: `fxpsim --help` lists the commands\n"


def test_known_commands_and_options_are_not_typos():
    parser = build_parser()
    for argv in (["eval"], ["--version"], ["-h"], ["data", "download", "mnist"]):
        assert unknown_command(parser, argv) is None
