"""The command line starts fast: it imports what the command that runs needs, and nothing else.

Each run is a real ``deadpixel`` process; a small runner records which modules it imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from deadpixel.cli import COMMANDS, main
from deadpixel.cli.lazy import load

RUNNER = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
from deadpixel.cli import main
main(sys.argv[1:], prog_name="deadpixel")
"""

# Modules no --help needs: the store, the migrations, the web stack, templates, HTTP clients, the enrichment.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "starlette",
    "uvicorn",
    "jinja2",
    "httpx",
    "httpcore",
    "ua_parser",
    "deadpixel.enrich",
)


def run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env={**os.environ, "MODULES_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, set(json.loads(out.read_text()))


def loaded(modules: set[str], *names: str) -> list[str]:
    return sorted(m for m in modules for name in names if m == name or m.startswith(name + "."))


def test_help_lists_every_command_without_importing_any(tmp_path: Path) -> None:
    done, modules = run(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    for name in COMMANDS:
        assert f"\n  {name} " in done.stdout
    assert loaded(modules, *HEAVY) == []
    assert loaded(modules, "deadpixel") == [
        "deadpixel",
        "deadpixel.cli",
        "deadpixel.cli.errors",
        "deadpixel.cli.lazy",
    ]


@pytest.mark.slow
def test_report_json_on_a_current_store_skips_the_migrations_and_the_web_stack(
    tmp_path: Path, env: dict[str, str]
) -> None:
    seeded = subprocess.run(
        [sys.executable, "-m", "deadpixel", "demo", "--messages", "10"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    done, modules = run(tmp_path, "report", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sent"] == 10
    assert (
        loaded(
            modules,
            "alembic",
            "starlette",
            "uvicorn",
            "jinja2",
            "httpx",
            "httpcore",
            "ua_parser",
            "deadpixel.enrich",
        )
        == []
    )
    if env["DEADPIXEL_DATABASE_URL"].startswith("sqlite"):
        assert loaded(modules, "sqlalchemy.dialects.postgresql") == []


def test_a_brand_new_store_is_still_created_by_report(tmp_path: Path, env: dict[str, str]) -> None:
    done, modules = run(tmp_path, "report", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sent"] == 0
    assert "alembic" in modules  # the migrations ran, so the check above would see them if they did


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_matches_each_command(name: str) -> None:
    command = load(COMMANDS[name].target)
    stand_in = click.Command(name, help=COMMANDS[name].help)
    for limit in (30, 45, 61, 200):
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)
    assert main.get_command(click.Context(main), name) is command


def test_an_unknown_command_is_refused_as_before(tmp_path: Path) -> None:
    done, _ = run(tmp_path, "nosuch")
    assert done.returncode == 2
    assert "No such command 'nosuch'." in done.stderr
