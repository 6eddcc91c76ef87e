"""The first command a user runs works on a fresh machine: README's Quick start, verbatim, and the wheel.

The first check reads the first shell block under ``## Quick start`` from README.md and runs it with bash,
unchanged, in a fresh ``git clone`` of HEAD, with a new empty HOME and no DEADPIXEL_* or virtualenv variables:
pip installs the runtime dependencies and nothing else, so an import that only a test extra provides fails
here as it would for a user. The second builds a wheel from that clone, installs it into a clean venv and
checks that templates, static files, migrations and data sets made it into the wheel.

Both need git and a package index; pip reuses the machine's pip cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
INSTALL_WAIT = 300.0  # seconds the Quick start's pip install may take before /healthz must answer
# One worker runs both: they share the clone, and the wheel builds while the Quick start installs.
pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("first-run")]


def quick_start_command() -> str:
    """The first ``sh`` block under ``## Quick start`` in README.md, as the user copies it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```sh\n(.*?)^```$", section, re.S | re.M)
    assert found, "README's Quick start has no ```sh block"
    return found.group(1)


def _index_host() -> str:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    return urlsplit(index).hostname or "pypi.org"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the repository's HEAD (what a user gets), after checking git and the network."""
    if shutil.which("git") is None:
        pytest.skip("the first-run checks need git to clone the repository, and git is not installed")
    host = _index_host()
    try:
        socket.create_connection((host, 443), timeout=10).close()
    except OSError as exc:
        pytest.skip(f"the first-run checks need the network to reach the package index {host}: {exc}")
    target = tmp_path_factory.mktemp("first-run") / "deadpixel"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=60)
    return target


def install_wheel(clone: Path, work: Path) -> Path:
    """Build a wheel from the clone and install it, without extras, into a new venv; its bin directory."""
    env = clean_env(work / "home")
    dist = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(clone)],
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_WAIT,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("deadpixel-*.whl")
    venv = work / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], env=env, check=True, timeout=INSTALL_WAIT)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_WAIT,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv / "bin"


@pytest.fixture(scope="module")
def wheel_venv(clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[Path]]:
    """The wheel's venv, built in the background: pip's downloads overlap the Quick start's own."""
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(install_wheel, clone, tmp_path_factory.mktemp("wheel"))


def _pip_cache() -> str:
    explicit = os.environ.get("PIP_CACHE_DIR")
    if explicit:
        return explicit
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "pip")


def clean_env(home: Path, port: int | None = None) -> dict[str, str]:
    """The test's environment without deadpixel's or a virtualenv's traces, a new HOME, and a free port."""
    dropped = ("DEADPIXEL_", "VIRTUAL_ENV", "XDG_", "PYTHONPATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    if sys.prefix != sys.base_prefix:  # the venv running the tests is no part of a fresh machine
        own_bin = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != own_bin)
    home.mkdir()
    env["HOME"] = str(home)
    env["PIP_CACHE_DIR"] = _pip_cache()
    if port is not None:
        env["DEADPIXEL_PORT"] = str(port)
    return env


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-30:])


def wait_for_health(proc: subprocess.Popen[bytes], base_url: str, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}) before /healthz answered:\n{_tail(log)}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"/healthz did not answer in time:\n{_tail(log)}")


def _server_pid(root: int) -> int:
    """The ``deadpixel serve`` process: ``root`` itself, or the child bash started for it."""
    for pid in [root, *_children(root)]:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if any(part.endswith(b"deadpixel") for part in cmdline) and b"serve" in cmdline:
            return pid
    raise AssertionError(f"no 'deadpixel serve' process under pid {root}")


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Servers started by a test; whatever is still running at the end is killed with its session."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def deadpixel(bin_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "deadpixel"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def smoke(bin_dir: Path, env: dict[str, str], base_url: str) -> httpx.Response:
    """A pixel made, loaded once and reported as exactly one open; the sign-in page answers 200."""
    made = deadpixel(bin_dir, env, "pixel", "new", "--to", "bob@example.com", "--campaign", "smoke", "--json")
    assert made.returncode == 0, made.stderr
    url = json.loads(made.stdout)["url"]
    assert url.startswith(base_url + "/o/")
    assert httpx.get(url, headers={"User-Agent": "first-run smoke"}, timeout=10).status_code == 200

    opens = -1
    for _ in range(40):  # the group commit writes the open within a moment
        report = deadpixel(bin_dir, env, "report", "smoke", "--json")
        assert report.returncode == 0, report.stderr
        opens = json.loads(report.stdout)["total_opens"]
        if opens:
            break
        time.sleep(0.25)
    assert opens == 1
    assert json.loads(report.stdout)["sent"] == 1

    login = httpx.get(f"{base_url}/login", timeout=10, follow_redirects=False)
    assert login.status_code == 200, login.headers.get("location")
    assert "Sign in" in login.text
    return login


def stop(proc: subprocess.Popen[bytes], server_pid: int, log: Path) -> None:
    os.kill(server_pid, signal.SIGTERM)
    assert proc.wait(30) == 0, _tail(log)


@pytest.mark.slow
def test_the_quick_start_command_runs_verbatim_in_a_fresh_clone(
    clone: Path, wheel_venv: Future[Path], tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    command = quick_start_command()
    assert command.count("\n") == 1 and command.rstrip().endswith("deadpixel serve"), command
    port = free_port()
    env = clean_env(tmp_path / "home", port)
    log = tmp_path / "quick-start.log"
    proc = start(["bash", "-c", command], clone, env, log)
    running.append(proc)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_health(proc, base_url, log, time.monotonic() + INSTALL_WAIT)
    server = _server_pid(proc.pid)

    smoke(clone / ".venv" / "bin", env, base_url)
    stop(proc, server, log)


@pytest.mark.slow
def test_the_wheel_carries_templates_static_files_migrations_and_data_sets(
    wheel_venv: Future[Path], tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    bin_dir = wheel_venv.result(timeout=INSTALL_WAIT)
    port = free_port()
    env = clean_env(tmp_path / "home", port)
    log = tmp_path / "serve.log"
    proc = start([str(bin_dir / "deadpixel"), "serve"], tmp_path, env, log)
    running.append(proc)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_health(proc, base_url, log, time.monotonic() + 60)
    assert (tmp_path / "home" / ".local" / "share" / "deadpixel" / "deadpixel.db").is_file()

    login = smoke(bin_dir, env, base_url)
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', login.text)
    assert "/static/style.css" in assets
    for asset in [*assets, "/static/feed.js"]:
        assert httpx.get(base_url + asset, timeout=10).status_code == 200, asset
    stop(proc, proc.pid, log)

    args = ["classify", "--user-agent", "Mozilla/5.0", "--ip", "17.58.0.1", "--json"]
    from_wheel = deadpixel(bin_dir, env, *args)
    assert from_wheel.returncode == 0, from_wheel.stderr
    verdict = json.loads(from_wheel.stdout)
    assert verdict["kind"] == "prefetch" and "Apple" in verdict["reason"]
    from_tree = deadpixel(Path(sys.executable).parent, clean_env(tmp_path / "tree-home", port), *args)
    assert json.loads(from_tree.stdout) == verdict

    # No extras were installed: asking for PostgreSQL names the extra in one line.
    postgres_env = {**env, "DEADPIXEL_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"}
    postgres = deadpixel(bin_dir, postgres_env, "report")
    assert postgres.returncode == 1
    assert postgres.stderr.strip().count("\n") == 0, postgres.stderr
    assert "pip install 'deadpixel[postgres]'" in postgres.stderr
