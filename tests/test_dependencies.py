"""Every third-party module the code imports is declared in pyproject.toml.

A module imported by the package must come from a base dependency, or else from
an extra and then only inside a function (so a base install still imports and runs
vae_anomaly, and the code can say which extra to install). A module imported by
the tests must come from a base dependency or the `test` extra, which is what
`pip install -e ".[test]"` installs. Which distribution provides which module is
read from the installed distributions (scikit-learn provides `sklearn`), not from
a list kept here.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "vae_anomaly"
TEST_EXTRA = "test"
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them: Scikit_Learn == scikit-learn."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> tuple[str, set[str]]:
    """(distribution, extras) of a requirement string such as "dask[distributed]>=2024.1"."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return _parse_requirement_regex(text)
    requirement = Requirement(text)
    return normalize(requirement.name), {normalize(e) for e in requirement.extras}


def _parse_requirement_regex(text: str) -> tuple[str, set[str]]:
    match = _NAME.match(text)
    assert match, f"cannot read the requirement {text!r} of pyproject.toml"
    extras = {normalize(e) for e in (match.group(2) or "").split(",") if e.strip()}
    return normalize(match.group(1)), extras


def _extra_requires(distribution: str, extra: str) -> set[str]:
    """The distributions `distribution[extra]` adds, when `distribution` is installed."""
    try:
        requires = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    found = set()
    for text in requires:
        spec, _, marker = text.partition(";")
        # The marker names the extra as written in the metadata (not always normalized).
        extras_named = {normalize(e) for e in re.findall(r"""extra\s*==\s*['"]([^'"]+)['"]""",
                                                          marker)}
        if extra in extras_named:
            found.add(parse_requirement(spec)[0])
    return found


def declared(requirements: list[str]) -> set[str]:
    """The distributions a list of requirements installs directly, extras included.

    "dask[distributed]" declares dask, and distributed (the extra's name, and what
    dask's metadata says the extra requires, when dask is installed).
    """
    names = set()
    for text in requirements:
        name, extras = parse_requirement(text)
        names.add(name)
        for extra in extras:
            names |= {extra} | _extra_requires(name, extra)
    return names


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def base_distributions() -> set[str]:
    return declared(pyproject()["dependencies"])


def extra_distributions() -> dict[str, set[str]]:
    """Each extra's distributions, for those only an extra declares."""
    return {extra: declared(reqs) for extra, reqs in
            pyproject().get("optional-dependencies", {}).items()}


@functools.cache
def module_providers() -> dict[str, set[str]]:
    return {module: {normalize(d) for d in dists}
            for module, dists in importlib.metadata.packages_distributions().items()}


def providers(module: str) -> set[str] | None:
    """The distributions that install `module`, or None when none installed does."""
    return module_providers().get(module)


def is_stdlib(module: str) -> bool:
    return module in sys.stdlib_module_names


