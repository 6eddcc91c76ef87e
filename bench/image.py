"""Build deadpixel's container image with podman and check what it contains, without running a container.

``python bench/image.py`` (as root, a few minutes):

1. a base image from Debian's packages: ``debootstrap --variant=minbase bookworm`` imported into podman as
   ``deadpixel-base-bookworm`` (reused when podman has it), so no registry is needed and the Containerfile's
   "plain Debian, no Python yet" path is the one tested;
2. ``podman build`` of the Containerfile on it (``--isolation=chroot``; the machine's CA bundle is mounted for
   pip's downloads and named with the PIP_CERT build argument, so it is not part of the image);
3. the image's filesystem mounted (``podman create`` + ``podman mount``) and its ENTRYPOINT + CMD run with
   its ENV under ``chroot`` as its USER, in a private network, mount and PID namespace (``unshare``), so the
   server is PID 1 with a loopback of its own, as in a container. Then the checks below, each printed, and
   exit status 1 when any failed. Containers and mounts are removed at the end; the image is kept.

``--cached`` lets podman reuse the layers of an earlier build (the build time is then not a full build);
``--workers N`` runs the server with N worker processes (uvicorn's supervisor is then PID 1).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASE_NAME = "deadpixel-base-bookworm"
ROOTFS_CACHE = Path("/var/tmp/deadpixel-bench/rootfs-bookworm")
HOST_CA = "/etc/ssl/certs"
SECRET_DB = "/data/from-secret.db"
PODMAN = ["podman", "--cgroup-manager=cgroupfs"]


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}{f'  ({detail})' if detail else ''}", flush=True)
        return ok

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.results if not ok)


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)


def base_image() -> str:
    """The Debian base: podman's copy if it has one, else debootstrap (cached on disk) and import."""
    if subprocess.run([*PODMAN, "image", "exists", BASE_NAME]).returncode == 0:
        print(f"base: {BASE_NAME} (already in podman)")
        return BASE_NAME
    if not (ROOTFS_CACHE / "etc" / "debian_version").exists():
        print(f"base: debootstrap --variant=minbase bookworm {ROOTFS_CACHE} ...", flush=True)
        ROOTFS_CACHE.parent.mkdir(parents=True, exist_ok=True)
        run("debootstrap", "--variant=minbase", "bookworm", str(ROOTFS_CACHE), "http://deb.debian.org/debian")
    # Without the downloaded packages and apt's lists, as in Debian's own images.
    leave_out = ["--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*"]
    tar = subprocess.Popen(["tar", "-C", str(ROOTFS_CACHE), *leave_out, "-c", "."], stdout=subprocess.PIPE)
    run(*PODMAN, "import", "-", BASE_NAME, stdin=tar.stdout)
    tar.wait()
    print(f"base: imported {ROOTFS_CACHE} as {BASE_NAME}")
    return BASE_NAME


def build(tag: str, base: str, cached: bool) -> float:
    cmd = [
        *PODMAN, "build", "--isolation=chroot", "--format=docker", "--file", str(REPO / "Containerfile"),
        "--build-arg", f"BASE={base}",
        "--volume", f"{HOST_CA}:/run/build-certs:ro",
        "--build-arg", "PIP_CERT=/run/build-certs/ca-certificates.crt",
        "--tag", tag,
    ]  # fmt: skip
    if not cached:
        cmd.append("--no-cache")
    started = time.monotonic()
    result = subprocess.run([*cmd, str(REPO)], text=True, capture_output=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"podman build failed after {seconds:.0f} s")
    return seconds


