"""A real MTA writes the bounce: Debian's Postfix, run as a private instance in a temporary directory on
free ports, relays a campaign to a receiving server that refuses one address, writes its RFC 3464 report and
delivers it to ``deadpixel bounces listen`` at the campaign's VERP address, as the Internet would."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select

from deadpixel.bounces.parse import read_report
from deadpixel.bounces.verp import message_for
from deadpixel.config import Settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.db import create_engine
from deadpixel.store.schema import messages
from deadpixel.store.suppressions import list_suppressions
from tests.conftest import free_port

from .test_bounces_mail import RunningListener

DOMAIN = "bounces.example.com"
SAMPLES = Path(__file__).parent / "mail_samples" / "bounces"

MAIN_CF = """\
compatibility_level = 3.6
meta_directory = /etc/postfix
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = mta.test
myorigin = mta.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relay_domains = receiver.example
transport_maps = inline:{{ {domain}=smtp:[127.0.0.1]:{listener},
    receiver.example=smtp:[127.0.0.1]:{receiver} }}
alias_maps =
alias_database =
smtp_dns_support_level = disabled
"""


class Receiver:
    """The recipients' mail server: refuses gone@ for good, takes everything else."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, list[str]]] = []

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("gone@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert envelope.mail_from is not None
        self.taken.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def _postfix_instance(root: Path, listener: int, receiver: int) -> int:
    """Write a private configuration under ``root``; the port its SMTP server will listen on."""
    port = free_port()
    conf = root / "conf"
    conf.mkdir()
    (root / "queue").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", "postfix")
    (conf / "main.cf").write_text(
        MAIN_CF.format(root=root, domain=DOMAIN, listener=listener, receiver=receiver)
    )
    master = Path("/etc/postfix/master.cf").read_text()
    master = re.sub(r"(?m)^smtp(\s+)inet(.*)smtpd$", f"127.0.0.1:{port} inet  n - n - - smtpd", master)
    # No chroot: the private queue lacks the system files a chroot needs.
    master = re.sub(r"(?m)^(\S+\s+(?:unix|inet|unix-dgram|fifo|pass)\s+[-ny]\s+[-ny]\s+)y", r"\1n", master)
    (conf / "master.cf").write_text(master)
    return port


@pytest.fixture
def postfix_for(tmp_path: Path) -> Iterator[object]:
    binary = shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)
    if binary is None or not os.path.exists("/etc/postfix/master.cf"):
        pytest.skip("postfix is not installed (Debian: apt-get install postfix); the real-DSN test needs it")
    if os.geteuid() != 0:
        pytest.skip(
            "a private Postfix instance must be started as root (its daemons drop to the postfix user)"
        )
    roots: list[Path] = []

    def start(listener: int, receiver: int) -> int:
        root = Path(tempfile.mkdtemp(prefix="deadpixel-postfix-"))
        root.chmod(0o755)
        roots.append(root)
        port = _postfix_instance(root, listener, receiver)
        started = subprocess.run(
            [binary, "-c", str(root / "conf"), "start"], capture_output=True, text=True, timeout=60
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return port
            except OSError:
                if started.returncode != 0 or time.monotonic() > deadline:
                    log = (root / "maillog").read_text()[-2000:] if (root / "maillog").exists() else ""
                    pytest.skip(f"postfix did not start: {started.stdout} {started.stderr} {log}")
                time.sleep(0.05)

    yield start
    for root in roots:
        subprocess.run([binary, "-c", str(root / "conf"), "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_bounce_written_by_postfix_comes_back_to_the_listener(
    tmp_path: Path, settings: Settings, postfix_for: object
) -> None:
    receiver = Receiver()
    receiving = Controller(receiver, hostname="127.0.0.1", port=free_port())
    receiving.start()
    bounce_settings = replace(settings, bounce_domain=DOMAIN)
    try:
        with RunningListener(bounce_settings) as listener:
            mta = postfix_for(listener.listener.port, receiving.port)  # type: ignore[operator]
            (tmp_path / "list.csv").write_text("email\nann@receiver.example\ngone@receiver.example\n")
            (tmp_path / "mail.html").write_text("<p>Hello</p>")
            env = {
                **os.environ, "DEADPIXEL_BOUNCE_DOMAIN": DOMAIN, "DEADPIXEL_SMTP_HOST": "127.0.0.1",
                "DEADPIXEL_SMTP_PORT": str(mta), "DEADPIXEL_SMTP_TLS": "none",
                "DEADPIXEL_MAIL_FROM": "News <news@sender.example>",
            }  # fmt: skip
            sent = subprocess.run(
                [sys.executable, "-m", "deadpixel", "campaign", "send", "spring", "--recipients",
                 str(tmp_path / "list.csv"), "--subject", "Hi", "--html", str(tmp_path / "mail.html")],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stdout + sent.stderr  # Postfix took both; it bounces later
            engine = create_engine(settings.database_url)
            deadline = time.monotonic() + 30
            while True:
                with engine.connect() as conn:
                    rows = {row.recipient: row for row in conn.execute(select(messages))}
                    on_list = {row["address"]: row["source"] for row in list_suppressions(conn)}
                if rows["gone@receiver.example"].bounce is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            engine.dispose()
    finally:
        receiving.stop()
    gone, ann = rows["gone@receiver.example"], rows["ann@receiver.example"]
    assert gone.bounce == "hard", "no bounce came back from Postfix within 30 s"
    assert gone.bounce_reason.startswith("5.1.1") and "User unknown" in gone.bounce_reason
    assert ann.bounce is None
    assert on_list == {"gone@receiver.example": "hard-bounce"}
    (taken,) = receiver.taken  # Postfix kept the VERP sender when it passed ann's copy on
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    assert taken[1] == ["ann@receiver.example"] and message_for(signer, taken[0], DOMAIN) == ann.id


def test_the_kept_postfix_report_reads_as_a_hard_bounce() -> None:
    """A report captured from a run like the one above, kept so parsing is checked without Postfix too."""
    report = read_report((SAMPLES / "postfix-hard.eml").read_bytes())
    assert report.kind == "bounce"
    (failure,) = report.failures
    assert (failure.recipient, failure.hard, failure.status) == ("nobody@receiver.example", True, "5.1.1")
    assert failure.diagnostic is not None and "User unknown in virtual mailbox table" in failure.diagnostic
    assert any(
        "bounces+0123456789abcdefghijklmnopqrstuv@bounces.example.com" in v for v in report.delivered_to
    )
    assert any("bounces+" in v for v in report.original_from)  # the returned message's Return-Path
