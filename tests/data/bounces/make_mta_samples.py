"""Bounces written by real mail servers, kept as test samples: tests/data/bounces/mta/<mta>-<case>.eml.

Each MTA (Postfix, Exim, OpenSMTPD) takes one message per case and relays it to a local SMTP server
(aiosmtpd on 127.0.0.1) that refuses the recipient with the case's reply; the MTA writes its bounce and
hands it to the same server, which keeps it. The 4xx case is left to expire: each MTA is given a queue
lifetime of a few seconds.

    sudo .venv/bin/python tests/data/bounces/make_mta_samples.py [--mta postfix,exim,opensmtpd] [--out DIR]

Runs as root on Debian. Postfix is the installed package, run as a private instance (own configuration and
queue in a temporary directory, as tests/test_bounces_postfix.py does). Exim and OpenSMTPD are never
installed (either would take the system MTA's place): their Debian packages are fetched with
``apt-get download``, unpacked with ``dpkg -x`` into a temporary directory and run from there, with their
own configuration and spool, under system users that exist only for them (libnss-wrapper, fetched the same
way). Exim runs as ``nobody`` (``-odi``, then a forced queue run); OpenSMTPD runs in the foreground in a
mount and UTS namespace of its own (``unshare``), where tmpfs stands in for its compiled-in spool and
socket directories. An MTA that cannot be fetched or started is skipped with a line saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

HERE = Path(__file__).resolve().parent
SENDER = "bounces@sender.example"
RECEIVER = "receiver.example"
NOBODY = 65534
WAIT = 60.0  # seconds for an MTA's bounces to come back
# The refusals, one recipient each (<case>@receiver.example); the text is ours, the codes are the real ones.
CASES = {
    "user-unknown": "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
    "mailbox-full": "552 5.2.2 <{rcpt}>: Mailbox full: the recipient is over quota",
    "dmarc": (
        "550 5.7.26 Unauthenticated mail from sender.example is refused: the domain's DMARC policy "
        "says reject"
    ),
    "blocked": "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org",
    "rate-limited": "451 4.7.1 <{rcpt}>: Too many messages from 127.0.0.1, rate limit exceeded; try later",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """The recipients' server refusing each case, and the sender's server keeping the bounces."""

    def __init__(self) -> None:
        self.bounces: list[bytes] = []

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local, _, domain = address.partition("@")
        if domain == RECEIVER:
            return CASES.get(local, "550 5.1.1 no such case").format(rcpt=address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.bounces.append(content if isinstance(content, bytes) else content.encode())
        return "250 OK"

    def bounce_for(self, case: str) -> bytes | None:
        marker = f"{case}@{RECEIVER}".encode()
        return next((b for b in self.bounces if marker in b), None)


def message(case: str) -> bytes:
    return (
        f"From: News <news@sender.example>\r\nTo: <{case}@{RECEIVER}>\r\nSubject: Spring news\r\n"
        f"Message-ID: <{case}.1@sender.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello, spring is here.\r\n"
    ).encode()


def submit_smtp(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for case in CASES:
            client.sendmail(SENDER, [f"{case}@{RECEIVER}"], message(case))


class Skip(Exception):
    """This MTA cannot run here; the message says why."""


def fetch_debs(into: Path, packages: list[str]) -> Path:
    """Unpack Debian packages (never installed) under ``into/root``."""
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["apt-get", "download", *packages], cwd=into, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise Skip(f"apt-get download {' '.join(packages)} failed: {done.stderr.strip()[-300:]}")
    root = into / "root"
    for deb in sorted(into.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    return root


def deb_versions(into: Path) -> str:
    versions = []
    for deb in sorted(into.glob("*.deb")):
        fields = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Package", "Version"], capture_output=True, text=True, check=True
        ).stdout.split()
        versions.append(f"{fields[1]} {fields[3]}")
    return ", ".join(versions)


def nss_files(into: Path, users: dict[str, int]) -> dict[str, str]:
    """A passwd and group of our own with the MTA's system users in them, and the environment using them."""
    passwd = Path("/etc/passwd").read_text() + "".join(
        f"{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n" for name, uid in users.items()
    )
    group = Path("/etc/group").read_text() + "".join(f"{name}:x:{uid}:\n" for name, uid in users.items())
    (into / "passwd").write_text(passwd)
    (into / "group").write_text(group)
    libs = into / "root" / "usr" / "lib" / "x86_64-linux-gnu"
    return {
        "LD_LIBRARY_PATH": str(libs),
        "LD_PRELOAD": str(libs / "libnss_wrapper.so"),
        "NSS_WRAPPER_PASSWD": str(into / "passwd"),
        "NSS_WRAPPER_GROUP": str(into / "group"),
    }


