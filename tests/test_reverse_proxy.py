"""A real ``deadpixel serve`` behind Debian's Caddy and nginx, each configured with the file docs/deploy.md
shows (deploy/Caddyfile.example, deploy/nginx.conf.example), over HTTPS from a local CA.

The reader connects from 127.0.0.7, the proxy from 127.0.0.1; deadpixel trusts only 127.0.0.1 and keeps
full addresses, so what is stored is exactly the address deadpixel chose as the reader's.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import insert, select

from deadpixel.config import Settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.db import create_engine
from deadpixel.store.messages import campaign_id
from deadpixel.store.schema import campaign_recipients, opens, suppressions
from tests.conftest import Server, free_port
from tests.helpers import make_pixels
from tests.test_clicks import click_rows, tracked_message
from tests.test_setup_link import console_link, form_csrf

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
READER = "127.0.0.7"
FORGED = "17.58.0.1"  # Apple's: a reader who could choose it would choose their own verdict and country
# Every header a client might use to claim an address; the proxies pass all but X-Forwarded-For as sent.
CLAIMS = {
    "x-forwarded-for": FORGED,
    "forwarded": f"for={FORGED}",
    "x-real-ip": FORGED,
    "true-client-ip": FORGED,
    "cf-connecting-ip": FORGED,
}


@dataclass
class Proxy:
    url: str  # https://127.0.0.1:PORT, deadpixel's base URL
    ca: Path  # the root certificate the client trusts
    process: subprocess.Popen[bytes]
    log: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _wait_for(proxy: Proxy, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(f"the proxy exited: {proxy.log.read_text()}")
        if proxy.ca.exists():
            try:
                if httpx.get(proxy.url + "/healthz", verify=_trust(proxy.ca), timeout=1).status_code == 200:
                    return
            except (httpx.TransportError, ssl.SSLError):
                pass
        time.sleep(0.1)
    _stop(proxy.process)
    raise RuntimeError(f"the proxy did not answer: {proxy.log.read_text()}")


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def start_caddy(tmp: Path, port: int, upstream: int) -> Proxy:
    """Caddy with the documented site block, its name and upstream replaced, and ``tls internal``: a local
    CA of Caddy's own, whose root the client trusts. Admin API off, its files under ``tmp``."""
    site = (DEPLOY / "Caddyfile.example").read_text()
    site = site.replace("t.example.com {", f"https://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\ttls internal")
    site = site.replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
    config = tmp / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n\tskip_install_trust\n\tauto_https disable_redirects\n"
        f"\thttp_port {free_port()}\n\thttps_port {port}\n\tstorage file_system {tmp / 'data'}\n}}\n\n" + site
    )
    log = tmp / "caddy.log"
    home = {"HOME": str(tmp), "XDG_DATA_HOME": str(tmp / "xdg-data"), "XDG_CONFIG_HOME": str(tmp / "xdg")}
    process = subprocess.Popen(
        ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **home},
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    ca = tmp / "data" / "pki" / "authorities" / "local" / "root.crt"
    return Proxy(f"https://127.0.0.1:{port}", ca, process, log)


def _local_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A root certificate and a server certificate for 127.0.0.1 signed by it: (root, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("deadpixel test CA")
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    root = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(loopback, critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    paths = tmp / "root.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].chmod(0o600)
    return paths


def start_nginx(tmp: Path, port: int, upstream: int) -> Proxy:
    """nginx with the documented server block, its listener, name, certificate and upstream replaced,
    wrapped in the least main configuration that runs it in the foreground as one process."""
    root, cert, key = _local_ca(tmp)
    site = (DEPLOY / "nginx.conf.example").read_text()
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;")
    site = site.replace("/etc/letsencrypt/live/t.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/t.example.com/privkey.pem", str(key))
    site = site.replace("server_name t.example.com;", "server_name 127.0.0.1;")
    site = site.replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
    (tmp / "site.conf").write_text(site)
    log = tmp / "nginx.log"
    temps = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = tmp / "nginx.conf"
    config.write_text(
        f"daemon off;\nmaster_process off;\npid {tmp / 'nginx.pid'};\nerror_log {log} warn;\n"
        f"events {{}}\nhttp {{\n    access_log off;\n{temps}\n    include {tmp / 'site.conf'};\n}}\n"
    )
    process = subprocess.Popen(
        [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp), "-c", str(config)],
        stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True,
    )  # fmt: skip
    return Proxy(f"https://127.0.0.1:{port}", root, process, log)


STARTERS = {"caddy": start_caddy, "nginx": start_nginx}


@pytest.fixture(params=sorted(STARTERS))
def behind_proxy(
    request: pytest.FixtureRequest, server_factory: type[Server], env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Proxy, Server]]:
    """deadpixel on loopback with the settings docs/deploy.md gives, and the proxy in front of it."""
    kind = request.param
    if shutil.which(kind) is None and not Path(f"/usr/sbin/{kind}").exists():
        pytest.skip(f"{kind} is not installed (apt-get install {kind})")
    port = free_port()
    server = server_factory(
        env={
            **env,
            "DEADPIXEL_BASE_URL": f"https://127.0.0.1:{port}",
            "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1/32",
            "DEADPIXEL_IP_MODE": "full",
        }
    ).start()
    home = tmp_path / kind
    home.mkdir()
    proxy = STARTERS[kind](home, port, server.port)
    try:
        _wait_for(proxy)
        yield proxy, server
    finally:
        _stop(proxy.process)


