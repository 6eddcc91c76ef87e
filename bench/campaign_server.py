"""How fast ``deadpixel serve`` sends a stored campaign, next to ``deadpixel campaign send`` in the same run.

One run of ``python bench/campaign_server.py`` does, on loopback, with ``bench/campaign.py``'s sink,
template and list (an aiosmtpd sink in its own process pinned to CPU 1; a 7 KB newsletter with 16 tracked
links):

* **The command line.** ``deadpixel campaign send`` (pinned to CPU 0, rate limit off) on the list: the
  path that sends before it returns.
* **The server.** ``deadpixel serve`` (one worker, pinned to CPU 0) on a fresh store; the same campaign
  is stored with ``campaign send --after 1s`` and the server's due-work thread sends it through the same
  ``CampaignRunner``. Timed from the moment the store first shows it ``sending`` to the moment it shows it
  ``done`` (polled every 50 ms).
* **The dashboard.** The same, but the campaign comes the way a browser gives it: signed in over HTTP, the
  list uploaded and the HTML pasted on the New campaign page, Send (the confirmation, which counts the list
  against the suppression list), then "Send to N recipients". The two steps are timed on their own (they
  are the dashboard's only additions); the send is timed as the server's.

Exactness: for each path the sink must have received exactly one message per recipient. Bar: the server
sends at 200 messages a second or more, from the command line's store and from the dashboard's alike.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from campaign import SinkProcess, campaign_send, template_html, write_recipients
from harness.common import child_env, free_port, http_get
from harness.cpu import all_processes, tree_cpu


def _env(workdir: Path, sink_port: int, port: int | None = None) -> dict[str, str]:
    env = {
        **child_env(),
        "DEADPIXEL_DATA_DIR": str(workdir),
        "DEADPIXEL_BASE_URL": "https://track.example.com",
        "DEADPIXEL_SMTP_HOST": "127.0.0.1",
        "DEADPIXEL_SMTP_PORT": str(sink_port),
        "DEADPIXEL_SMTP_TLS": "none",
        "DEADPIXEL_MAIL_FROM": "News <news@example.com>",
        "DEADPIXEL_LOG_LEVEL": "warning",
    }
    if port is not None:
        env["DEADPIXEL_PORT"] = str(port)
    return env


def _state(workdir: Path) -> str | None:
    try:
        with sqlite3.connect(workdir / "deadpixel.db", timeout=5) as db:
            row = db.execute("SELECT state FROM campaign_jobs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else str(row[0])


Store = Callable[[dict[str, str], int, Path, Path, int], None]


def cli_store(env: dict[str, str], port: int, recipients: Path, html: Path, concurrency: int) -> None:
    """``campaign send --after 1s``: stored, due in a second."""
    command = [sys.executable, "-m", "deadpixel", "campaign", "send", "news", "--recipients", str(recipients)]
    command += ["--subject", "Hi {{ first_name }}", "--html", str(html), "--concurrency", str(concurrency)]
    subprocess.run([*command, "--after", "1s"], env=env, check=True, stdout=subprocess.DEVNULL)


BROWSER_STEPS: dict[str, float] = {}  # seconds of the dashboard's steps in the last run


def browser_store(env: dict[str, str], port: int, recipients: Path, html: Path, concurrency: int) -> None:
    """As a browser does it: sign in, upload and paste on the New campaign page, Send, then confirm."""
    password = "bench horse battery"
    subprocess.run(
        [sys.executable, "-m", "deadpixel", "user", "create", "sam", "--role", "sender", "--password-stdin"],
        env=env, input=password + "\n", text=True, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=120, trust_env=False, follow_redirects=True) as client:
        token = _csrf(client.get("/login").text)
        signed = client.post("/login", data={"csrf": token, "name": "sam", "password": password})
        signed.raise_for_status()
        csrf = _csrf(client.get("/compose").text)
        form = {"csrf": csrf, "name": "news", "subject": "Hi {{ first_name }}", "html": html.read_text()}
        files = {"recipients": ("list.csv", recipients.read_bytes(), "text/csv")}
        started = time.perf_counter()
        asked = client.post("/compose/send", data=form, files=files)
        BROWSER_STEPS["upload and confirmation page"] = time.perf_counter() - started
        asked.raise_for_status()
        action = re.search(r'action="(/compose/\d+/send)"', asked.text)
        if action is None or "Send to " not in asked.text:
            raise SystemExit("no confirmation page: " + asked.text[:500])
        started = time.perf_counter()
        sent = client.post(action.group(1), data={"csrf": csrf, "name": "news", "action": "send"})
        BROWSER_STEPS["confirm (store the campaign)"] = time.perf_counter() - started
        sent.raise_for_status()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    if found is None:
        raise SystemExit("no CSRF token on the page")
    return found.group(1)


def server_send(
    workdir: Path,
    sink_port: int,
    recipients: Path,
    html: Path,
    concurrency: int,
    cpu: int,
    store: Store = cli_store,
) -> tuple[float, float]:
    """Start a server, store the campaign (``store``) due at once or in a second; return the seconds from
    sending to done and the server's CPU seconds (its whole process tree) over the same span."""
    port = free_port()
    env = _env(workdir, sink_port, port)
    if store is browser_store:  # the session cookie of an https base URL is never sent over plain http
        env["DEADPIXEL_BASE_URL"] = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        ["taskset", "-c", str(cpu), sys.executable, "-m", "deadpixel", "serve", "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if http_get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        store(env, port, recipients, html, concurrency)
        started = finished = None
        cpu_start = cpu_end = 0.0
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            state = _state(workdir)
            now = time.perf_counter()
            if state == "sending" and started is None:
                started, cpu_start = now, tree_cpu(server.pid, all_processes())
            if state in ("done", "paused", "cancelled"):
                finished, cpu_end = now, tree_cpu(server.pid, all_processes())
                break
            time.sleep(0.05)
        if started is None or finished is None or state != "done":
            raise SystemExit(f"the server's send did not finish (state {state})")
        return finished - started, cpu_end - cpu_start
    finally:
        server.terminate()
        server.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000, help="Rows in the list (10,000).")
    parser.add_argument("--concurrency", type=int, default=4, help="SMTP connections (4, the default).")
    parser.add_argument("--sender-cpu", type=int, default=0)
    parser.add_argument("--sink-cpu", type=int, default=1)
    opts = parser.parse_args(argv)
    count = opts.recipients
    failures = []
    with tempfile.TemporaryDirectory(prefix="deadpixel-campaign-server-bench-") as tmp:
        root = Path(tmp)
        html = root / "template.html"
        html.write_text(template_html())
        recipients = root / "list.csv"
        write_recipients(recipients, count)
        results = {}
        for path in ("command line", "server", "dashboard"):
            workdir = root / path.replace(" ", "-")
            sink = SinkProcess(opts.sink_cpu)
            try:
                if path == "command line":
                    wall, cpu, _ = campaign_send(
                        workdir, sink.port, recipients, html, opts.concurrency, opts.sender_cpu
                    )
                else:
                    store = browser_store if path == "dashboard" else cli_store
                    wall, cpu = server_send(
                        workdir, sink.port, recipients, html, opts.concurrency, opts.sender_cpu, store
                    )
            finally:
                received = sink.stop()
            results[path] = (count / wall, cpu / count, received)
            if received != count:
                failures.append(f"{path}: the sink received {received} of {count}")
    print(f"{count:,} rows, {opts.concurrency} SMTP connections, rate limit off,"
          f" sender on CPU {opts.sender_cpu}, aiosmtpd sink on CPU {opts.sink_cpu}")  # fmt: skip
    print(f"{'path':<14} {'msg/s':>8} {'CPU ms/msg':>11} {'msg per CPU second':>19} {'received':>9}")
    for path, (rate, cpu_each, received) in results.items():
        print(f"{path:<14} {rate:>8,.0f} {cpu_each * 1000:>11.2f} {1 / cpu_each:>19,.0f} {received:>9,}")
    for step, seconds in BROWSER_STEPS.items():
        print(f"dashboard step: {step}: {seconds * 1000:,.0f} ms")
    slowest = min(results["server"][0], results["dashboard"][0])
    verdict = "PASS" if slowest >= 200 else "FAIL"
    print(f"server msg/s (stored from the command line, from the dashboard): {results['server'][0]:,.0f},"
          f" {results['dashboard'][0]:,.0f} (bar: 200 or more)  {verdict}")  # fmt: skip
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures or slowest < 200 else 0


if __name__ == "__main__":
    sys.exit(main())