def wait_for_port(port: int, alive: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        if not alive():
            break
        time.sleep(0.1)
    raise Skip(f"{what} did not start listening on port {port}")


# --- Postfix: the installed package, a private instance --------------------------------------------------

POSTFIX_MAIN_CF = """\
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
relay_domains = {receiver}
transport_maps = inline:{{ {receiver}=smtp:[127.0.0.1]:{port}, sender.example=smtp:[127.0.0.1]:{port} }}
alias_maps =
alias_database =
smtp_dns_support_level = disabled
maximal_queue_lifetime = 0
bounce_queue_lifetime = 0
"""


@contextlib.contextmanager
def postfix(work: Path, receiver_port: int) -> Iterator[tuple[str, Callable[[], None]]]:
    binary = shutil.which("postfix") or "/usr/sbin/postfix"
    if not os.path.exists(binary) or not os.path.exists("/etc/postfix/master.cf"):
        raise Skip("postfix is not installed (Debian: apt-get install postfix)")
    root = work / "postfix"
    for sub in ("conf", "queue", "data"):
        (root / sub).mkdir(parents=True)
    for path in (work, root):
        path.chmod(0o755)  # the postfix user walks down to its data directory
    shutil.chown(root / "data", "postfix")
    port = free_port()
    (root / "conf" / "main.cf").write_text(
        POSTFIX_MAIN_CF.format(root=root, receiver=RECEIVER, port=receiver_port)
    )
    master = Path("/etc/postfix/master.cf").read_text()
    master = re.sub(r"(?m)^smtp(\s+)inet(.*)smtpd$", f"127.0.0.1:{port} inet  n - n - - smtpd", master)
    master = re.sub(r"(?m)^(\S+\s+(?:unix|inet|unix-dgram|fifo|pass)\s+[-ny]\s+[-ny]\s+)y", r"\1n", master)
    (root / "conf" / "master.cf").write_text(master)
    started = subprocess.run(
        [binary, "-c", str(root / "conf"), "start"], capture_output=True, text=True, timeout=60
    )
    try:
        if started.returncode != 0:
            log = (root / "maillog").read_text()[-300:] if (root / "maillog").exists() else ""
            raise Skip(f"postfix did not start: {started.stdout}{started.stderr} {log}".strip())
        wait_for_port(port, lambda: True, "postfix")
        version = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package} ${Version}", "postfix"], capture_output=True, text=True
        ).stdout
        yield version, lambda: submit_smtp(port)
    finally:
        subprocess.run([binary, "-c", str(root / "conf"), "stop"], capture_output=True, timeout=60)


# --- Exim: Debian's exim4-daemon-light, unpacked, run as nobody ------------------------------------------

EXIM_CONF = """\
exim_path = {exim}
keep_environment = LD_LIBRARY_PATH : LD_PRELOAD : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP
primary_hostname = mta.test
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
pid_file_path = {root}/exim.pid
host_lookup =
rfc1413_hosts =

begin routers
loopback:
  driver = manualroute
  domains = {receiver} : sender.example
  route_list = * 127.0.0.1
  self = send
  transport = loopback_smtp

begin transports
loopback_smtp:
  driver = smtp
  port = {port}
  allow_localhost

begin retry
*   *   F,{lifetime}s,1s
"""
EXIM_LIFETIME = 5


