"""``deadpixel bounces fetch`` against a real IMAP server: Debian's Dovecot, started here with a temporary
maildir and its own certificate, on a free port. Mail is put in the mailbox with IMAP APPEND, as a mail
server's delivery would leave it."""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from deadpixel.bounces.verp import bounce_address
from deadpixel.config import Settings
from deadpixel.relay.tls import generated_certificate
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.schema import bounces, messages
from deadpixel.store.suppressions import list_suppressions
from tests.conftest import free_port

from . import bounce_samples as samples

DOMAIN = "bounces.example.com"
USER, PASSWORD = "bounces", "mailbox secret"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{pem}
ssl_key = <{pem}
auth_mechanisms = plain
default_internal_user = {internal}
default_login_user = {internal}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
  }}
}}
"""


@dataclass
class Mailbox:
    port: int
    pem: Path

    def client(self) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", self.port, ssl_context=ssl.create_default_context(cafile=self.pem)
        )
        client.login(USER, PASSWORD)
        return client

    def append(self, *raws: bytes, folder: str = "INBOX") -> None:
        client = self.client()
        try:
            for raw in raws:
                assert client.append(folder, None, None, raw)[0] == "OK"
        finally:
            client.logout()

    def count(self, folder: str = "INBOX") -> int:
        client = self.client()
        try:
            status, data = client.select(folder)
            assert status == "OK"
            return int(data[0] or 0)
        finally:
            client.logout()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
    if binary is None:
        pytest.skip(
            "dovecot is not installed (Debian: apt-get install dovecot-imapd); the IMAP test needs it"
        )
    root = Path(tempfile.mkdtemp(prefix="deadpixel-dovecot-"))
    root.chmod(0o755)  # dovecot's unprivileged processes read their sockets and the maildir under it
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    internal = "dovenull" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    (root / "home").mkdir()
    if os.geteuid() == 0:
        os.chown(root / "home", uid, gid)
    pem = generated_certificate(root / "tls")
    (root / "tls").chmod(0o755)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    port = free_port()
    (root / "dovecot.conf").write_text(
        CONFIG.format(root=root, pem=pem, internal=internal, uid=uid, gid=gid, port=port)
    )
    process = subprocess.Popen(
        [binary, "-F", "-c", str(root / "dovecot.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
                pytest.skip(f"dovecot did not start: {process.stderr.read().decode()} {log}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip("dovecot did not start listening within 15 s")
                time.sleep(0.05)
        yield Mailbox(port, pem)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def fetch(settings: Settings, mailbox: Mailbox, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DEADPIXEL_BOUNCE_DOMAIN": DOMAIN,
        "DEADPIXEL_BOUNCE_MAX_SIZE": str(64 * 1024),
        "DEADPIXEL_BOUNCE_IMAP_HOST": "127.0.0.1",
        "DEADPIXEL_BOUNCE_IMAP_PORT": str(mailbox.port),
        "DEADPIXEL_BOUNCE_IMAP_USERNAME": USER,
        "DEADPIXEL_BOUNCE_IMAP_PASSWORD": PASSWORD,
        "SSL_CERT_FILE": str(mailbox.pem),  # trust the test server's own certificate, through TLS as usual
        **extra,
    }
    return subprocess.run(
        [sys.executable, "-m", "deadpixel", "bounces", "fetch"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def sent(settings: Settings, *recipients: str) -> list[str]:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        ids = [create_message(conn, recipient=r, campaign="spring", sent_at=time.time()) for r in recipients]
    engine.dispose()
    return ids


def verp(settings: Settings, message_id: str) -> str:
    return bounce_address(TokenSigner(load_or_create_keys(settings.keys_file)), message_id, DOMAIN)


@pytest.mark.slow
def test_fetch_records_bounces_and_complaints_and_reads_nothing_twice(
    settings: Settings, mailbox: Mailbox
) -> None:
    ann, bob, cy = sent(settings, "ann@example.org", "bob@example.org", "cy@example.org")
    genuine = verp(settings, cy)
    start = len("bounces+")
    forged = genuine[:start] + ("0" if genuine[start] != "0" else "1") + genuine[start + 1 :]
    mailbox.append(
        samples.dsn(verp(settings, ann), "ann@example.org"),  # a hard bounce, To: its bounce address
        samples.arf(verp(settings, bob)),  # a complaint: the address is in Original-Mail-From only
        samples.auto_reply(genuine),
        samples.dsn(forged, "cy@example.org"),
        samples.dsn(genuine, "cy@example.org") + (b"x" * 70 + b"\r\n") * 1000,  # past the size limit
        b"Subject: hello\r\n\r\njust mail\r\n",
    )
    first = fetch(settings, mailbox)
    assert first.returncode == 0, first.stderr
    assert "6 message(s) read: 2 recorded, 4 ignored" in first.stdout
    assert "Traceback" not in first.stderr
    assert "no genuine bounce address" in first.stderr and "more than 65536" in first.stderr

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        by_id = {row.id: row for row in conn.execute(select(messages))}
        suppressed = {row["address"]: row["source"] for row in list_suppressions(conn)}
        assert [(row.message_id, row.kind, row.source) for row in conn.execute(select(bounces))] == [
            (ann, "hard", "imap"), (bob, "complaint", "imap"),
        ]  # fmt: skip
    engine.dispose()
    assert (by_id[ann].bounce, by_id[bob].complained_at is not None, by_id[cy].bounce) == ("hard", True, None)
    assert suppressed == {"ann@example.org": "hard-bounce", "bob@example.org": "complaint"}

    again = fetch(settings, mailbox)
    assert "0 message(s) read" in again.stdout, again.stderr
    mailbox.append(samples.dsn(genuine, "cy@example.org", status="4.2.2", action="delayed"))
    third = fetch(settings, mailbox)
    assert "1 message(s) read: 1 recorded, 0 ignored" in third.stdout, third.stderr
    assert mailbox.count() == 7  # marked, not removed


@SQLITE_ONLY
@pytest.mark.slow
def test_fetch_can_move_what_it_read(settings: Settings, mailbox: Mailbox) -> None:
    (ann,) = sent(settings, "ann@example.org")
    client = mailbox.client()
    assert client.create("Handled")[0] == "OK"
    client.logout()
    mailbox.append(
        samples.dsn(verp(settings, ann), "ann@example.org"), samples.auto_reply(verp(settings, ann))
    )
    done = fetch(settings, mailbox, DEADPIXEL_BOUNCE_IMAP_DONE_FOLDER="Handled")
    assert "2 message(s) read: 1 recorded, 1 ignored" in done.stdout, done.stderr
    assert (mailbox.count(), mailbox.count("Handled")) == (0, 2)


@SQLITE_ONLY
@pytest.mark.slow
def test_a_wrong_password_is_one_clear_line(settings: Settings, mailbox: Mailbox) -> None:
    failed = fetch(settings, mailbox, DEADPIXEL_BOUNCE_IMAP_PASSWORD="wrong")
    assert failed.returncode == 1
    assert "bounce mailbox" in failed.stderr and "Traceback" not in failed.stderr
