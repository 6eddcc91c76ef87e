"""Delivery against a real SMTP server (aiosmtpd) on loopback: TLS, AUTH, refusals, retries, dropped links."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import pickle
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deadpixel.mail.compose import PIXEL_TEMPLATE, compose
from deadpixel.mail.smtp import DeliveryError, SMTPSender, SMTPSettings, send_with_retries
from tests.conftest import free_port

HOST = "127.0.0.1"
PIXEL_URL = "https://t.example/o/tok.gif"


# --- a real server ----------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: bytes | None


@dataclass
class Sink:
    """An aiosmtpd handler whose misbehaviour each test can arrange."""

    messages: list[Received] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)  # 550 at RCPT
    busy_rcpt: dict[str, int] = field(default_factory=dict)  # 451 at RCPT, this many times
    busy_data: int = 0  # 451 after DATA, this many times
    refuse_data: str | None = None  # a fixed reply after DATA
    closing_mail: int = 0  # "421" at MAIL FROM, this many times
    drop_in_data: int = 0  # hang up after the message arrives, without answering, this many times
    drop_after: int = 0  # accept, then hang up, this many times
    mail_commands: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        if self.closing_mail:
            self.closing_mail -= 1
            return "421 4.3.2 closing idle connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.reject:
            return "550 5.1.1 no such user"
        if self.busy_rcpt.get(address):
            self.busy_rcpt[address] -= 1
            return "451 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.drop_in_data:
            self.drop_in_data -= 1
            assert server.transport is not None
            server.transport.abort()
            return "250 never seen"
        if self.busy_data:
            self.busy_data -= 1
            return "451 4.3.0 temporary local problem"
        if self.refuse_data:
            return self.refuse_data
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        assert server.transport is not None
        tls = server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or implicit TLS
        with self.lock:
            self.messages.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.content,
                    tls,
                    login,
                )
            )
        if self.drop_after:
            self.drop_after -= 1
            assert server.transport is not None
            asyncio.get_running_loop().call_soon(server.transport.close)  # after the 250 is written
        return "250 2.0.0 queued"


def authenticator(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"user",
        b"s3cret",
    )
    server.mechanisms_used = [*getattr(server, "mechanisms_used", []), mechanism]
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass
class Server:
    port: int
    sink: Sink
    controller: Controller


StartServer = Callable[..., Server]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    controllers: list[Controller] = []

    def start(sink: Sink | None = None, **kwargs: Any) -> Server:
        sink = sink or Sink()
        port = free_port()
        controller = Controller(sink, hostname=HOST, port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return Server(port, sink, controller)

    yield start
    for controller in controllers:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, made for this run."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deadpixel test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(folder / "cert.pem", folder / "key.pem")


def settings_for(server: Server, **overrides: Any) -> SMTPSettings:
    values: dict[str, Any] = {
        "host": HOST,
        "port": server.port,
        "username": None,
        "password": None,
        "tls": "none",
        "timeout": 5.0,
        "local_hostname": "client.test",
    }
    values.update(overrides)
    return SMTPSettings(**values)


def message(to: list[str] | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
    args: dict[str, Any] = {
        "sender": "Jörg <news@example.com>",
        "to": to or ["reader@example.org"],
        "subject": "Grüße",
        "html": '<html><body><p>Hi <a href="https://a.example/?x=1&amp;y=2">there</a></p></body></html>',
        "text": "Hi there\n.a line starting with a dot\n..and two\n.\nend\n",
        "pixel_url": PIXEL_URL,
        "rewrite": lambda url: "https://t.example/c/tok",
    }
    args.update(overrides)
    return compose(**args).message


def no_sleep() -> tuple[list[float], Callable[[float], None]]:
    slept: list[float] = []
    return slept, slept.append


# --- delivery ---------------------------------------------------------------------------------------------


def test_delivers_exact_bytes(start_server: StartServer) -> None:
    server = start_server()
    msg = message(
        to=["reader@example.org"], cc=["Ann <ann@example.net>"], headers={"Bcc": "hidden@example.net"}
    )
    with SMTPSender(settings_for(server)) as sender:
        assert sender.send(msg) == {}
    (got,) = server.sink.messages
    assert got.mail_from == "news@example.com"
    assert got.rcpt_tos == ["reader@example.org", "ann@example.net", "hidden@example.net"]
    del msg["Bcc"]
    msg.set_boundary(BytesParser(policy=policy.default).parsebytes(got.content).get_boundary())
    assert got.content == bytes(msg)  # dot-stuffing undone, nothing else changed: byte for byte
    assert b"hidden@example.net" not in got.content
    parsed = BytesParser(policy=policy.default).parsebytes(got.content)
    assert parsed["Subject"] == "Grüße"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    html = parsed.get_body(("html",)).get_content()
    assert html.count(PIXEL_TEMPLATE.format(src=PIXEL_URL)) == 1
    assert 'href="https://t.example/c/tok"' in html
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == "Hi there\n.a line starting with a dot\n..and two\n.\nend\n"


def test_one_connection_for_many_messages(start_server: StartServer) -> None:
    server = start_server()
    with SMTPSender(settings_for(server)) as sender:
        for index in range(5):
            sender.send(message(to=[f"r{index}@example.org"]))
        assert sender.connections == 1
    assert [m.rcpt_tos for m in server.sink.messages] == [[f"r{i}@example.org"] for i in range(5)]


def test_envelope_can_differ_from_headers(start_server: StartServer) -> None:
    server = start_server()
    with SMTPSender(settings_for(server)) as sender:
        sender.send(message(), envelope_from="bounces+42@example.com", recipients=["other@example.org"])
    assert (server.sink.messages[0].mail_from, server.sink.messages[0].rcpt_tos) == (
        "bounces+42@example.com",
        ["other@example.org"],
    )


# --- TLS and AUTH -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_and_auth(start_server: StartServer, certificate: Certificate, mechanism: str) -> None:
    server = start_server(
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
        auth_exclude_mechanism=["PLAIN"] if mechanism == "LOGIN" else [],
    )
    settings = settings_for(server, tls="starttls", username="user", password="s3cret")
    with SMTPSender(settings, ssl_context=certificate.client_context()) as sender:
        sender.send(message())
        sender.send(message())
    assert [(m.tls, m.login) for m in server.sink.messages] == [(True, b"user"), (True, b"user")]


def test_wrong_password_is_permanent(start_server: StartServer, certificate: Certificate) -> None:
    server = start_server(
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    settings = settings_for(server, tls="starttls", username="user", password="wrong")
    with (
        SMTPSender(settings, ssl_context=certificate.client_context()) as sender,
        pytest.raises(DeliveryError) as err,
    ):
        sender.send(message())
    assert err.value.permanent and err.value.code == 535
    assert server.sink.messages == []


def test_untrusted_certificate_is_permanent(start_server: StartServer, certificate: Certificate) -> None:
    server = start_server(tls_context=certificate.server_context(), require_starttls=True)
    with SMTPSender(settings_for(server, tls="starttls")) as sender, pytest.raises(DeliveryError) as err:
        sender.send(message())  # the default context trusts only the system's CAs
    assert err.value.permanent and "certificate" in err.value.reason
    assert server.sink.messages == []


def test_starttls_missing_is_refused_not_skipped(start_server: StartServer) -> None:
    server = start_server()  # offers no STARTTLS
    with SMTPSender(settings_for(server, tls="starttls")) as sender, pytest.raises(DeliveryError) as err:
        sender.send(message())
    assert err.value.permanent and "STARTTLS" in err.value.reason
    assert server.sink.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls(start_server: StartServer, certificate: Certificate) -> None:
    # aiosmtpd counts only STARTTLS as TLS when deciding whether to offer AUTH
    server = start_server(
        ssl_context=certificate.server_context(),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    settings = settings_for(server, tls="ssl", username="user", password="s3cret")
    with SMTPSender(settings, ssl_context=certificate.client_context()) as sender:
        sender.send(message())
    assert [(m.tls, m.login) for m in server.sink.messages] == [(True, b"user")]


# --- refusals and retries ---------------------------------------------------------------------------------


def test_some_recipients_refused(start_server: StartServer) -> None:
    server = start_server(Sink(reject={"gone@example.org"}))
    with SMTPSender(settings_for(server)) as sender:
        refused = sender.send(message(to=["reader@example.org", "gone@example.org"]))
    assert refused == {"gone@example.org": (550, b"5.1.1 no such user")}
    assert server.sink.messages[0].rcpt_tos == ["reader@example.org"]


def test_all_recipients_refused_is_permanent_with_details(start_server: StartServer) -> None:
    server = start_server(Sink(reject={"gone@example.org", "left@example.org"}))
    slept, sleep = no_sleep()
    with SMTPSender(settings_for(server)) as sender:
        with pytest.raises(DeliveryError) as err:
            send_with_retries(sender, message(to=["gone@example.org", "left@example.org"]), sleep=sleep)
        assert err.value.permanent and err.value.code == 550
        assert set(err.value.recipients) == {"gone@example.org", "left@example.org"}
        assert slept == []
        sender.send(message())  # the connection was reset and is still usable
        assert sender.connections == 1
    assert len(server.sink.messages) == 1


def test_temporary_failure_is_retried_with_backoff(start_server: StartServer) -> None:
    server = start_server(Sink(busy_data=2))
    slept, sleep = no_sleep()
    with SMTPSender(settings_for(server)) as sender:
        with pytest.raises(DeliveryError) as err:
            sender.send(message())
        assert not err.value.permanent and err.value.code == 451 and not err.value.uncertain
        assert send_with_retries(sender, message(), backoff=0.5, sleep=sleep) == {}
    assert slept == [0.5]
    assert len(server.sink.messages) == 1


def test_retries_give_up(start_server: StartServer) -> None:
    server = start_server(Sink(busy_data=10))
    slept, sleep = no_sleep()
    with SMTPSender(settings_for(server)) as sender, pytest.raises(DeliveryError) as err:
        send_with_retries(sender, message(), attempts=4, backoff=1.0, max_backoff=3.0, sleep=sleep)
    assert not err.value.permanent and err.value.code == 451
    assert slept == [1.0, 2.0, 3.0]
    assert server.sink.messages == []


def test_permanent_failure_is_not_retried(start_server: StartServer) -> None:
    server = start_server(Sink(refuse_data="554 5.7.1 message content rejected"))
    slept, sleep = no_sleep()
    with SMTPSender(settings_for(server)) as sender, pytest.raises(DeliveryError) as err:
        send_with_retries(sender, message(), sleep=sleep)
    assert err.value.permanent and err.value.code == 554 and "content rejected" in err.value.reason
    assert slept == [] and server.sink.mail_commands == 1


def test_temporarily_refused_recipients_are_retried_alone(start_server: StartServer) -> None:
    sink = Sink(reject={"gone@example.org"}, busy_rcpt={"busy@example.org": 1})
    server = start_server(sink)
    slept, sleep = no_sleep()
    rcpts = ["a@example.org", "busy@example.org", "gone@example.org"]
    with SMTPSender(settings_for(server)) as sender:
        refused = send_with_retries(sender, message(to=rcpts), sleep=sleep)
    assert refused == {"gone@example.org": (550, b"5.1.1 no such user")}
    assert [m.rcpt_tos for m in sink.messages] == [["a@example.org"], ["busy@example.org"]]  # nobody twice
    assert slept == [1.0]


def test_mixed_refusal_of_everyone_retries_only_the_temporary(start_server: StartServer) -> None:
    server = start_server(Sink(reject={"gone@example.org"}, busy_rcpt={"busy@example.org": 1}))
    slept, sleep = no_sleep()
    with SMTPSender(settings_for(server)) as sender:
        refused = send_with_retries(sender, message(to=["busy@example.org", "gone@example.org"]), sleep=sleep)
    assert refused == {"gone@example.org": (550, b"5.1.1 no such user")}
    assert [m.rcpt_tos for m in server.sink.messages] == [["busy@example.org"]]
    assert slept == [1.0]


# --- dropped connections ----------------------------------------------------------------------------------


def test_drop_mid_message_then_reconnect(start_server: StartServer) -> None:
    server = start_server()
    with SMTPSender(settings_for(server)) as sender:
        sender.send(message(to=["first@example.org"]))
        server.sink.drop_in_data = 1
        with pytest.raises(DeliveryError) as err:
            sender.send(message(to=["second@example.org"]))
        assert not err.value.permanent and err.value.uncertain  # the whole message had been sent
        sender.send(message(to=["third@example.org"]))
        assert sender.connections == 2
    assert [m.rcpt_tos for m in server.sink.messages] == [["first@example.org"], ["third@example.org"]]


def test_drop_mid_message_is_retried(start_server: StartServer) -> None:
    server = start_server(Sink(drop_in_data=1))
    slept, sleep = no_sleep()
    with SMTPSender(settings_for(server)) as sender:
        assert send_with_retries(sender, message(), sleep=sleep) == {}
    assert len(server.sink.messages) == 1 and slept == [1.0]


def test_drop_mid_message_without_retrying_uncertain(start_server: StartServer) -> None:
    server = start_server(Sink(drop_in_data=1))
    slept, sleep = no_sleep()
    with SMTPSender(settings_for(server)) as sender, pytest.raises(DeliveryError) as err:
        send_with_retries(sender, message(), sleep=sleep, retry_uncertain=False)
    assert err.value.uncertain and slept == [] and server.sink.messages == []


def test_server_closing_an_idle_connection_is_transparent(start_server: StartServer) -> None:
    server = start_server(Sink(drop_after=2))
    with SMTPSender(settings_for(server)) as sender:
        for index in range(3):
            assert sender.send(message(to=[f"r{index}@example.org"])) == {}
        assert sender.connections == 3
    assert len(server.sink.messages) == 3


def test_421_on_a_reused_connection_reconnects(start_server: StartServer) -> None:
    sink = Sink()
    server = start_server(sink)
    with SMTPSender(settings_for(server)) as sender:
        sender.send(message())
        sink.closing_mail = 1
        sender.send(message())
        assert sender.connections == 2
    assert len(sink.messages) == 2


def test_421_on_a_fresh_connection_is_temporary(start_server: StartServer) -> None:
    server = start_server(Sink(closing_mail=5))
    with SMTPSender(settings_for(server)) as sender, pytest.raises(DeliveryError) as err:
        sender.send(message())
    assert not err.value.permanent and err.value.code == 421


def test_nobody_listening_is_temporary() -> None:
    settings = SMTPSettings(HOST, free_port(), None, None, "none", timeout=2.0, local_hostname="client.test")
    slept, sleep = no_sleep()
    with SMTPSender(settings) as sender, pytest.raises(DeliveryError) as err:
        send_with_retries(sender, message(), attempts=3, sleep=sleep)
    assert not err.value.permanent and slept == [1.0, 2.0]


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()  # the kernel completes the handshake; nobody ever says 220
        settings = SMTPSettings(HOST, listener.getsockname()[1], None, None, "none", timeout=0.3)
        with SMTPSender(settings) as sender, pytest.raises(DeliveryError) as err:
            sender.send(message())
    assert not err.value.permanent


def test_delivery_error_survives_pickling() -> None:
    error = DeliveryError("nope", permanent=True, code=550, recipients={"a@example.org": (550, b"no")})
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.permanent, copy.code, copy.recipients, copy.uncertain) == (
        "nope",
        True,
        550,
        {"a@example.org": (550, b"no")},
        False,
    )
    assert str(copy) == "permanent SMTP failure 550: nope"