@contextlib.contextmanager
def exim(work: Path, receiver_port: int) -> Iterator[tuple[str, Callable[[], None]]]:
    into = work / "exim"
    root = fetch_debs(into, ["exim4-daemon-light", "libidn12", "libnss-wrapper"])
    binary = root / "usr" / "sbin" / "exim4"
    binary.chmod(0o755)  # no set-uid bit: run as nobody, it never changes user
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **nss_files(into, {"Debian-exim": NOBODY})}
    for sub in ("spool", "log"):
        (into / sub).mkdir()
        shutil.chown(into / sub, NOBODY, NOBODY)
    for path in (work, into):
        path.chmod(0o755)
    conf = into / "exim.conf"
    conf.write_text(
        EXIM_CONF.format(
            exim=binary, root=into, receiver=RECEIVER, port=receiver_port, lifetime=EXIM_LIFETIME
        )
    )

    def run(*args: str, stdin: bytes = b"") -> None:
        done = subprocess.run(
            [str(binary), "-C", str(conf), *args], input=stdin, env=env, capture_output=True,
            user=NOBODY, group=NOBODY, extra_groups=[], timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise Skip(f"exim {' '.join(args)} failed: {done.stderr.decode(errors='replace')[-300:]}")

    def submit() -> None:
        for case in CASES:
            run("-odi", "-f", SENDER, f"{case}@{RECEIVER}", stdin=message(case))
        time.sleep(EXIM_LIFETIME + 1)  # past the retry rule's cutoff: the next failure is final
        run("-qff")

    version = subprocess.run(
        [str(binary), "-C", str(conf), "-bV"], env=env, capture_output=True, text=True, user=NOBODY
    )
    if version.returncode != 0:
        raise Skip(f"the unpacked exim does not run: {version.stderr.strip()[-300:]}")
    yield deb_versions(into), submit


# --- OpenSMTPD: Debian's opensmtpd, unpacked, in the foreground in its own namespaces ---------------------

OPENSMTPD_CONF = """\
queue ttl {lifetime}s
listen on 127.0.0.1 port {port}
action "loopback" relay host smtp://127.0.0.1:{receiver_port}
match from any for any action "loopback"
"""
OPENSMTPD_START = """\
set -e
mount -t tmpfs tmpfs /var/spool
mount --bind "$VARLIB" /var/lib
mount -t tmpfs tmpfs /run
hostname mta.test
exec "$SMTPD" -d -f "$CONF"
"""


@contextlib.contextmanager
def opensmtpd(work: Path, receiver_port: int) -> Iterator[tuple[str, Callable[[], None]]]:
    if shutil.which("unshare") is None:
        raise Skip("unshare (util-linux) is missing")
    into = work / "opensmtpd"
    root = fetch_debs(into, ["opensmtpd", "libnss-wrapper"])
    users = {"opensmtpd": NOBODY - 1, "opensmtpq": NOBODY - 2}
    env = nss_files(into, users)
    empty = into / "varlib" / "opensmtpd" / "empty"  # the chroot its unprivileged processes go into
    empty.mkdir(parents=True)
    for path in (work, into, into / "varlib", empty.parent, empty):
        path.chmod(0o755)
    port = free_port()
    conf = into / "smtpd.conf"
    conf.write_text(OPENSMTPD_CONF.format(lifetime=5, port=port, receiver_port=receiver_port))
    env |= {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "VARLIB": str(into / "varlib"),
        "SMTPD": str(root / "usr" / "sbin" / "smtpd"), "CONF": str(conf),
    }  # fmt: skip
    log = (into / "smtpd.log").open("wb")
    process = subprocess.Popen(
        ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", OPENSMTPD_START],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        try:
            wait_for_port(port, lambda: process.poll() is None, "opensmtpd")
        except Skip as exc:
            raise Skip(f"{exc}: {(into / 'smtpd.log').read_text(errors='replace')[-300:]}") from None
        yield deb_versions(into), lambda: submit_smtp(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


MTAS = {"postfix": postfix, "exim": exim, "opensmtpd": opensmtpd}


def make(name: str, out: Path, receiver: Receiver, receiver_port: int) -> str:
    """Write ``<name>-<case>.eml`` for every case; the versions used."""
    with (
        tempfile.TemporaryDirectory(prefix=f"deadpixel-{name}-") as temp,
        MTAS[name](Path(temp), receiver_port) as (version, submit),
    ):
        receiver.bounces.clear()
        submit()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not all(receiver.bounce_for(c) for c in CASES):
            time.sleep(0.2)
        missing = [c for c in CASES if receiver.bounce_for(c) is None]
        for case in CASES:
            bounce = receiver.bounce_for(case)
            if bounce is not None:
                (out / f"{name}-{case}.eml").write_bytes(bounce)
        if missing:
            print(f"{name}: no bounce within {WAIT:.0f} s for {', '.join(missing)}", file=sys.stderr)
        return version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mta", default=",".join(MTAS), help="comma-separated, of: " + ", ".join(MTAS))
    parser.add_argument("--out", type=Path, default=HERE / "mta")
    args = parser.parse_args()
    names = [n.strip() for n in args.mta.split(",") if n.strip()]
    unknown = [n for n in names if n not in MTAS]
    if unknown:
        parser.error(f"unknown MTA: {', '.join(unknown)}")
    if os.geteuid() != 0:
        parser.error("run as root: the MTAs' own processes change user, and OpenSMTPD needs namespaces")
    args.out.mkdir(parents=True, exist_ok=True)
    receiver = Receiver()
    port = free_port()
    controller = Controller(receiver, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        for name in names:
            try:
                print(f"{name}: {make(name, args.out, receiver, port)}")
            except Skip as exc:
                print(f"{name}: skipped: {exc}", file=sys.stderr)
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
