"""How fast ``deadpixel campaign send`` composes and sends a mail merge, and whether its memory stays flat.

One run of ``python bench/campaign.py`` does, on loopback:

* **A sink.** An aiosmtpd server in its own process (pinned to CPU 1) that accepts every message and
  counts what it received; nothing is written anywhere.
* **The baseline.** The same number of ready-made messages sent straight to the sink with ``smtplib`` over
  as many connections as the campaign uses: what the sink and loopback SMTP allow when nothing is composed,
  recorded or tracked. It runs in the same script, just before the campaign, so the ratio survives a noisy
  machine.
* **The campaign.** ``deadpixel campaign send`` (pinned to CPU 0, rate limit off) on a CSV of
  ``--recipients`` rows with a typical newsletter template (about 7 KB of HTML with inline styles, 16
  tracked links, a ``<style>`` block and an Outlook conditional comment; ``--html`` takes your own): every
  message is rendered with Jinja2, its pixel and links are put in, it is recorded before and after
  sending, and sent. The report gives messages per second, the ratio to the baseline, the sender's CPU
  time per message and its peak RSS.
* **Flat memory.** The campaign runs twice, with a tenth of the rows and then with all of them: peak RSS
  must not grow by more than 10% although the list is ten times longer (the CSV is streamed).

Exactness: the sink must have received exactly one message per recipient, and the store must hold one
sent message per row.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from harness.common import free_port

SINK_READY = "sink ready"
LINKS = 16


# --- the sink (runs in a child process) ---------------------------------------------------------------


def run_sink(port: int) -> None:
    from aiosmtpd.controller import Controller

    class Counter:
        received = 0

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            Counter.received += 1
            return "250 OK"

    controller = Controller(Counter(), hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(SINK_READY, flush=True)
    stopped.wait()
    controller.stop()
    print(Counter.received, flush=True)


class SinkProcess:
    def __init__(self, cpu: int) -> None:
        self.port = free_port()
        self._process = subprocess.Popen(
            ["taskset", "-c", str(cpu), sys.executable, __file__, "--sink", str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != SINK_READY:
            raise SystemExit("the SMTP sink did not start")

    def stop(self) -> int:
        self._process.send_signal(signal.SIGTERM)
        out, _ = self._process.communicate(timeout=30)
        return int(out.split()[-1])


# --- inputs --------------------------------------------------------------------------------------------


def template_html() -> str:
    articles = "\n".join(
        f"""    <tr><td class="article" style="padding: 16px 24px; background-color: #ffffff;">
      <h2 style="margin: 0 0 8px; font-size: 18px; line-height: 24px; color: #222222;">
      <a href="https://blog.example.com/posts/{n}?utm_source=newsletter&amp;utm_medium=email"
         style="color: #1a5fb4; text-decoration: none;">Story {n}: what changed this month</a></h2>
      <p style="margin: 0; font-size: 15px; line-height: 22px; color: #333333;">Hello {{{{ first_name }}}},
      here is a paragraph about story {n} that runs long enough to look like a real newsletter &mdash; with
      entities, <strong>bold words</strong> and <em>some emphasis</em>, written for the team at
      {{{{ company }}}}. Read more on <a href="https://example.com/read/{n}" style="color: #1a5fb4;">our
      site</a>.</p>
    </td></tr>"""
        for n in range(LINKS // 2)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Monthly news</title>
<style>
  body {{ margin: 0; font-family: Helvetica, Arial, sans-serif; }}
  .article h2 {{ font-size: 18px; color: #222; }} .article p {{ line-height: 1.5; }}
  @media (max-width: 600px) {{ .article {{ padding: 8px !important; }} }}
</style>
<!--[if mso]><style>table {{ border-collapse: collapse; }}</style><![endif]-->
</head>
<body>
<table role="presentation" width="600" align="center" cellpadding="0" cellspacing="0">
{articles}
<tr><td><a href="mailto:news@example.com">Reply</a> &middot;
<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a></td></tr>
</table>
</body></html>
"""


def write_recipients(path: Path, count: int) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "first_name", "company", "subscriber_id"])
        for n in range(count):
            writer.writerow([f"reader{n}@example.com", f"Reader{n}", f"Company {n % 97}", n])


# --- the two senders -----------------------------------------------------------------------------------


