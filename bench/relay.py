"""What the SMTP relay costs: the same mail sent straight to an SMTP server, and through ``deadpixel relay``.

One run of ``python bench/relay.py``:

* starts an upstream SMTP server (aiosmtpd in its own process, accepting and counting, storing nothing);
* sends N messages (default 1,000) of about 50 KB (text and HTML, like a newsletter), each to 3 recipients,
  straight to that server over one connection, timing each ``sendmail`` from the first command to the 250;
* starts ``deadpixel relay`` (its own process, a fresh SQLite store or ``--database-url``) in front of the
  same server and sends the same messages through it, over one connection with STARTTLS and AUTH, as a mail
  client would. The relay stores a tracked message per recipient, gives each copy its pixel and answers 250
  only once the upstream took all 3 copies;
* checks that the upstream received exactly N copies directly and 3N through the relay, and that the store
  holds 3N sent messages;
* prints messages/s for both and the latency percentiles, and the relay's added latency per message
  (relay percentile minus direct percentile). The bar: under 20 ms added at p99.

The client sets TCP_NODELAY, as deadpixel's own SMTP client does. With ``--nagle`` it does not (smtplib's
default), and every message through the relay then waits about 40 ms: over TLS a 50 KB message is several
records, and Nagle's algorithm holds the last one until the relay's kernel sends its delayed ACK. That wait
is the client's socket setting, not work the relay does, so it is measured apart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from harness.common import free_port

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench password"
RECIPIENTS = ["ann@example.org", "bob@example.net", "cem@example.com"]


def run_sink(port: int) -> None:
    """The upstream: accept everything, count copies; print the count on SIGTERM."""
    from aiosmtpd.controller import Controller

    count = 0
    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            nonlocal count
            with lock:
                count += 1
            return "250 2.0.0 queued"

    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    controller = Controller(Handler(), hostname=HOST, port=port, enable_SMTPUTF8=True)
    controller.start()
    print("ready", flush=True)
    signal.sigwait([signal.SIGTERM])
    controller.stop()
    print(count, flush=True)


def newsletter(size: int) -> tuple[str, str]:
    """An HTML body of about ``size`` bytes with links and a matching text part."""
    block = (
        '<tr><td style="padding:12px;font-family:Arial,sans-serif">'
        '<h2 style="margin:0">Autumn sale, item {i}</h2><p>Gr\u00fc\u00dfe! Everything in this collection is '
        'reduced this week only. <a href="https://shop.example/item/{i}?utm_source=news">See item {i}</a>'
        "</p></td></tr>\n"
    )
    rows: list[str] = []
    while sum(map(len, rows)) < size:
        rows.append(block.format(i=len(rows)))
    html = f"<!doctype html><html><body><table>\n{''.join(rows)}</table></body></html>\n"
    text = "\n".join(f"Autumn sale, item {i}: https://shop.example/item/{i}" for i in range(len(rows)))
    return html, text


def messages(count: int, size: int, run: str) -> list[bytes]:
    html, text = newsletter(size * 3 // 4)  # the text part and the encodings make up the rest
    built = []
    for i in range(count):
        message = EmailMessage()
        message["From"] = "Alice <alice@example.com>"
        message["To"] = ", ".join(RECIPIENTS)
        message["Subject"] = f"Autumn sale {i}"
        message["Message-ID"] = f"<{run}.{i}@bench.example>"
        message["X-Deadpixel-Campaign"] = "bench"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        built.append(message.as_bytes(policy=message.policy.clone(linesep="\r\n")))
    return built


def send_all(port: int, payloads: list[bytes], *, tls: ssl.SSLContext | None, nagle: bool) -> list[float]:
    """Seconds per message, from MAIL FROM to the 250 after the data."""
    latencies = []
    with smtplib.SMTP(HOST, port, timeout=60) as client:
        assert client.sock is not None
        if not nagle:
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            client.starttls(context=tls)
            client.login("alice", PASSWORD)
        for payload in payloads:
            start = time.perf_counter()
            refused = client.sendmail("alice@example.com", RECIPIENTS, payload)
            latencies.append(time.perf_counter() - start)
            assert not refused, refused
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"process exited: {log.read_text()}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> bytes:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    return out


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    return {
        "messages_per_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


@contextlib.contextmanager
def store_url(database_url: str | None, data_dir: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh PostgreSQL schema that is dropped afterwards."""
    if not database_url:
        yield f"sqlite:///{data_dir / 'deadpixel.db'}"
        return
    import psycopg

    schema = f"deadpixel_bench_relay_{os.getpid()}"
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query)) | {"options": f"-csearch_path={schema}"}
    try:
        yield urlunsplit(parts._replace(query=urlencode(query)))
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=50_000, help="bytes per message (about)")
    parser.add_argument(
        "--database-url", help="PostgreSQL (the run gets a fresh schema, dropped afterwards); default SQLite"
    )
    parser.add_argument(
        "--nagle",
        action="store_true",
        help="leave Nagle's algorithm on in the client (smtplib's default): see the docstring",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)  # internal: run the upstream on this port
    args = parser.parse_args()
    if args.sink:
        run_sink(args.sink)
        return 0

    with (
        tempfile.TemporaryDirectory(prefix="deadpixel-bench-relay-") as tmp,
        store_url(args.database_url, Path(tmp) / "data") as database_url,
    ):
        data_dir = Path(tmp) / "data"
        sink_port, relay_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DEADPIXEL_")},
            "DEADPIXEL_DATA_DIR": str(data_dir),
            "DEADPIXEL_DATABASE_URL": database_url,
            "DEADPIXEL_SMTP_HOST": HOST,
            "DEADPIXEL_SMTP_PORT": str(sink_port),
            "DEADPIXEL_SMTP_TLS": "none",
            "DEADPIXEL_SMTP_HELO": "relay.bench",
        }
        deadpixel = [sys.executable, "-m", "deadpixel"]
        subprocess.run(
            [*deadpixel, "user", "create", "alice", "--password-stdin"],
            input=(PASSWORD + "\n").encode(), env=env, check=True, capture_output=True,
        )  # fmt: skip

        def sink() -> subprocess.Popen[bytes]:
            process = subprocess.Popen(
                [sys.executable, __file__, "--sink", str(sink_port)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )  # fmt: skip
            assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
            return process

        payloads = messages(args.messages, args.size, "direct")
        upstream = sink()
        try:
            start = time.perf_counter()
            direct = send_all(sink_port, payloads, tls=None, nagle=args.nagle)
            direct_seconds = time.perf_counter() - start
        finally:
            direct_copies = int(stop(upstream).split()[-1])

        payloads = messages(args.messages, args.size, "relay")
        upstream = sink()
        log_path = Path(tmp) / "relay.log"  # a line per message: more than a pipe holds
        with log_path.open("wb") as relay_log:
            relay = subprocess.Popen(
                [*deadpixel, "relay", "--port", str(relay_port)],
                env=env, stdout=subprocess.DEVNULL, stderr=relay_log, start_new_session=True,
            )  # fmt: skip
        try:
            wait_for_port(relay_port, relay, log_path)
            tls = ssl.create_default_context(cafile=str(data_dir / "relay-tls.pem"))
            start = time.perf_counter()
            relayed = send_all(relay_port, payloads, tls=tls, nagle=args.nagle)
            relay_seconds = time.perf_counter() - start
        finally:
            stop(relay)
            relay_copies = int(stop(upstream).split()[-1])

        report = json.loads(
            subprocess.run(
                [*deadpixel, "report", "bench", "--json"], env=env, check=True, capture_output=True
            ).stdout
        )

    result: dict[str, Any] = {
        "messages": args.messages,
        "client_nagle": args.nagle,
        "bytes_per_message": len(payloads[0]),
        "recipients_per_message": len(RECIPIENTS),
        "direct": summary(direct, direct_seconds),
        "relay": summary(relayed, relay_seconds),
        "copies_received": {"direct": direct_copies, "relay": relay_copies},
        "tracked_messages_sent": report["sent"],
    }
    result["added_ms"] = {q: result["relay"][f"{q}_ms"] - result["direct"][f"{q}_ms"] for q in ("p50", "p99")}
    ok = (
        direct_copies == args.messages
        and relay_copies == len(RECIPIENTS) * args.messages
        and report["sent"] == len(RECIPIENTS) * args.messages
    )
    result["correct"] = ok
    result["load_average_1min"] = os.getloadavg()[0]  # other work on the machine skews the figures
    result["meets_bar"] = result["added_ms"]["p99"] < 20
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.messages} messages of {result['bytes_per_message']} bytes, "
            f"{len(RECIPIENTS)} recipients each, one connection, loopback, "
            f"client Nagle {'on' if args.nagle else 'off'}"
        )
        print(f"{'':8} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name in ("direct", "relay"):
            figures = [result[name][key] for key in ("messages_per_s", "p50_ms", "p99_ms", "max_ms")]
            print(f"{name:8} " + " ".join(f"{value:8.2f}" for value in figures))
        added = result["added_ms"]
        print(f"added by the relay: p50 {added['p50']:.2f} ms, p99 {added['p99']:.2f} ms (bar: p99 < 20 ms)")
        print(
            f"copies received: direct {direct_copies}, relay {relay_copies}; "
            f"tracked messages sent: {report['sent']} -> {'OK' if ok else 'MISMATCH'}"
        )
        print(f"load average (1 min) at the end: {result['load_average_1min']:.2f} on {os.cpu_count()} CPUs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
