"""Webhooks cannot be used to reach the server's own network: loopback, private, link-local and cloud
metadata targets are refused when added (in every spelling a resolver reads) and again at every connection,
DNS rebinding included, unless allow-listed; listings show only generic delivery errors."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import ConfigError, Settings, load_settings
from deadpixel.hooks import registry
from deadpixel.hooks.deliver import Deliverer, Policy, new_client, post
from deadpixel.hooks.guard import Guard, Refused
from deadpixel.server.app import Deadpixel
from deadpixel.store import outbox
from deadpixel.store.db import create_engine
from tests.conftest import free_port
from tests.test_dashboard import sign_in
from tests.test_webhooks import Receiver, seed_opens

from .helpers import deadpixel

PUBLIC = "93.184.216.34"  # what the fake resolvers below answer for a name that looks harmless


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver().start()
    yield made
    made.stop()


@pytest.fixture
def engines(settings: Settings) -> Iterator[tuple[Engine, Engine]]:
    reader = create_engine(settings.database_url)
    writer = create_engine(settings.database_url, writer=True)
    outbox.forget_cache()
    yield reader, writer
    reader.dispose()
    writer.dispose()


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} was looked up although its address is spelt out")


# ---- adding: the review's targets, refused at once with one line --------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store plays no part
def test_the_command_line_refuses_the_servers_own_network_and_metadata_unless_allow_listed(
    settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    for url in (
        receiver.url,
        f"http://[::1]:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        f"http://0.0.0.0:{port}/hook",
        f"http://2130706433:{port}/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
    ):
        refused = deadpixel("webhook", "add", url)
        assert refused.returncode == 1, (url, refused.stdout)
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("Error: refused: ") and "DEADPIXEL_WEBHOOK_ALLOW" in line, line
    assert deadpixel("webhook", "list", "--json").stdout.strip() == "[]"

    monkeypatch.setenv("DEADPIXEL_WEBHOOK_ALLOW", "127.0.0.0/8")
    added = deadpixel("webhook", "add", receiver.url)
    assert added.returncode == 0, added.stderr
    tested = deadpixel("webhook", "test", "1")
    assert tested.returncode == 0 and "answered 200" in tested.stdout, tested.stderr
    assert len(receiver.hits) == 1
    monkeypatch.setenv(
        "DEADPIXEL_WEBHOOK_ALLOW", ""
    )  # taken back: the webhook stays, its deliveries do not go
    again = deadpixel("webhook", "test", "1")
    assert again.returncode == 1 and "could not connect (ConnectError: refused: 127.0.0.1 is a loopback" in (
        again.stderr
    )
    assert len(receiver.hits) == 1

    monkeypatch.setenv("DEADPIXEL_WEBHOOK_ALLOW", "10.0.0.0/33")
    bad = deadpixel("webhook", "list")
    assert bad.returncode != 0 and "DEADPIXEL_WEBHOOK_ALLOW" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "url",
    [
        "http://0x7f.1/", "http://017700000001/", "http://127.1/", "http://0x7f000001/", "http://127.0.0.1./",
        "http://[::ffff:127.0.0.1]/", "http://[::ffff:a9fe:a9fe]/", "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/", "http://[fd00:ec2::254]/", "http://[fe80::1]/", "http://[::]/",
        "http://10.1.2.3/", "http://172.31.255.255/", "http://192.168.0.1/", "http://100.100.100.200/",
        "http://224.0.0.1/", "http://255.255.255.255/", "http://LOCALHOST:8000/", "http://a.localhost/",
        "http://metadata.google.internal./", "http://metadata.goog/", "http://instance-data/",
        "http://0300.0250.0.1/", "http://0xa9.0xfe.0xa9.0xfe/",
    ],
)  # fmt: skip
def test_every_spelling_of_a_blocked_target_is_refused_without_a_lookup(url: str) -> None:
    with pytest.raises(registry.WebhookError, match=r"^refused: "):
        registry.check_url(url, Guard(resolver=no_dns))


def test_public_hosts_pass_and_numbers_no_resolver_reads_are_refused() -> None:
    for url in ("https://8.8.8.8/h", "https://[2606:4700:4700::1111]/h", "https://[::ffff:8.8.8.8]/h",
                "https://[64:ff9b::808:808]/h", "http://134744072/h"):  # fmt: skip
        assert registry.check_url(url, Guard(resolver=no_dns)) == url
    with pytest.raises(registry.WebhookError, match="is not a usable address"):
        registry.check_url("http://256.1.1.1/", Guard(resolver=no_dns))
    public = Guard(resolver=lambda host, port: [PUBLIC])
    assert registry.check_url("https://hooks.example.com/h", public) == "https://hooks.example.com/h"
    private = Guard(resolver=lambda host, port: [PUBLIC, "10.0.0.7"])  # every address counts
    with pytest.raises(registry.WebhookError, match=r"hooks\.example\.com resolves to a private address"):
        registry.check_url("https://hooks.example.com/h", private)
    gone = Guard(resolver=lambda host, port: (_ for _ in ()).throw(socket.gaierror("no such name")))
    assert registry.check_url("https://not-yet.example.com/h", gone)  # checked again at each delivery


def test_the_allow_list_takes_cidrs_addresses_and_names() -> None:
    guard = Guard.allowing(
        "10.0.0.0/8", "::1", "Hooks.Internal.", resolver=lambda host, port: ["192.168.1.9"]
    )
    assert registry.check_url("http://10.9.8.7/h", guard)
    assert registry.check_url("http://[::1]:9/h", guard)
    assert registry.check_url("http://[::ffff:10.1.1.1]/h", guard)
    assert registry.check_url("http://hooks.internal/h", guard)  # allowed by name, whatever it resolves to
    with pytest.raises(registry.WebhookError, match="resolves to a private address"):
        registry.check_url("http://other.internal/h", guard)
    with pytest.raises(registry.WebhookError, match="loopback"):
        registry.check_url("http://127.0.0.1/h", guard)
    with pytest.raises(ConfigError, match="DEADPIXEL_WEBHOOK_ALLOW: 'bad_host!' is not"):
        load_settings({}, data_dir=".", webhook_allow="10.0.0.0/8, bad_host!")
    assert load_settings({}, data_dir=".", webhook_allow="10.0.0.0/8 ::1").webhook_allow == (
        "10.0.0.0/8",
        "::1",
    )


# ---- the classifier: every address in the blocked ranges, in any spelling --------------------------------

BLOCKED_V4 = [ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)]  # fmt: skip
BLOCKED_V6 = [ipaddress.IPv6Network(n) for n in ("::1/128", "::/128", "fc00::/7", "fe80::/10", "ff00::/8")]


def _in(network: Any) -> st.SearchStrategy[Any]:
    first, last = int(network.network_address), int(network.broadcast_address)
    return st.integers(first, last).map(ipaddress.ip_address)


def _number(value: int, base: str) -> str:
    return {
        "dec": str(value),
        "hex": hex(value),
        "HEX": "0X" + format(value, "X"),
        "oct": "0" + format(value, "o"),
    }[base]


@st.composite
def ipv4_spellings(draw: st.DrawFn) -> tuple[ipaddress.IPv4Address, str, bool]:
    """A blocked IPv4 address, one way a resolver would read it, and whether inet_aton should agree."""
    address = draw(st.sampled_from(BLOCKED_V4).flatmap(_in))
    a, b, c, d = address.packed
    base = st.sampled_from(["dec", "hex", "HEX", "oct"])
    shape = draw(st.sampled_from(["1", "2", "3", "4", "mapped", "mapped-hex", "nat64", "6to4"]))
    if shape in ("1", "2", "3", "4"):
        parts = {"1": [int(address)], "2": [a, (b << 16) | (c << 8) | d], "3": [a, b, (c << 8) | d],
                 "4": [a, b, c, d]}[shape]  # fmt: skip
        text = ".".join(_number(p, draw(base)) for p in parts)
        return address, text, True
    high, low = (a << 8) | b, (c << 8) | d
    text = {"mapped": f"::ffff:{address}", "mapped-hex": f"::FFFF:{high:x}:{low:x}",
            "nat64": f"64:ff9b::{high:x}:{low:x}", "6to4": f"2002:{high:x}:{low:x}::1"}[shape]  # fmt: skip
    return address, f"[{text}]" if draw(st.booleans()) else text, False


@hypothesis_settings(max_examples=400, deadline=None)
@given(ipv4_spellings())
def test_every_spelling_of_a_blocked_ipv4_address_is_refused(found: tuple[Any, str, bool]) -> None:
    address, text, plain = found
    if plain:  # the C library reads it as the same address, so a connection to it would reach that address
        assert socket.inet_aton(text) == address.packed
    with pytest.raises(Refused):
        Guard(resolver=no_dns).check_host(text, 80)
    with pytest.raises(Refused):
        Guard(resolver=no_dns).addresses(text, 80)
    with pytest.raises(Refused):  # nor when a resolver answers with it
        Guard(resolver=lambda host, port: [str(address)]).addresses("innocent.example", 80)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.sampled_from(BLOCKED_V6).flatmap(_in), st.booleans(), st.booleans())
def test_every_blocked_ipv6_address_is_refused(address: Any, exploded: bool, bracketed: bool) -> None:
    text = address.exploded.upper() if exploded else address.compressed
    text = f"[{text}]" if bracketed else text
    with pytest.raises(Refused):
        Guard(resolver=no_dns).addresses(text, 80)
    with pytest.raises(Refused):
        Guard(resolver=lambda host, port: [str(address)]).addresses("innocent.example", 80)


# ---- delivering: checked at every connection, pinned to the checked address ------------------------------


def test_dns_rebinding_cannot_turn_a_public_name_into_loopback(
    engines: tuple[Engine, Engine], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = engines
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return [PUBLIC] if len(asked) == 1 else ["127.0.0.1"]  # public when added, loopback at delivery

    guard = Guard(resolver=rebinding)
    url = registry.check_url(f"http://hooks.example.com:{receiver.url.split(':')[2]}", guard)
    with writer.begin() as conn:
        registry.add_webhook(conn, url, "open", guard)
    seed_opens(writer, 1)
    deliverer = Deliverer(reader, writer, Policy(backoff=0.05, max_attempts=1, timeout=2.0, guard=guard))
    try:
        deliverer.drain()
    finally:
        deliverer.close()
    assert asked == ["hooks.example.com", "hooks.example.com"] and receiver.hits == []
    with reader.connect() as conn:
        (row,) = registry.recent_deliveries(conn)
    assert (row.status, row.last_status, row.last_error) == ("failed", None, "could not connect")
    assert "hooks.example.com resolves to a loopback address" in caplog.text  # the detail goes to the log


def test_a_delivery_connects_to_the_checked_address_with_the_name_as_host(receiver: Receiver) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])  # a second lookup would be refused: there must be one
    guard = Guard.allowing("127.0.0.1/32", resolver=lambda host, port: next(answers))
    with new_client(Policy(timeout=2.0, guard=guard)) as client:
        outcome = post(client, f"http://hooks.test:{port}/hook", "whsec_x", "test", "e1", b"{}")
    assert outcome.ok, outcome.detail
    (hit,) = receiver.hits
    assert hit.headers["Host"] == f"hooks.test:{port}"
    with new_client(Policy(timeout=2.0, guard=Guard(resolver=lambda h, p: [PUBLIC, "127.0.0.1"]))) as client:
        mixed = post(client, f"http://hooks.test:{port}/hook", "whsec_x", "test", "e2", b"{}")
    assert (mixed.status, mixed.error) == (None, "could not connect") and "loopback" in str(mixed.detail)
    assert len(receiver.hits) == 1


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


def test_tls_is_verified_against_the_name_while_the_connection_goes_to_the_pinned_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = _certificate(tmp_path, "hooks.test")
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            hosts.append(str(self.headers["Host"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the receiver's CA, as an operator would trust one
    port = server.server_address[1]
    guard = Guard.allowing("127.0.0.1", resolver=lambda host, p: ["127.0.0.1"])
    try:
        with new_client(Policy(timeout=5.0, guard=guard)) as client:
            good = post(client, f"https://hooks.test:{port}/h", "whsec_x", "test", "e1", b"{}")
            wrong = post(client, f"https://other.test:{port}/h", "whsec_x", "test", "e2", b"{}")
    finally:
        server.shutdown()
        server.server_close()
    assert good.status == 204, good.detail
    assert wrong.error == "could not connect" and "certificate" in str(wrong.detail).lower()
    assert hosts == [f"hooks.test:{port}"]


# ---- the settings page: refusals with a reason, delivery errors without one -----------------------------


class TeapotServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Teapot(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(418)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("DEADPIXEL_WEBHOOK_ALLOW", "::1")  # loopback over IPv6 only, not 127.0.0.0/8
    allowing = load_settings()
    engine = create_engine(allowing.database_url)
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    engine.dispose()
    with TestClient(Deadpixel(allowing), base_url="http://testserver") as test_client:
        yield test_client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store plays no part
def test_the_settings_page_refuses_private_targets_and_hides_why_deliveries_failed(
    client: TestClient, settings: Settings, receiver: Receiver
) -> None:
    assert sign_in(client) == 303
    shown = client.get("/settings").text
    assert "public addresses, and ::1" in shown and "DEADPIXEL_WEBHOOK_ALLOW" in shown
    token = shown.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    for url in (
        receiver.url,
        "http://169.254.169.254/",
        "http://2130706433/",
        "http://metadata.google.internal/",
    ):
        refused = client.post("/settings/webhooks", data={"csrf": token, "url": url, "events": ["open"]})
        assert refused.status_code == 400 and "refused: " in refused.text, refused.text
        assert "DEADPIXEL_WEBHOOK_ALLOW" in refused.text
    teapot = TeapotServer(("::1", 0), Teapot)
    threading.Thread(target=teapot.serve_forever, daemon=True).start()
    try:
        for url in (f"http://[::1]:{teapot.server_address[1]}/teapot", f"http://[::1]:{free_port()}/closed"):
            added = client.post("/settings/webhooks", data={"csrf": token, "url": url, "events": ["open"]})
            assert added.status_code == 200, added.text
        engine = create_engine(settings.database_url)
        seed_opens(engine, 1)
        deadline = time.monotonic() + 15
        while True:  # the app's own delivery thread tries both
            with engine.connect() as conn:
                rows = registry.recent_deliveries(conn)
            if len(rows) == 2 and all(r.attempts for r in rows):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        engine.dispose()
    finally:
        teapot.shutdown()
        teapot.server_close()
    page = client.get("/settings").text
    assert "the receiver did not accept the delivery" in page and "could not connect" in page
    for leak in ("418", "HTTP", "ConnectError", "refused", "Errno"):
        assert leak not in page.split('id="webhook-list"', 1)[1], leak


def test_a_redirect_to_the_metadata_service_is_not_followed() -> None:
    hits: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            hits.append(self.path)
            self.send_response(307)
            self.send_header("location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with new_client(Policy(timeout=2.0, guard=Guard.allowing("127.0.0.1"))) as client:
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            outcome = post(client, url, "whsec_x", "test", "e1", b"{}")
    finally:
        server.shutdown()
        server.server_close()
    assert (outcome.status, outcome.error, outcome.detail) == (
        307,
        "the receiver did not accept the delivery",
        "HTTP 307",
    )
    assert hits == ["/hook"]
