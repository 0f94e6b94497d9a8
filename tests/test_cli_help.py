"""`--help` reads well in a narrow and in a wide terminal, and `--version` answers
without a command.

The help is click's plain layout (see the note above `app` in vae_anomaly/cli.py):
paragraphs are rewrapped to the terminal, examples (a paragraph that starts with a
\\b line) are printed as written, and flags show no type.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import typer
from typer.testing import CliRunner

from vae_anomaly import __version__
from vae_anomaly.cli import app

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
COMMANDS = [[], ["fit"], ["score"], ["evaluate"], ["report"], ["info"]]
NARROW, WIDE = 80, 200


def help_text(command: list[str], columns: int) -> str:
    """What `vae-anomaly [COMMAND] --help` prints in a terminal COLUMNS wide. (CliRunner
    would not do: it fixes the help's width at 80 whatever the terminal.)"""
    group = typer.main.get_command(app)
    context = group.context_class(group, info_name="vae-anomaly", **group.context_settings)
    if command:
        sub = group.commands[command[0]]
        context = sub.context_class(sub, info_name=command[0], parent=context,
                                    **sub.context_settings)
    with mock.patch.dict(os.environ, {"COLUMNS": str(columns)}):
        text = context.get_help() + "\n"
    assert text.startswith("Usage: "), "the help is no longer click's plain text"
    return text


def click_command(command: list[str]):
    group = typer.main.get_command(app)
    return group.commands[command[0]] if command else group


def text_width(columns: int) -> int:
    """The width click wraps help to: the terminal's less 2, within the app's maximum."""
    maximum = typer.main.get_command(app).context_settings.get("max_content_width") or 80
    return max(min(columns, maximum) - 2, 50)


def verbatim_lines(command: list[str]) -> list[str]:
    """The lines of the help's \\b paragraphs (the examples), which are printed as written."""
    paragraphs = (click_command(command).help or "").split("\n\n")
    return [line.strip() for p in paragraphs if p.strip().startswith("\b")
            for line in p.strip().splitlines()[1:]]


def hard_breaks(text: str, width: int, verbatim: list[str]) -> list[str]:
    """Lines that end inside a paragraph although the next line's first word would have
    fitted on them: a line break that came from the source text, not from the terminal."""
    found = []
    lines = text.splitlines()
    in_description = False  # the command's own text, between the usage and the first heading
    for line, following in zip(lines, lines[1:]):
        if line.startswith("Usage:"):
            in_description = True
        elif line and not line.startswith(" "):  # Arguments:, Options:, Commands:
            in_description = False
        if not line.strip() or not following.strip() or following.strip() in verbatim:
            continue
        indent = len(following) - len(following.lstrip())
        if in_description:
            continues = indent == len(line) - len(line.lstrip())
        else:  # a table row: the help column goes on at `indent`, past the names
            continues = indent > 2 and len(line.rstrip()) > indent
        word = following.split()[0]
        gap = 2 if word.startswith("[") else 1  # "help text  [default: 0]"
        if continues and len(line.rstrip()) + gap + len(word) <= width:
            found.append(f"{line.rstrip()!r} before {word!r}")
    return found


@pytest.mark.parametrize("columns", [NARROW, WIDE])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "vae-anomaly")
def test_paragraphs_are_wrapped_by_the_terminal_not_by_the_source(command, columns):
    text = help_text(command, columns)
    assert hard_breaks(text, text_width(columns), verbatim_lines(command)) == []
    assert max(len(line) for line in text.splitlines()
               if line.strip() not in verbatim_lines(command)) <= text_width(columns)


def test_the_hard_break_check_catches_a_source_line_break():
    text = ("Usage: x\n\n  Some text that ends\n  early although there is room.\n\n"
            "Options:\n  --seed <int>  Seed\n                for the draws.\n")
    assert len(hard_breaks(text, 78, [])) == 2


def test_sentences_that_were_broken_are_on_one_line_in_a_wide_terminal():
    score, fit = help_text(["score"], WIDE), help_text(["fit"], WIDE)
    assert any("p_value (conformal, against held-out normal rows)" in line
               for line in score.splitlines())
    assert any("On files under 6,000 rows, up to --calibration-fits extra fits" in line
               for line in fit.splitlines())


@pytest.mark.parametrize("columns", [NARROW, WIDE])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "vae-anomaly")
def test_flags_show_no_type(command, columns):
    text = help_text(command, columns)
    assert "<bool>" not in text and "BOOLEAN" not in text
    context = click_command(command).context_class(click_command(command), info_name="x")
    flags = [p for p in click_command(command).get_params(context) if getattr(p, "is_flag", False)]
    assert any("--help" in flag.opts for flag in flags)
    for flag in flags:
        names = "(?:-\\w, )?" + re.escape(flag.opts[-1] if len(flag.opts) == 1
                                          else max(flag.opts, key=len))
        first_word = re.escape(flag.help.split()[0])
        assert re.search(rf"^  {names} +{first_word}\b", text, re.MULTILINE), (
            f"{flag.opts} does not go straight on to its help in:\n{text}")


def test_docs_show_no_type_for_flags():
    text = CLI_MD.read_text()
    assert "<bool>" not in text and "BOOLEAN" not in text
    for flag in ("`--fail-on-anomaly` |", "`--fail-on-drift` |", "`-q, --quiet` |", "`--json` |"):
        assert flag in text


@pytest.mark.parametrize("columns", [NARROW, WIDE])
@pytest.mark.parametrize("command", COMMANDS[1:], ids=lambda c: c[0])
def test_examples_are_on_lines_of_their_own(command, columns):
    examples = [line for line in verbatim_lines(command) if "vae-anomaly " in line]
    assert any(line.startswith(f"Example: vae-anomaly {command[0]} ") for line in examples)
    lines = [line.strip() for line in help_text(command, columns).splitlines()]
    for example in examples:
        assert example in lines
    assert not [p for p in click_command(command).help.split("\n\n")
                if "vae-anomaly " in p and not p.strip().startswith("\b")], (
        "an example paragraph without its \\b line would be rewrapped")


def test_brackets_in_help_are_printed_literally():
    text = " ".join(help_text(["score"], WIDE).split())
    assert "'vae-anomaly[dask]'" in text.replace("vae- anomaly", "vae-anomaly")


def test_the_installed_command_prints_help_at_the_terminal_width():
    done = subprocess.run([sys.executable, "-m", "vae_anomaly", "score", "--help"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": str(WIDE)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.replace("python -m vae_anomaly", "vae-anomaly") == help_text(["score"], WIDE)


def test_version_option_prints_the_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"vae-anomaly {__version__}\n"
    assert "--version" in help_text([], NARROW)


def test_version_from_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "vae_anomaly", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"vae-anomaly {__version__}\n", "")


def test_no_arguments_still_prints_the_help_and_usage_errors_stay_one_line():
    bare = CliRunner().invoke(app, [])
    assert bare.exit_code == 2
    assert bare.stdout.startswith("Usage: ") and "Commands:" in bare.stdout
    assert bare.stderr == ""
    wrong = CliRunner().invoke(app, ["--versions"])
    assert wrong.exit_code == 2 and wrong.stdout == ""
    assert wrong.stderr.startswith("Error: No such option: --versions")
    assert len(wrong.stderr.splitlines()) == 1