def fetch(url: str) -> int:
    """One GET from inside the server's network namespace: its status, or 0 when nothing answered."""
    host_port = url.split("/")[2]
    conn = http.client.HTTPConnection(host_port, timeout=5)
    try:
        conn.request("GET", "/" + url.split("/", 3)[3])
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def load(url: str, threads: int, seconds: float) -> dict[str, int]:
    """Keep-alive GETs of ``url`` from ``threads`` threads until the server stops answering (or time is up).

    Counts only 200 answers that arrived whole: those are the opens the server promised to have stored.
    """
    host_port = url.split("/")[2]
    path = "/" + url.split("/", 3)[3]
    answered = [0] * threads
    errors = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn: http.client.HTTPConnection | None = None
        refused = 0
        while time.monotonic() < deadline and refused < 20:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host_port, timeout=5)
                conn.request("GET", path, headers={"User-Agent": f"Mozilla/5.0 load-{i}"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    answered[i] += 1
                    refused = 0
                else:
                    errors[i] += 1
            except OSError:
                errors[i] += 1
                refused += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"answered": sum(answered), "errors": sum(errors)}


class Container:
    """An image's filesystem mounted by podman, and its entrypoint run in namespaces of its own."""

    def __init__(self, image: str) -> None:
        info = json.loads(run(*PODMAN, "image", "inspect", image).stdout)[0]
        self.config: dict[str, Any] = info["Config"]
        self.healthcheck: dict[str, Any] = info.get("Healthcheck") or self.config.get("Healthcheck") or {}
        self.size = int(info["Size"])
        self.id = run(*PODMAN, "create", image).stdout.strip()
        self.root = Path(run(*PODMAN, "mount", self.id).stdout.strip())
        self.user = str(self.config.get("User", ""))
        self.env = dict(item.split("=", 1) for item in self.config.get("Env", []))
        self.env.setdefault("HOME", "/data")
        self.server: subprocess.Popen[str] | None = None
        self.pid = 0

    @property
    def command(self) -> list[str]:
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [])]

    def chroot(self, *argv: str) -> list[str]:
        return [shutil.which("chroot") or "chroot", f"--userspec={self.user}", str(self.root), *argv]

    def _namespaced(self, argv: list[str]) -> list[str]:
        """``argv`` in this root as its user: PID 1 of a new PID namespace, with a loopback of its own (up)
        and its own /proc, /dev and /tmp, as in a container."""
        script = (
            'set -e; ip link set lo up; mount -t proc proc "$0/proc"; mount --rbind /dev "$0/dev"; '
            'mount -t tmpfs -o mode=1777 tmpfs "$0/tmp"; exec "$@"'
        )
        return ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "/bin/sh", "-c", script,
                str(self.root), *self.chroot(*argv)]  # fmt: skip

    def _host_env(self) -> dict[str, str]:
        return {**self.env, "PATH": f"{self.env.get('PATH', '')}:/usr/sbin:/usr/bin:/sbin:/bin"}

    def isolated(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A one-off command in namespaces of its own (another container on the same volume)."""
        cmd = self._namespaced(list(argv))
        return subprocess.run(cmd, env=self._host_env(), text=True, capture_output=True, timeout=timeout)

    def start(self, extra_env: dict[str, str]) -> None:
        """ENTRYPOINT + CMD with the image's ENV and ``extra_env``, namespaced as above."""
        self.env.update(extra_env)
        self.server = subprocess.Popen(
            self._namespaced(self.command), env=self._host_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.pid and time.monotonic() < deadline:
            children = Path(f"/proc/{self.server.pid}/task/{self.server.pid}/children")
            if children.exists() and children.read_text().split():
                self.pid = int(children.read_text().split()[0])
            time.sleep(0.01)
        if not self.pid:
            raise SystemExit("unshare did not start the entrypoint")

    def inside(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command in the running server's network and mount namespaces, in its root, as its user."""
        cmd = ["nsenter", f"--target={self.pid}", "--net", "--mount", "--", *self.chroot(*argv)]
        return subprocess.run(cmd, env=self._host_env(), text=True, capture_output=True, timeout=timeout)

    def host_python(self, *args: str, timeout: float = 60) -> str:
        """This script's own helpers, run by the host's Python inside the server's network namespace."""
        cmd = ["nsenter", f"--target={self.pid}", "--net", "--", sys.executable, __file__, *args]
        return subprocess.run(cmd, text=True, capture_output=True, timeout=timeout, check=True).stdout

    def wait_healthy(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server is not None and self.server.poll() is not None:
                return False
            if self.host_python("--fetch", "http://127.0.0.1:8000/healthz").strip() == "200":
                return True
            time.sleep(0.2)
        return False

    def remove(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()  # unshare --kill-child takes the namespace's processes with it
            self.server.wait(10)
        subprocess.run([*PODMAN, "umount", self.id], capture_output=True)
        subprocess.run([*PODMAN, "rm", "--force", self.id], capture_output=True)


def report(c: Container, campaign: str, *, running: bool = True) -> dict[str, Any]:
    argv = ("deadpixel", "report", campaign, "--json")
    result = c.inside(*argv) if running else c.isolated(*argv)
    return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr.strip()}


def check_image(c: Container, checks: Checks) -> None:
    uid = c.user.split(":")[0]
    checks.check("the image runs as a non-root user", uid not in ("", "0", "root"), f"USER {c.user}")
    checks.check("DEADPIXEL_DATA_DIR is /data", c.env.get("DEADPIXEL_DATA_DIR") == "/data")
    checks.check("/data is a volume", "/data" in (c.config.get("Volumes") or {}))
    data = (c.root / "data").stat()
    checks.check(
        "/data belongs to the image's user, 0700",
        str(data.st_uid) == uid and stat.S_IMODE(data.st_mode) == 0o700,
        f"uid {data.st_uid}, mode {stat.S_IMODE(data.st_mode):o}",
    )
    checks.check(
        "the entrypoint is deadpixel itself (exec form)", c.command[:1] == ["deadpixel"], str(c.command)
    )
    found = c.isolated("/bin/sh", "-c", "command -v deadpixel").stdout.strip()
    checks.check("deadpixel is on PATH", found == "/opt/deadpixel/bin/deadpixel", found)
    imports = c.isolated(
        "python3", "-c", "import importlib, pkgutil, deadpixel\n"
        "for m in pkgutil.walk_packages(deadpixel.__path__, 'deadpixel.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)",
    )  # fmt: skip
    problem = imports.stderr.strip().splitlines()[-1] if imports.returncode else ""
    checks.check("every deadpixel module imports (no undeclared dependency)", not problem, problem)
    test = c.healthcheck.get("Test")
    checks.check("the image has a HEALTHCHECK", bool(test), str(test))


def healthcheck_argv(c: Container) -> list[str]:
    test = list(c.healthcheck.get("Test") or [])
    if test[:1] == ["CMD"]:
        return test[1:]
    if test[:1] == ["CMD-SHELL"]:
        return ["/bin/sh", "-c", test[1]]
    return test


def check_running(c: Container, checks: Checks, workers: int) -> None:
    secret_dir = c.root / "run" / "secrets"
    secret_dir.mkdir(parents=True, exist_ok=True)
    secret = secret_dir / "database_url"
    secret.write_text(f"sqlite:///{SECRET_DB}\n")
    uid, gid = (int(x) for x in [*c.user.split(":"), c.user][:2])
    os.chown(secret, uid, gid)
    secret.chmod(0o400)
    # The open cap (60 stored opens per message and minute) would make the SIGTERM check below count
    # capped opens; it is off here, which also shows a setting taken from the environment.
    c.start(
        {
            "DEADPIXEL_DATABASE_URL_FILE": "/run/secrets/database_url",
            "DEADPIXEL_OPEN_CAP": "0",
            "DEADPIXEL_WORKERS": str(workers),
        }
    )
    healthy = c.wait_healthy()
    checks.check("the entrypoint serves: /healthz answers 200 inside the namespace", healthy)
    if not healthy:
        assert c.server is not None
        c.server.kill()
        print((c.server.communicate()[0] or "")[-3000:])
        return
    status = Path(f"/proc/{c.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uids = fields["Uid"].split()
    checks.check("the server runs as the image's user", set(uids) == {str(uid)}, f"Uid {' '.join(uids)}")
    ns_pids = fields["NSpid"].split()
    checks.check("the server is PID 1 of its PID namespace", ns_pids[-1] == "1", f"NSpid {' '.join(ns_pids)}")
    health = c.inside(*healthcheck_argv(c))
    checks.check("the HEALTHCHECK command exits 0", health.returncode == 0, health.stderr.strip())

    made = c.inside(
        "deadpixel", "pixel", "new", "--to", "bob@example.com", "--campaign", "image-check", "--json"
    )
    url = json.loads(made.stdout)["url"] if made.returncode == 0 else ""
    got = c.host_python("--fetch", url).strip() if url else made.stderr.strip()
    before = report(c, "image-check")
    checks.check(
        "a pixel from `deadpixel pixel new` is recorded (report --json)",
        got == "200" and before.get("total_opens") == 1,
        f"GET {got}, total_opens {before.get('total_opens', before)}",
    )
    checks.check(
        "DEADPIXEL_DATABASE_URL_FILE is honoured",
        (c.root / SECRET_DB.lstrip("/")).is_file() and not (c.root / "data" / "deadpixel.db").exists(),
        f"store at {SECRET_DB}",
    )

    made = c.inside("deadpixel", "pixel", "new", "--to", "ann@example.com", "--campaign", "sigterm", "--json")
    url = json.loads(made.stdout)["url"]
    assert c.server is not None
    loader = subprocess.Popen(
        ["nsenter", f"--target={c.pid}", "--net", "--", sys.executable, __file__, "--load", url],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2.0)
    os.kill(c.pid, signal.SIGTERM)
    stopped = time.monotonic()
    try:
        status_code = c.server.wait(40)
    except subprocess.TimeoutExpired:
        status_code = -1
    took = time.monotonic() - stopped
    counts = json.loads(loader.communicate(timeout=60)[0])
    output = c.server.stdout.read() if c.server.stdout else ""
    checks.check("SIGTERM: the server exits 0", status_code == 0, f"status {status_code} after {took:.1f} s")
    stored = report(c, "sigterm", running=False).get("total_opens")
    checks.check(
        "SIGTERM under load: every answered open is stored",
        counts["answered"] > 0 and stored == counts["answered"],
        f"answered {counts['answered']}, stored {stored}; {counts['errors']} requests refused or cut off",
    )
    checks.check("the server's output has no traceback", "Traceback" not in output, output.strip()[-300:])
    after = c.isolated(*healthcheck_argv(c))
    checks.check("the HEALTHCHECK fails when nothing answers", after.returncode != 0, after.stderr.strip())

    wrong: list[str] = []
    for path in [c.root / "data", *(c.root / "data").rglob("*")]:
        st = path.lstat()
        private = stat.S_IMODE(st.st_mode) & 0o077 == 0
        if st.st_uid != uid or not private:
            wrong.append(f"{path.relative_to(c.root)} uid {st.st_uid} mode {stat.S_IMODE(st.st_mode):o}")
    names = sorted(str(p.relative_to(c.root / "data")) for p in (c.root / "data").rglob("*"))
    checks.check(
        "every file in /data belongs to the image's user, for its eyes only",
        not wrong and bool(names),
        "; ".join(wrong) if wrong else ", ".join(names),
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tag", default="localhost/deadpixel:bench")
    parser.add_argument("--cached", action="store_true", help="reuse podman's layer cache")
    parser.add_argument("--workers", type=int, default=1, help="DEADPIXEL_WORKERS for the server (default 1)")
    parser.add_argument("--fetch", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fetch:
        print(fetch(args.fetch))
        return 0
    if args.load:
        print(json.dumps(load(args.load, threads=4, seconds=30)))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run it as root: podman build, chroot and unshare need it")
    for tool in ("podman", "debootstrap", "unshare", "nsenter", "chroot", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")

    checks = Checks()
    base = base_image()
    seconds = build(args.tag, base, args.cached)
    print(f"build: {seconds:.0f} s{' (layer cache allowed)' if args.cached else ' (no layer cache)'}")
    c = Container(args.tag)
    print(f"image: {args.tag}, {c.size / 1e6:.0f} MB; command {c.command}, user {c.user}")
    try:
        check_image(c, checks)
        check_running(c, checks, args.workers)
    finally:
        c.remove()
    print(f"{len(checks.results) - checks.failed} of {len(checks.results)} checks passed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
