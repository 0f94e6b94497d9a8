"""docs/cli.md must stay in step with `--help`.

The part of docs/cli.md below the marker is generated from the CLI's own
click objects. When this test fails, regenerate it with:

    python tests/test_docs.py
"""

from __future__ import annotations

import contextlib
import io
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
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


def test_cli_md_matches_help():
    text = CLI_MD.read_text()
    assert MARKER in text, f"{CLI_MD} lost its generated-reference marker"
    generated = text[text.index(MARKER):]
    assert generated == render_reference(), (
        "docs/cli.md is out of step with --help; regenerate it with `python tests/test_docs.py`")


def test_every_option_in_help_is_in_cli_md():
    from typer.testing import CliRunner
    text = CLI_MD.read_text()
    for command in ("fit", "score", "info"):
        help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
        for word in help_text.split():
            if word.startswith("--") and word.strip(",") != "--help":
                assert word.strip(",") in text, f"{word} of {command} is not in docs/cli.md"


if __name__ == "__main__":
    head = CLI_MD.read_text().split(MARKER)[0] if CLI_MD.exists() else "# Command-line reference\n\n"
    CLI_MD.write_text(head + render_reference())
    print(f"wrote {CLI_MD}")


def test_ci_runs_the_readme_test_command():
    root = CLI_MD.parent.parent
    readme_blocks = (root / "README.md").read_text().split("```")[1::2]
    test_command = next(b.strip() for b in readme_blocks if "pytest" in b)
    ci_lines = [line.strip() for line in (root / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines, ".ci/run no longer runs the README's test command"


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