def straight_send(port: int, count: int, connections: int, html: str) -> float:
    """Send ``count`` ready-made messages of the same size over ``connections`` smtplib connections."""
    message = EmailMessage()
    message["From"] = "news@example.com"
    message["Subject"] = "Hi Reader"
    message.set_content("Hello")
    message.add_alternative(html, subtype="html")
    data = message.as_bytes(policy=SMTP)
    shares = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]

    def send(share: int, first: int) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for n in range(first, first + share):
                smtp.sendmail("news@example.com", [f"reader{n}@example.com"], data)

    started = time.perf_counter()
    threads = [threading.Thread(target=send, args=(share, sum(shares[:i]))) for i, share in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def campaign_send(
    workdir: Path, port: int, recipients: Path, html: Path, concurrency: int, cpu: int
) -> tuple[float, float, int]:
    """Run the CLI; return (wall seconds, CPU seconds, peak RSS in KiB) of the sending process."""
    env = {
        **os.environ,
        "DEADPIXEL_DATA_DIR": str(workdir),
        "DEADPIXEL_BASE_URL": "https://track.example.com",
        "DEADPIXEL_SMTP_HOST": "127.0.0.1",
        "DEADPIXEL_SMTP_PORT": str(port),
        "DEADPIXEL_SMTP_TLS": "none",
        "DEADPIXEL_MAIL_FROM": "News <news@example.com>",
    }
    command = ["taskset", "-c", str(cpu), sys.executable, "-m", "deadpixel", "campaign", "send", "news"]
    command += ["--recipients", str(recipients), "--subject", "Hi {{ first_name }}", "--html", str(html)]
    command += ["--concurrency", str(concurrency), "--json"]
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own CPU time and peak RSS
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"campaign send failed ({child.returncode}):\n{errors.read()[-3000:].decode()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def sent_in_store(workdir: Path) -> int:
    with sqlite3.connect(workdir / "deadpixel.db") as db:
        return int(db.execute("SELECT count(*) FROM messages WHERE status = 'sent'").fetchone()[0])


# --- the run -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000, help="Rows in the full list (10,000).")
    parser.add_argument("--concurrency", type=int, default=4, help="SMTP connections (4, the default).")
    parser.add_argument("--sender-cpu", type=int, default=0)
    parser.add_argument("--sink-cpu", type=int, default=1)
    parser.add_argument("--html", type=Path, help="An HTML template of your own instead of the built-in one.")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.sink is not None:
        run_sink(opts.sink)
        return 0

    failures = []
    with tempfile.TemporaryDirectory(prefix="deadpixel-campaign-bench-") as tmp:
        root = Path(tmp)
        html = root / "template.html"
        html.write_text(opts.html.read_text(encoding="utf-8") if opts.html else template_html())
        runs = []
        for count in (opts.recipients // 10, opts.recipients):
            recipients = root / f"list-{count}.csv"
            write_recipients(recipients, count)
            workdir = root / f"data-{count}"
            sink = SinkProcess(opts.sink_cpu)
            try:
                baseline = straight_send(sink.port, count, opts.concurrency, html.read_text())
            finally:
                received_before = sink.stop()
            sink = SinkProcess(opts.sink_cpu)
            try:
                wall, cpu, rss = campaign_send(
                    workdir, sink.port, recipients, html, opts.concurrency, opts.sender_cpu
                )
            finally:
                received = sink.stop()
            stored = sent_in_store(workdir)
            runs.append((count, count / baseline, count / wall, cpu / count, rss, received, stored))
            if received_before != count:
                failures.append(f"baseline: the sink received {received_before} of {count}")
            if received != count or stored != count:
                failures.append(f"{count} rows: the sink received {received}, the store holds {stored} sent")

    print(f"deadpixel campaign send: {opts.concurrency} SMTP connections, rate limit off, sender on CPU "
          f"{opts.sender_cpu}, aiosmtpd sink on CPU {opts.sink_cpu}")  # fmt: skip
    print(f"{'rows':>7} {'straight msg/s':>15} {'campaign msg/s':>15} {'ratio':>6} {'CPU ms/msg':>11} "
          f"{'peak RSS MiB':>13} {'received':>9} {'stored':>7}")  # fmt: skip
    for count, straight, rate, cpu_each, rss, received, stored in runs:
        print(f"{count:>7,} {straight:>15,.0f} {rate:>15,.0f} {rate / straight:>6.2f} "
              f"{cpu_each * 1000:>11.2f} {rss / 1024:>13.1f} {received:>9,} {stored:>7,}")  # fmt: skip
    small_rss, full_rss = runs[0][4], runs[1][4]
    growth = full_rss / small_rss - 1
    full_rate = runs[1][2]
    print(f"messages/s at {opts.recipients:,} rows: {full_rate:,.0f} (bar: well above 200)  "
          f"{'PASS' if full_rate > 200 else 'FAIL'}")  # fmt: skip
    print(f"peak RSS growth from {runs[0][0]:,} to {runs[1][0]:,} rows: {growth:+.1%} (bar: under 10%)  "
          f"{'PASS' if growth < 0.10 else 'FAIL'}")  # fmt: skip
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures or full_rate <= 200 or growth >= 0.10 else 0


if __name__ == "__main__":
    sys.exit(main())
