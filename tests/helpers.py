"""Shared test helpers: run the command line in process, make real pixels, drive real load."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from deadpixel.cli import main
from deadpixel.config import Settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.schema import opens


@dataclass(frozen=True)
class Ran:
    """What one ``deadpixel`` command did: the fields of ``subprocess.CompletedProcess`` that tests read."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def deadpixel(
    *args: str, input: str | None = None, env: Mapping[str, str | None] | None = None, check: bool = False
) -> Ran:
    """Run ``deadpixel ARGS`` in this process with click's CliRunner: the user's command line, without the
    second or so that starting Python and importing the stack costs a new process.

    ``env`` is laid over this process's environment for the call only (None unsets a variable). Settings are
    read afresh on each call (``Cli`` holds them per invocation), so nothing carries over between calls. An
    exception the CLI lets escape is written to ``stderr`` as Python would print it, with exit status 1,
    so a test can still say "no traceback". Keep a real process where the process is the point: signals,
    kill -9, start-up, import-time guards, servers.
    """
    logger = logging.getLogger("deadpixel")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    runner = CliRunner(env=dict(env) if env else None)
    try:
        result = runner.invoke(main, list(args), input=input, prog_name="deadpixel")
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    ran = Ran(tuple(args), result.exit_code, result.stdout, stderr, result.stdout_bytes)
    if check and ran.returncode != 0:
        raise AssertionError(f"deadpixel {' '.join(args)} exited {ran.returncode}:\n{ran.stdout}{stderr}")
    return ran


def make_pixels(
    settings: Settings, n: int, campaign: str | None = None, sent_at: float | None = None
) -> list[tuple[str, str]]:
    """Create ``n`` messages (sent at ``sent_at``, or hand-made with no send time); return (message_id,
    pixel path) pairs."""
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        ids = [
            create_message(conn, recipient=f"r{i}@example.com", campaign=campaign, sent_at=sent_at)
            for i in range(n)
        ]
    engine.dispose()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    return [(mid, f"/o/{signer.pixel_token(mid)}.gif") for mid in ids]


def count_opens(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(opens)).scalar_one()
    engine.dispose()
    return int(n)


def stored_user_agents(settings: Settings) -> list[str]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        agents = list(conn.execute(select(opens.c.user_agent)).scalars())
    engine.dispose()
    return agents


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, agent: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: {agent}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _fetch(
    base_urls: list[str], paths: list[str], concurrency: int, agent_prefix: str
) -> list[tuple[str, int]]:
    """GET every path once with a unique user agent over keep-alive connections; -1 marks an error."""
    results: list[tuple[str, int]] = []
    pending = list(enumerate(paths))
    pending.reverse()

    async def connection(w: int) -> None:
        host, port = base_urls[w % len(base_urls)].rsplit("/", 1)[1].split(":")
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while pending:
            i, path = pending.pop()
            agent = f"{agent_prefix}-{i}"
            try:
                if streams is None:
                    streams = await asyncio.open_connection(host, int(port))
                status = await asyncio.wait_for(_get(*streams, path, agent), 10)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                results.append((agent, -1))
                if streams is not None:
                    streams[1].close()
                streams = None
                continue
            results.append((agent, status))
        if streams is not None:
            streams[1].close()

    await asyncio.gather(*(connection(w) for w in range(concurrency)))
    return results


def fetch_all(
    base_urls: list[str] | str, paths: list[str], concurrency: int = 32, agent_prefix: str = "load"
) -> list[tuple[str, int]]:
    urls = [base_urls] if isinstance(base_urls, str) else base_urls
    return asyncio.run(_fetch(urls, paths, concurrency, agent_prefix))


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    not_after: dt.datetime


def make_certificate(folder: Path, days_left: float = 1.0, host: str = "127.0.0.1") -> Certificate:
    """A self-signed certificate (its own CA) for the address ``host`` that ends ``days_left`` days from now,
    written as ``cert.pem`` and ``key.pem`` in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deadpixel test")])
    now = dt.datetime.now(dt.UTC)
    not_after = (now + dt.timedelta(days=days_left)).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=60))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(folder / "cert.pem", folder / "key.pem", not_after)
