"""Every third-party import in the package is a declared runtime dependency, or a guarded optional extra.

``pip install deadpixel`` installs ``[project].dependencies`` and nothing else: an import that only a test
extra happens to provide works in every developer's venv and crashes on a user's first run. Reading the
source with ``ast`` catches such an import in any module, inside functions too, before a user does.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "deadpixel"

# Imports that only an optional extra provides: module -> extra. Each must sit in a ``try`` that catches
# ImportError (see deadpixel.extras), so a missing extra is a one-line message naming it.
OPTIONAL = {"psycopg": "postgres"}
IMPORT_ERRORS = ("ImportError", "ModuleNotFoundError")


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project: dict[str, object] = data["project"]
    return project


def _names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether an import sits in the body of a ``try`` whose handlers catch ImportError."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                caught = handler.type
                names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
                if any(isinstance(n, ast.Name) and n.id in IMPORT_ERRORS for n in names):
                    return True
        child, parent = parent, parents.get(parent)
    return False


@cache
def third_party_imports() -> tuple[tuple[str, str, int, bool], ...]:
    """(top-level module, file, line, guarded) for every absolute import of a module outside the stdlib."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".", 1)[0]
                if top in sys.stdlib_module_names or top == "deadpixel":
                    continue
                where = str(path.relative_to(ROOT))
                found.append((top, where, node.lineno, _guarded(node, parents)))
    return tuple(found)


def test_the_scan_sees_imports_at_module_level_and_inside_functions() -> None:
    seen = {(top, where) for top, where, _, _ in third_party_imports()}
    assert ("sqlalchemy", "src/deadpixel/store/db.py") in seen
    assert ("uvicorn", "src/deadpixel/server/start.py") in seen  # imported inside serve()
    assert ("psycopg", "src/deadpixel/extras.py") in seen


def test_every_third_party_import_is_a_declared_dependency_or_a_guarded_extra() -> None:
    project = _project()
    runtime = _names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    providers = packages_distributions()
    problems = []
    for top, where, line, guarded in third_party_imports():
        dists = {canonicalize_name(d) for d in providers.get(top, [])}
        if top in OPTIONAL:
            extra = OPTIONAL[top]
            if not dists & _names(extras.get(extra, [])):
                problems.append(f"{where}:{line}: {top} is not provided by the [{extra}] extra")
            if not guarded:
                problems.append(f"{where}:{line}: {top} is imported outside try/except ImportError")
        elif not dists:
            problems.append(f"{where}:{line}: {top} is imported, but no installed distribution provides it")
        elif not dists & runtime:
            problems.append(
                f"{where}:{line}: {top} comes from {', '.join(sorted(dists))}, "
                "which is not in [project].dependencies"
            )
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_postgres_without_its_extra_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    """psycopg made unimportable in a real subprocess of the CLI: one line, exit status 1, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEADPIXEL_")}
    env["DEADPIXEL_DATA_DIR"] = str(tmp_path)
    env["DEADPIXEL_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/test"
    program = "import sys; sys.modules['psycopg'] = None; from deadpixel.cli import main; main()"
    for command in (["report"], ["serve"]):
        done = subprocess.run(
            [sys.executable, "-c", program, *command], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "DEADPIXEL_DATABASE_URL" in lines[0]
        assert "pip install 'deadpixel[postgres]'" in lines[0]