def reader(proxy: Proxy) -> httpx.Client:
    """A client on 127.0.0.7 that trusts the proxy's CA and keeps cookies."""
    transport = httpx.HTTPTransport(local_address=READER, verify=_trust(proxy.ca), retries=1)
    return httpx.Client(base_url=proxy.url, transport=transport)


def stored_ips(settings: Settings, message_id: str) -> list[str | None]:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(opens.c.ip).where(opens.c.message_id == message_id)).scalars())
    finally:
        engine.dispose()


def cookie_flags(response: httpx.Response, name: str) -> set[str]:
    """The attributes (lower case) of the cookie ``name`` the response sets."""
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith(name + "=")]
    return {part.strip().split("=", 1)[0].lower() for part in cookie.split(";")[1:]}


def unsubscribe_link(settings: Settings, address: str) -> str:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        campaign = campaign_id(conn, "news", create=True)
        conn.execute(
            insert(campaign_recipients).values(
                campaign_id=campaign, address=address, line=2, run_id="r" * 16, message_id=None,
                status="sent", updated_at=time.time(), unsubscribe_id="0123456789abcdef",
            )
        )  # fmt: skip
    engine.dispose()
    return "/u/" + TokenSigner(load_or_create_keys(settings.keys_file)).unsubscribe_token("0123456789abcdef")


def test_the_reader_is_the_one_who_connected_whatever_they_claim(
    behind_proxy: tuple[Proxy, Server], settings: Settings
) -> None:
    proxy, _ = behind_proxy
    (plain, plain_path), (claimed, claimed_path), *one_each = make_pixels(settings, 2 + len(CLAIMS))
    with reader(proxy) as client:
        gif = client.get(plain_path)
        assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
        assert client.get(claimed_path, headers=CLAIMS).status_code == 200
        for (_, path), (name, value) in zip(one_each, CLAIMS.items(), strict=True):
            assert client.get(path, headers={name: value}).status_code == 200
        assert client.head(plain_path).status_code == 200
    assert stored_ips(settings, plain) == [READER, READER]
    assert stored_ips(settings, claimed) == [READER]
    for message, _ in one_each:
        assert stored_ips(settings, message) == [READER]


def test_clicks_unsubscribes_and_the_dashboard_work_through_the_proxy(
    behind_proxy: tuple[Proxy, Server], settings: Settings
) -> None:
    proxy, server = behind_proxy
    mid, hrefs = tracked_message(settings, "a@example.com")
    unsubscribe = unsubscribe_link(settings, "ann@example.org")
    with reader(proxy) as client:
        click = client.get(hrefs[0][len(settings.base_url) :], headers=CLAIMS, follow_redirects=False)
        assert click.status_code == 302 and click.headers["location"] == "https://shop.example/sale?x=1&y=2"
        assert [row.ip for row in click_rows(settings, mid)] == [READER]

        page = client.get(unsubscribe)
        assert page.status_code == 200 and "a**@example.org" in page.text
        done = client.post(
            unsubscribe,
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200 and "unsubscribed" in done.text

        # The first account, through the setup link the console shows (already the public https URL).
        link = console_link(server)
        assert link is not None and link.startswith(proxy.url + "/setup/")
        assert client.get("/login", follow_redirects=False).status_code == 200
        form = client.get(link)
        assert form.status_code == 200
        assert "secure" in cookie_flags(form, "deadpixel_login")  # the form's CSRF cookie
        made = client.post(
            link, data={"name": "ann", "password": "pw", "password2": "pw", "csrf": form_csrf(form)}
        )
        assert made.status_code == 201

        # Sign in with the form: the session cookie is Secure behind https.
        client.cookies.clear()
        login = client.get("/login")
        assert "secure" in cookie_flags(login, "deadpixel_login")  # the sign-in form's CSRF cookie too
        answer = client.post(
            "/login",
            data={"name": "ann", "password": "pw", "csrf": form_csrf(login), "next": "/campaigns"},
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/campaigns"
        assert {"secure", "httponly"} <= cookie_flags(answer, "deadpixel_session")
        assert client.get("/campaigns").status_code == 200

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(select(suppressions.c.address)).scalars().all() == ["ann@example.org"]
    engine.dispose()


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
def test_the_pixels_own_protocol_and_the_asgi_path_read_the_same_one_header(
    server_factory: type[Server], env: dict[str, str], settings: Settings, header: str
) -> None:
    """A pixel on a fresh connection is answered by deadpixel.track.protocol; on a connection that served
    any other request first, by the ASGI app. Both believe only DEADPIXEL_PROXY_HEADER."""
    server = server_factory(
        env={
            **env,
            "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1/32",
            "DEADPIXEL_IP_MODE": "full",
            "DEADPIXEL_PROXY_HEADER": header,
        }
    ).start()
    named = {
        "X-Forwarded-For": "198.51.100.23",
        "Forwarded": "for=198.51.100.23",
        "X-Real-IP": "198.51.100.23",
    }
    sent = {**CLAIMS, header.lower(): named[header]}
    (fresh, fresh_path), (handed, handed_path) = make_pixels(settings, 2)
    with httpx.Client(base_url=server.url) as client:
        assert client.get(fresh_path, headers=sent).status_code == 200
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz").status_code == 200  # the connection is uvicorn's from here on
        assert client.get(handed_path, headers=sent).status_code == 200
    assert stored_ips(settings, fresh) == ["198.51.100.23"]
    assert stored_ips(settings, handed) == ["198.51.100.23"]