class _Imports(ast.NodeVisitor):
    """Each absolute import of a file: (top-level module, line, lazy, guarded).

    lazy: the import runs only when a function runs (or only for a type checker),
    not when the file is imported. guarded: it sits in a `try` that catches
    ImportError, so the code has a way on without the module. Calls such as
    pytest.importorskip("dask") count as lazy imports: they name a module the
    tests expect to be installed, or they skip.
    """

    def __init__(self):
        self.found: list[tuple[str, int, bool, bool]] = []
        self.depth = self.guards = 0

    def _add(self, name: str, line: int, lazy: bool = False):
        self.found.append((name.split(".")[0], line, lazy or self.depth > 0, self.guards > 0))

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node):
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self.depth += 1
            for child in node.body:
                self.visit(child)
            self.depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Try(self, node):
        caught = set()
        for handler in node.handlers:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {getattr(k, "id", getattr(k, "attr", None)) for k in kinds}
        guarded = bool(caught & {"ImportError", "ModuleNotFoundError"})
        self.guards += guarded
        for child in node.body:
            self.visit(child)
        self.guards -= guarded
        for child in node.handlers + node.orelse + node.finalbody:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node):
        if node.level == 0 and node.module:
            self._add(node.module, node.lineno)

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (name in ("importorskip", "import_module") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            self._add(node.args[0].value, node.lineno, lazy=True)
        self.generic_visit(node)


def imports(path: Path) -> list[tuple[str, int, bool, bool]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor.found


def _provided(module: str, distributions: set[str]) -> bool:
    found = providers(module)
    if found is None:  # not installed: only a declared distribution of its very name counts
        return normalize(module) in distributions
    return bool(found & distributions)


def _dist_hint(module: str) -> str:
    found = providers(module)
    if found:
        return " or ".join(sorted(found))
    return f"the distribution that provides `{module}` (none installed here does)"


def problems(files: list[Path], local: set[str], allowed: set[str], where: str, *,
             extras: dict[str, set[str]], allow_guarded: bool = False) -> list[str]:
    """One line per module imported but not covered by `allowed` (or, lazily, by `extras`).

    allow_guarded: an import in a `try` that catches ImportError needs no declaration.
    """
    undeclared: dict[str, list[str]] = {}
    eager: dict[str, list[str]] = {}  # from an extra only, but imported at module level
    for path in files:
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for module, line, lazy, guarded in imports(path):
            if (is_stdlib(module) or module in local or _provided(module, allowed)
                    or (guarded and allow_guarded)):
                continue
            if not any(_provided(module, dists) for dists in extras.values()):
                undeclared.setdefault(module, []).append(f"{name}:{line}")
            elif not lazy:
                eager.setdefault(module, []).append(f"{name}:{line}")
    found = [f"`{module}` is imported at {', '.join(places)}, but no dependency declared in "
             f"pyproject.toml provides it; add {_dist_hint(module)} (with a tested lower bound) "
             f"to {where}" for module, places in undeclared.items()]
    for module, places in eager.items():
        in_extras = sorted(e for e, dists in extras.items() if _provided(module, dists))
        found.append(f"`{module}` is imported at module level at {', '.join(places)}, but it "
                     f"comes only from the extra [{', '.join(in_extras)}] of pyproject.toml; "
                     "import it inside the function that needs it (with the one-line error "
                     f"naming the pip install), or add {_dist_hint(module)} to {where}")
    return found


def test_package_imports_are_declared():
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    assert files, f"no Python files under {ROOT / PACKAGE}"
    found = problems(files, {PACKAGE}, base_distributions(),
                     "[project] dependencies", extras=extra_distributions())
    assert not found, "\n".join(found)


def test_test_imports_are_declared():
    tests = ROOT / "tests"
    files = sorted(tests.rglob("*.py"))
    local = {PACKAGE} | {p.stem for p in files} | {p.name for p in tests.iterdir() if p.is_dir()}
    extras = extra_distributions()
    assert TEST_EXTRA in extras, f"pyproject.toml lost its [{TEST_EXTRA}] extra"
    found = problems(files, local, base_distributions() | extras[TEST_EXTRA],
                     f"[project] dependencies if the package needs it too, else to "
                     f"[project.optional-dependencies] {TEST_EXTRA}", extras={},
                     allow_guarded=True)  # e.g. packaging, above: without it, a regex reads
    assert not found, "\n".join(found)


def test_requirement_parsing_agrees_without_packaging():
    """The regex used when `packaging` is absent reads pyproject's requirements alike."""
    project = pyproject()
    texts = project["dependencies"] + [r for reqs in project.get("optional-dependencies",
                                                                  {}).values() for r in reqs]
    for text in texts:
        assert _parse_requirement_regex(text) == parse_requirement(text), text
    assert _parse_requirement_regex("dask[distributed] >=2024.1") == ("dask", {"distributed"})
    assert _parse_requirement_regex("Scikit_Learn>=1.3; python_version>'3'") == (
        "scikit-learn", set())


def test_the_checker_sees_what_it_should():
    """sklearn is scikit-learn's; dask[distributed] declares distributed; lazy is lazy."""
    assert "scikit-learn" in (providers("sklearn") or set())
    assert {"dask", "distributed"} <= declared(["dask[distributed]>=2024.1"])
    source = ("import os\nimport numpy.linalg\nfrom typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    import dask\n"
              "def f():\n    from distributed import Client\n    pytest.importorskip('hypothesis')\n"
              "try:\n    import zstandard\nexcept (ModuleNotFoundError, OSError):\n    import gzip\n")
    visitor = _Imports()
    visitor.visit(ast.parse(source))
    assert visitor.found == [("os", 1, False, False), ("numpy", 2, False, False),
                             ("typing", 3, False, False), ("dask", 5, True, False),
                             ("distributed", 7, True, False), ("hypothesis", 8, True, False),
                             ("zstandard", 10, False, True), ("gzip", 12, False, False)]


def test_the_checker_reports_what_it_should(tmp_path):
    """An undeclared module, and an extra's module imported at module level, are named."""
    code = tmp_path / "module.py"
    code.write_text("import numpy\nimport distributed\nimport no_such_module_xq.sub\n"
                    "def f():\n    import distributed\n")
    found = problems([code], {PACKAGE}, base_distributions(), "[project] dependencies",
                     extras=extra_distributions())
    assert len(found) == 2, found
    assert found[0].startswith(f"`no_such_module_xq` is imported at {code}:3, but no dependency")
    assert found[1].startswith(f"`distributed` is imported at module level at {code}:2, but it "
                               "comes only from the extra [")
    assert "dask" in found[1] and "inside the function" in found[1]
