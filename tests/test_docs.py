"""docs/cli.md must stay in step with `--help`.

The part of docs/cli.md below the marker is generated from the CLI's own
click objects. When this test fails, regenerate it with:

    python tests/test_docs.py
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import typer

from vae_anomaly.cli import app

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
MARKER = "<!-- Everything below is generated from --help by `python tests/test_docs.py`. -->"


def render_reference() -> str:
    group = typer.main.get_command(app)
    parent = group.context_class(group, info_name="vae-anomaly")
    parts = [MARKER, ""]
    for name, command in group.commands.items():
        parts += _render_command(name, command, parent)
    return "\n".join(parts).rstrip() + "\n"


def _render_command(name: str, command, parent) -> list[str]:
    context = command.context_class(command, info_name=name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(context))
    lines = [f"## `vae-anomaly {name}`", "", "```", f"vae-anomaly {name} {usage}", "```", ""]
    lines += [_paragraphs(command.help or ""), "", "| argument / option | description |",
              "|---|---|"]
    for param in command.params:
        if param.name == "help":
            continue
        if param.param_type_name == "argument":
            required = " [required]" if param.required else ""
            names, text = command_metavar(param), f"{param.help or ''}{required}"
        else:
            names, text = param.get_help_record(context)
        lines.append(f"| `{_cell(names)}` | {_cell(text)} |")
    return lines + [""]


def command_metavar(param) -> str:
    return param.metavar or param.name.upper()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _paragraphs(text: str) -> str:
    """The help's paragraphs, each on one line. A paragraph that starts with click's
    \\b line (an example, which --help prints as written) loses that line."""
    return "\n\n".join(" ".join(p.removeprefix("\b").split())
                         for p in text.strip().split("\n\n"))


def test_cli_md_matches_help():
    text = CLI_MD.read_text()
    assert MARKER in text, f"{CLI_MD} lost its generated-reference marker"
    generated = text[text.index(MARKER):]
    assert generated == render_reference(), (
        "docs/cli.md is out of step with --help; regenerate it with `python tests/test_docs.py`")


def test_every_option_in_help_is_in_cli_md():
    from typer.testing import CliRunner
    text = CLI_MD.read_text()
    for command in ([], ["fit"], ["score"], ["evaluate"], ["report"], ["info"]):
        help_text = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).stdout
        for option in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", help_text)):
            if option != "--help":
                assert option in text, f"{option} of {command} is not in docs/cli.md"


if __name__ == "__main__":
    head = CLI_MD.read_text().split(MARKER)[0] if CLI_MD.exists() else "# Command-line reference\n\n"
    CLI_MD.write_text(head + render_reference())
    print(f"wrote {CLI_MD}")


def readme_set_up_commands() -> list[str]:
    """The command of each code block of README's "Set-up: two commands" section."""
    readme = (CLI_MD.parent.parent / "README.md").read_text()
    heading = "\n## Set-up: two commands\n"
    assert heading in readme, "README.md lost its `## Set-up: two commands` section"
    section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    # A block is "```[language]\n...\n```": drop the language, keep the command.
    return [block.partition("\n")[2].strip() for block in section.split("```")[1::2]]


def test_ci_runs_the_readme_set_up_commands():
    """.ci/run runs both README set-up commands verbatim, install-and-score first."""
    root = CLI_MD.parent.parent
    commands = readme_set_up_commands()
    assert len(commands) == 2, f"README's set-up section should hold two commands: {commands}"
    install_and_score, test_command = commands
    assert "pytest" in test_command and "pytest" not in install_and_score
    assert "[test]" not in install_and_score, "the first set-up command must be a base install"
    ci_lines = [line.strip() for line in (root / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert "\n" not in command and command in ci_lines, (
            f".ci/run no longer runs this README set-up command, as one line verbatim:\n{command}")
    assert ci_lines.index(install_and_score) < ci_lines.index(test_command), (
        ".ci/run must run the README's install-and-score command before its test command")


def test_python_docs_examples_run(tmp_path, monkeypatch):
    """Every ```python block of docs/python.md runs, in order, from a scratch folder."""
    root = CLI_MD.parent.parent
    text = (root / "docs" / "python.md").read_text()
    blocks = [b.removeprefix("python\n") for b in text.split("```")[1::2]
              if b.startswith("python\n")]
    assert len(blocks) >= 2
    (tmp_path / "sample_data").symlink_to(root / "sample_data")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, "docs/python.md", "exec"), namespace)
        for expected in _documented_prints(block):  # what the doc says a print shows
            assert " ".join(expected.split()) in " ".join(printed.getvalue().split())
    assert (tmp_path / "model.vae").exists() and (tmp_path / "scored.csv").exists()


def _documented_prints(block: str) -> list[str]:
    """The comment lines right after each print(...) line of a code block, joined."""
    lines, found = block.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("print("):
            comment = []
            for following in lines[i + 1:]:
                if not following.startswith("# "):
                    break
                comment.append(following.removeprefix("# ").strip())
            if comment:
                found.append(" ".join(comment))
    return found
