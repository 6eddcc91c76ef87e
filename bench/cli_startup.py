"""How long the command line takes to start: ``deadpixel --help`` and ``deadpixel report --json``.

A command's wall time on a shared machine moves with the load, so every round runs each case once, in
turn, next to two baselines: ``python3 -c pass`` (starting Python) and ``python3 -c 'import click'``
(starting Python with the one library the root group needs). It prints the median of each case over the
rounds and its ratio to both baselines; the ratios are what to compare between runs and machines.

``report --json`` reads a store of its own (a temp data dir, or a fresh schema in the PostgreSQL database
named) seeded with ``deadpixel demo`` and already migrated, as it is on a second run. ``--src DIR`` runs
another checkout's ``src`` (e.g. an older commit's, from ``git archive``) with this environment's
libraries, for a before/after in one run.

    python bench/cli_startup.py [--rounds 15] [--messages 300] [--database-url URL] [--src DIR]...
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BASELINES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import click'": [sys.executable, "-c", "import click"],
}


def deadpixel_command() -> list[str]:
    """The console script next to this Python, as a user runs it; ``-m deadpixel`` without one."""
    script = Path(sys.executable).parent / "deadpixel"
    return [str(script)] if script.exists() else [sys.executable, "-m", "deadpixel"]


@contextmanager
def store_env(database_url: str | None) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEADPIXEL_")}
    with tempfile.TemporaryDirectory(prefix="deadpixel-cli-bench-") as data_dir:
        env["DEADPIXEL_DATA_DIR"] = data_dir
        if database_url is None:
            yield env
            return
        from sqlalchemy import create_engine, text

        schema = f"bench_{secrets.token_hex(4)}"
        admin = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        sep = "&" if "?" in database_url else "?"
        env["DEADPIXEL_DATABASE_URL"] = f"{database_url}{sep}options=-csearch_path%3D{schema}"
        try:
            yield env
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


def with_src(env: dict[str, str], src: str | None) -> dict[str, str]:
    if src is None:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))}


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run; CPU time moves less with the machine's load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode().strip()}")
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15, help="runs of every case (default 15)")
    parser.add_argument("--messages", type=int, default=300, help="demo messages in the store (default 300)")
    parser.add_argument("--database-url", help="a PostgreSQL database to make a schema in (default: SQLite)")
    parser.add_argument(
        "--src", action="append", default=[], metavar="DIR",
        help="also time the deadpixel package in DIR (a checkout's src), labelled by DIR; repeatable",
    )  # fmt: skip
    args = parser.parse_args()
    deadpixel = deadpixel_command()
    load_before = os.getloadavg()
    with store_env(args.database_url) as env:
        subprocess.run([*deadpixel, "demo", "--messages", str(args.messages)], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        cases: dict[str, tuple[list[str], dict[str, str]]] = {k: (v, env) for k, v in BASELINES.items()}
        for src in [None, *args.src]:
            label = "" if src is None else f" [{src}]"
            src_env = with_src(env, src)
            cases[f"deadpixel --help{label}"] = ([*deadpixel, "--help"], src_env)
            cases[f"deadpixel report --json{label}"] = ([*deadpixel, "report", "--json"], src_env)
        for argv, case_env in cases.values():  # warm the page cache and fold the rollups once
            timed(argv, case_env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (argv, case_env) in cases.items():
                took, used = timed(argv, case_env)
                times[name].append(took)
                cpu[name].append(used)
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    bare, click_only = (medians[name] for name in BASELINES)
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"median wall time of {args.rounds} rounds; store: {store}, {args.messages} demo messages")
    print("| command | median s | min s | max s | median CPU s | / python -c pass | / import click |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in times.items():
        m = medians[name]
        figures = [m, min(runs), max(runs), statistics.median(cpu[name])]
        print(
            f"| `{name}` | "
            + " | ".join(f"{x:.3f}" for x in figures)
            + f" | {m / bare:.2f} | {m / click_only:.2f} |"
        )
    load = " ".join(f"{x:.2f}" for x in (*load_before, *os.getloadavg()))
    print(f"load average (1, 5, 15 min) before and after: {load} on {os.cpu_count()} cores")
    if shutil.which("git"):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        print(f"commit: {commit.stdout.strip() or '?'}")


if __name__ == "__main__":
    main()
