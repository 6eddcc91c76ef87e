"""The import contract in pyproject.toml (``[tool.importlinter]``) holds, and would catch a breach.

The contract says which packages may import which (store below track, enrich, users and mail; the pixel
server's hot path free of the web side, mail, sending and the CLI; no cycles between packages). It runs in
process through import-linter's own entry point, as ``lint-imports`` would; grimp, which builds the graph,
reads every import statement, those inside functions included, and the second test proves it on a
package made for the purpose.
"""

from __future__ import annotations

import ast
import logging
import sys
import textwrap
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def _lint(config: Path = ROOT / "pyproject.toml") -> int:
    """Run the contract check; import-linter configures logging with ``disable_existing_loggers``, which
    would silence every logger already made for the tests that run after this one, so they are turned
    back on."""
    loggers = [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    enabled = [logger for logger in loggers if not logger.disabled]
    try:
        return int(lint_imports(config_filename=str(config), no_cache=True, no_logo=True))
    finally:
        for logger in enabled:
            logger.disabled = False


def test_the_import_contract_holds() -> None:
    assert _lint() == 0


def test_function_level_imports_are_in_the_graph() -> None:
    # deadpixel.config imports deadpixel.security.allowlist only inside _as_webhook_allow.
    details = grimp.build_graph("deadpixel", cache_dir=None).get_import_details(
        importer="deadpixel.config", imported="deadpixel.security.allowlist"
    )
    assert details and all(
        d["line_contents"].startswith("from deadpixel.security.allowlist") for d in details
    )


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.mark.parametrize("where", ["top", "function"])
def test_a_forbidden_import_breaks_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """A store module importing the pixel server, at module level or inside a function, is reported."""
    statement = "from layered.track import serve"
    body = statement if where == "top" else f"def write():\n    {statement}\n"
    _package(
        tmp_path,
        {
            "layered/__init__.py": "",
            "layered/store/__init__.py": "",
            "layered/store/writes.py": body,
            "layered/track/__init__.py": "serve = None\n",
        },
    )
    (tmp_path / "contract.toml").write_text(
        textwrap.dedent("""
        [tool.importlinter]
        root_package = "layered"

        [[tool.importlinter.contracts]]
        name = "store below track"
        type = "forbidden"
        source_modules = ["layered.store"]
        forbidden_modules = ["layered.track"]
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "layered", raising=False)
    assert _lint(tmp_path / "contract.toml") == 1
    assert "layered.store.writes -> layered.track" in capsys.readouterr().out


# Where the settings are read: once per CLI invocation, once per server worker process (uvicorn starts the
# workers and calls create_app in each), and in the container health check's own process. Everything else
# is handed its Settings.
READS_SETTINGS = {"cli/context.py", "server/app.py", "healthcheck.py"}


def _calls(path: Path) -> set[str]:
    """The names of the functions a module calls (``f(...)`` and ``x.f(...)``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
    }


def test_settings_are_read_in_one_place_per_process() -> None:
    package = ROOT / "src" / "deadpixel"
    callers = {
        p.relative_to(package).as_posix() for p in package.rglob("*.py") if "load_settings" in _calls(p)
    }
    assert callers == READS_SETTINGS
