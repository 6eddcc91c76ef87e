"""``deadpixel doctor`` against real deployments on loopback: a real ``deadpixel serve``, TLS and plain
forwarders in front of it, a real SMTP server with AUTH, real SQLite and PostgreSQL stores."""

from __future__ import annotations

import datetime as dt
import json
import select
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from deadpixel.config import Settings, load_settings
from deadpixel.doctor.clock import offset_status
from deadpixel.doctor.context import Context
from deadpixel.doctor.files import GiB, MiB, disk_status
from deadpixel.doctor.geo import geo_data, snapshot_date
from deadpixel.doctor.mail import bounce_mx
from deadpixel.doctor.result import Finding
from deadpixel.doctor.runner import CHECKS, run_checks
from deadpixel.store.db import create_engine
from deadpixel.store.migrate import SCHEMA_REVISION, downgrade

from .conftest import Server, free_port
from .helpers import Certificate, Ran, count_opens, deadpixel, make_certificate

CHECK_NAMES = [
    "base_url",
    "pixel",
    "tls",
    "proxies",
    "permissions",
    "database",
    "disk",
    "clock",
    "signing_keys",
    "smtp",
    "bounce_mx",
    "geo_data",
]
READER = "203.0.113.9"  # the address a forwarder below claims to forward for


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite unless a test asks for PostgreSQL itself (conftest's default runs every test on both)."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@dataclass
class Report:
    code: int
    document: dict[str, Any]
    stderr: str

    def check(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(c for c in self.document["checks"] if c["name"] == name)
        return found

    def failed(self) -> set[str]:
        return {c["name"] for c in self.document["checks"] if c["status"] == "fail"}


def run_doctor(env: dict[str, str], *args: str, **extra: str) -> Ran:
    return deadpixel("doctor", "--timeout", "3", *args, env={"SSL_CERT_FILE": None, **env, **extra})


def doctor_json(env: dict[str, str], **extra: str) -> Report:
    done = run_doctor(env, "--json", **extra)
    assert "Traceback" not in done.stderr, done.stderr
    return Report(done.returncode, json.loads(done.stdout), done.stderr)


def check_here(env: dict[str, str], name: str, **extra: str) -> dict[str, Any]:
    """One check run in this process (cheaper than a whole ``deadpixel doctor``), on the same settings."""
    settings = load_settings({**env, **extra})
    [result] = run_checks(settings, timeout=3, checks=[(name, dict(CHECKS)[name])])
    return result.as_dict()


# --- a whole deployment ---------------------------------------------------------------------------------


def test_a_healthy_deployment_passes_and_records_no_open(
    server: Server, env: dict[str, str], settings: Settings
) -> None:
    report = doctor_json(env, DEADPIXEL_BASE_URL=server.url)
    assert report.code == 0, report.document
    assert list(report.document) == ["status", "checks"]
    assert [c["name"] for c in report.document["checks"]] == CHECK_NAMES
    for check in report.document["checks"]:
        assert set(check) == {"name", "status", "message", "fix"}
        assert check["status"] in ("ok", "warn", "skip")
        assert (check["fix"] is None) == (check["status"] in ("ok", "skip")), check
    assert report.document["status"] in ("ok", "warn")
    statuses = {c["name"]: c["status"] for c in report.document["checks"]}
    assert statuses | {"geo_data": "?"} == {
        "base_url": "ok",
        "pixel": "ok",
        "tls": "skip",  # http:// on loopback
        "proxies": "ok",
        "permissions": "ok",
        "database": "ok",
        "disk": "ok",
        "clock": "ok",
        "signing_keys": "ok",
        "smtp": "skip",
        "bounce_mx": "skip",
        "geo_data": "?",  # the built-in snapshot ages with the calendar
    }
    assert "no proxy" in report.check("proxies")["message"]
    assert SCHEMA_REVISION in report.check("database")["message"]
    # The pixel was asked for with a forged token: answered, never recorded.
    assert count_opens(settings) == 0


def test_an_open_data_dir_fails_with_the_chmod_that_fixes_it(server: Server, env: dict[str, str]) -> None:
    data_dir = Path(env["DEADPIXEL_DATA_DIR"])
    database = Path(env["DEADPIXEL_DATABASE_URL"].removeprefix("sqlite:///"))
    assert stat.S_IMODE(database.stat().st_mode) == 0o600  # created private, as the data dir is
    data_dir.chmod(0o755)
    (data_dir / "signing-keys.json").chmod(0o644)

    report = doctor_json(env, DEADPIXEL_BASE_URL=server.url)
    assert report.code == 1
    assert report.failed() == {"permissions", "signing_keys"}
    permissions = report.check("permissions")
    assert f"{data_dir} is 0755" in permissions["message"]
    assert f"chmod 700 {data_dir}" in permissions["fix"]
    assert f"chmod 600 {data_dir / 'signing-keys.json'}" in permissions["fix"]

    # The user runs the fix as printed, and the next run passes.
    subprocess.run(permissions["fix"], shell=True, check=True)
    assert check_here(env, "permissions")["status"] == "ok"
    assert check_here(env, "signing_keys")["status"] == "ok"


def test_an_unreachable_base_url_and_trust_in_everyone_fail_in_one_line_each(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_doctor(env, DEADPIXEL_BASE_URL=url, DEADPIXEL_TRUSTED_PROXIES="0.0.0.0/0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("fail  base_url") and "connection refused" in first

    lines = done.stdout.splitlines()
    proxies = lines.index(next(line for line in lines if line.startswith("fail  proxies")))
    assert "0.0.0.0/0" in lines[proxies] and "DEADPIXEL_TRUSTED_PROXIES" in lines[proxies + 1]
    assert lines[proxies + 1].lstrip().startswith("fix: ")
    assert any(line.startswith("skip  pixel") for line in lines)
    assert lines[-1].split(", ")[0].endswith(" fail")


def test_a_bad_setting_is_one_failed_check(env: dict[str, str]) -> None:
    report = doctor_json(env, DEADPIXEL_BASE_URL="ftp://nope")
    assert report.code == 1
    assert [c["name"] for c in report.document["checks"]] == ["settings"]
    assert "DEADPIXEL_BASE_URL" in report.check("settings")["message"]


# --- TLS and proxies in front of the server --------------------------------------------------------------


class Forwarder:
    """A tiny reverse proxy on loopback: optionally terminates TLS, optionally appends an X-Forwarded-For
    (as nginx's $proxy_add_x_forwarded_for does), then passes bytes both ways."""

    def __init__(self, backend_port: int, tls: Certificate | None = None, forward_for: str | None = None):
        self.backend_port = backend_port
        self.forward_for = forward_for
        self.context: ssl.SSLContext | None = None
        if tls is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(tls.cert, tls.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            client.settimeout(10)
            if self.context is not None:
                client = self.context.wrap_socket(client, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            if self.forward_for is not None:
                end = head.index(b"\r\n\r\n")
                head = head[:end] + f"\r\nX-Forwarded-For: {self.forward_for}".encode() + head[end:]
            with socket.create_connection(("127.0.0.1", self.backend_port), timeout=10) as backend:
                backend.sendall(head)
                self._pipe(client, backend)
        except OSError:
            pass  # a refused handshake or a dropped peer: the doctor's side sees it
        finally:
            client.close()

    @staticmethod
    def _pipe(client: socket.socket, backend: socket.socket) -> None:
        while True:
            pending = client.pending() if isinstance(client, ssl.SSLSocket) else 0
            ready = [client] if pending else select.select([client, backend], [], [], 10)[0]
            if not ready:
                return
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                (backend if sock is client else client).sendall(data)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def forwarders() -> Iterator[list[Forwarder]]:
    made: list[Forwarder] = []
    yield made
    for forwarder in made:
        forwarder.close()


@pytest.mark.slow
def test_certificates_near_expiry_warn_and_expired_fail_with_the_date(
    server: Server, env: dict[str, str], tmp_path: Path, forwarders: list[Forwarder]
) -> None:
    def behind_tls(days_left: float, name: str) -> tuple[Report, Certificate]:
        cert = make_certificate(tmp_path / name, days_left)
        forwarders.append(Forwarder(server.port, tls=cert))
        report = doctor_json(env, DEADPIXEL_BASE_URL=forwarders[-1].url, SSL_CERT_FILE=str(cert.cert))
        return report, cert

    report, cert = behind_tls(5, "soon")
    assert report.code == 0, report.document  # a warning alone passes
    tls = report.check("tls")
    assert tls["status"] == "warn"
    assert cert.not_after.strftime("%Y-%m-%d %H:%M") in tls["message"]
    assert "renew" in tls["fix"]
    assert report.check("pixel")["status"] == "ok"  # through the TLS proxy

    report, cert = behind_tls(-2, "expired")
    assert report.code == 1
    tls = report.check("tls")
    assert tls["status"] == "fail" and "expired on" in tls["message"]
    assert cert.not_after.strftime("%Y-%m-%d %H:%M") in tls["message"]
    assert report.check("base_url")["status"] == "fail"


@pytest.mark.slow
def test_a_valid_certificate_passes_and_an_untrusted_one_fails(
    server: Server,
    env: dict[str, str],
    tmp_path: Path,
    forwarders: list[Forwarder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert = make_certificate(tmp_path / "fine", 90)
    forwarders.append(Forwarder(server.port, tls=cert))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert))
    tls = check_here(env, "tls", DEADPIXEL_BASE_URL=forwarders[-1].url)
    assert tls["status"] == "ok" and "days" in tls["message"], tls

    monkeypatch.delenv("SSL_CERT_FILE")  # the system's CAs know nothing of it
    tls = check_here(env, "tls", DEADPIXEL_BASE_URL=forwarders[-1].url)
    assert tls["status"] == "fail" and "not valid" in tls["message"] and "SSL_CERT_FILE" in tls["fix"]


@pytest.mark.slow
def test_proxies_trusted_or_not_and_a_server_that_believes_a_forged_forwarded_for(
    server_factory: type[Server], env: dict[str, str], forwarders: list[Forwarder]
) -> None:
    # A proxy the server does not trust: every reader would be the proxy.
    untrusting = server_factory(env=dict(env)).start()
    forwarders.append(Forwarder(untrusting.port, forward_for=READER))
    report = doctor_json(env, DEADPIXEL_BASE_URL=forwarders[-1].url)
    proxies = report.check("proxies")
    assert proxies["status"] == "fail", proxies
    assert "127.0.0.1" in proxies["message"] and "the proxy itself" in proxies["message"]
    assert "DEADPIXEL_TRUSTED_PROXIES" in proxies["fix"]
    untrusting.stop()

    # Trusted: the reader's address comes through, and a forged header sent through the proxy does not.
    trusting_env = {**env, "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1/32"}
    trusting = server_factory(env=trusting_env).start()
    forwarders.append(Forwarder(trusting.port, forward_for=READER))
    proxies = check_here(trusting_env, "proxies", DEADPIXEL_BASE_URL=forwarders[-1].url)
    assert proxies["status"] == "ok", proxies
    assert READER in proxies["message"] and "forged" in proxies["message"]

    # Straight to that server from an address it trusts, though these settings do not say so: a header
    # anyone could write is believed.
    proxies = check_here(env, "proxies", DEADPIXEL_BASE_URL=trusting.url)
    assert proxies["status"] == "fail" and "198.51.100.77" in proxies["message"], proxies


# --- SMTP -------------------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


def authenticator(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    good = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"ann",
        b"s3cret",
    )
    return AuthResult(success=good, handled=False)


@pytest.mark.slow
def test_smtp_login_with_starttls_right_and_wrong_password(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = make_certificate(tmp_path / "smtp", 30)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    sink = Sink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    try:
        smtp = {
            "DEADPIXEL_SMTP_HOST": "127.0.0.1",
            "DEADPIXEL_SMTP_PORT": str(port),
            "DEADPIXEL_SMTP_USERNAME": "ann",
            "SSL_CERT_FILE": str(cert.cert),
        }
        right = doctor_json(env, **smtp, DEADPIXEL_SMTP_PASSWORD="s3cret").check("smtp")
        assert right["status"] == "ok" and "as ann" in right["message"], right

        monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert))
        wrong = check_here(env, "smtp", **smtp, DEADPIXEL_SMTP_PASSWORD="nope")
        assert wrong["status"] == "fail" and "535" in wrong["message"], wrong
        assert "DEADPIXEL_SMTP_PASSWORD" in wrong["fix"]

        monkeypatch.delenv("SSL_CERT_FILE")
        untrusted = check_here(env, "smtp", **smtp, DEADPIXEL_SMTP_PASSWORD="s3cret")
        assert untrusted["status"] == "fail" and "certificate" in untrusted["message"], untrusted
    finally:
        controller.stop()
    assert sink.messages == []  # a check never sends mail


# --- the store --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.slow
def test_a_store_behind_the_newest_schema_fails_until_upgraded(
    backend: str, env: dict[str, str], settings: Settings, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
        env = {**env, "DEADPIXEL_DATABASE_URL": url}
        engine = create_engine(url)
        from deadpixel.store.migrate import upgrade

        upgrade(engine)
    else:
        engine = create_engine(settings.database_url)
    previous = f"{int(SCHEMA_REVISION) - 1:04d}"
    downgrade(engine, previous)
    engine.dispose()

    report = doctor_json(env)
    database = report.check("database")
    assert report.code == 1 and database["status"] == "fail"
    assert previous in database["message"] and SCHEMA_REVISION in database["message"]
    assert "deadpixel db upgrade" in database["fix"]
    if backend == "postgresql":
        clock = report.check("clock")
        assert clock["status"] == "ok" and "PostgreSQL" in clock["message"], clock

    upgraded = deadpixel("db", "upgrade", env={"SSL_CERT_FILE": None, **env})
    assert upgraded.returncode == 0, upgraded.stderr
    assert check_here(env, "database")["status"] == "ok"


@pytest.mark.slow
def test_a_missing_sqlite_file_is_reported_and_not_created(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    report = doctor_json(env, DEADPIXEL_DATABASE_URL=f"sqlite:///{missing}")
    assert report.check("database")["status"] == "fail"
    assert str(missing) in report.check("database")["message"]
    assert not missing.exists()


# --- thresholds -------------------------------------------------------------------------------------------


def test_thresholds() -> None:
    assert disk_status(99 * MiB, 200 * GiB) == "fail"
    assert disk_status(900 * MiB, 2 * GiB) == "warn"  # under 1 GiB
    assert disk_status(5 * GiB, 100 * GiB) == "warn"  # under 10 %
    assert disk_status(20 * GiB, 100 * GiB) == "ok"
    assert [offset_status(s) for s in (0.4, -4.9, 5.5, -30, 61, -90)] == [
        "ok",
        "ok",
        "warn",
        "warn",
        "fail",
        "fail",
    ]


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ("MAXMIND:GeoLite2-CountryASN-IPv4IPv6-en-20240618", dt.date(2024, 6, 18)),
        ("dbip-country-lite 2026-11-01 (CC BY 4.0)", dt.date(2026, 11, 1)),
        ("geo data v3, built 20261203T0400Z", dt.date(2026, 12, 3)),
        ("20241340 then 2025-02-30 then 20250228", dt.date(2025, 2, 28)),  # impossible dates skipped
        ("build 1234567890123", None),
        ("unknown", None),
    ],
)
def test_the_geo_snapshot_date_is_read_defensively(info: str, expected: dt.date | None) -> None:
    assert snapshot_date(info) == expected


# --- the bounce domain's MX -------------------------------------------------------------------------------


class DNSServer:
    """A tiny authoritative DNS server on loopback UDP: bounces.example.com has an MX, nomx.example.com has
    none, every other name does not exist."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            name = query.question[0].name.to_text()
            if name == "bounces.example.com.":
                reply.answer.append(dns.rrset.from_text(name, 300, "IN", "MX", "10 mx.example.com."))
            elif name != "nomx.example.com.":
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


def test_the_bounce_domains_mx_found_missing_or_unanswered(env: dict[str, str]) -> None:
    server = DNSServer()

    def mx(domain: str, port: int) -> Finding:
        settings = load_settings({**env, "DEADPIXEL_BOUNCE_DOMAIN": domain})
        return bounce_mx(Context(settings, timeout=1, nameservers=[("127.0.0.1", port)]))

    try:
        found = mx("bounces.example.com", server.port)
        assert found.status == "ok" and "10 mx.example.com." in found.message
        missing = mx("nomx.example.com", server.port)
        assert missing.status == "fail" and "no MX" in missing.message
        assert missing.fix is not None and "MX 10" in missing.fix
        assert mx("gone.example.com", server.port).status == "fail"
    finally:
        server.close()
    silent = mx("bounces.example.com", free_port())  # nothing answers there
    assert silent.status == "skip" and "DNS does not answer" in silent.message


def test_geo_data_older_than_six_months_warns_and_names_a_configured_mmdb(
    env: dict[str, str], tmp_path: Path
) -> None:
    from deadpixel.enrich.geo import builtin_data_info

    mmdb_writer = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    writer = mmdb_writer.MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    writer.insert_network(netaddr.IPSet(["81.2.69.0/24"]), {"country": {"iso_code": "GB"}})
    writer.to_db_file(str(tmp_path / "city.mmdb"))
    ctx = Context(load_settings({**env, "DEADPIXEL_GEOIP_DATABASE": str(tmp_path / "city.mmdb")}))

    built_in = snapshot_date(builtin_data_info())
    assert built_in is not None  # whatever the data set, its name must carry a date
    fresh = geo_data(ctx, today=built_in + dt.timedelta(days=30))
    assert fresh.status == "ok" and "city.mmdb" in fresh.message and str(built_in) in fresh.message
    stale = geo_data(ctx, today=max(built_in, dt.date.today()) + dt.timedelta(days=200))
    assert stale.status == "warn" and "months old" in stale.message and stale.fix is not None
