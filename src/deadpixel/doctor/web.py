"""Checks of the base URL: the server answers, serves the pixel, has a valid certificate, sees readers'
addresses."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl

from deadpixel.doctor.context import Context
from deadpixel.doctor.probe import ProbeError
from deadpixel.doctor.result import Finding, fail, ok, skip, warn
from deadpixel.security.tokens import MAC_BYTES, MESSAGE_ID_BYTES

# Well-formed (the right length and alphabet) but signed by key id 0, which deadpixel never uses: the server
# answers it with the GIF, as it does any forged token, and records nothing.
FORGED_TOKEN = "0" * ((1 + MESSAGE_ID_BYTES + MAC_BYTES) * 8 // 5)
# An address from a documentation range (RFC 5737) that no reader can have, sent as a made-up
# X-Forwarded-For to see whether the server believes it.
FORGED_ADDRESS = "198.51.100.77"
CERT_WARN_DAYS = 14
UNREACHABLE = "the base URL could not be asked (see base_url)"

FIX_UNREACHABLE = (
    "start the server (deadpixel serve) and check that DEADPIXEL_BASE_URL is the public URL readers load "
    "pixels from, that its name resolves, and that the proxy and firewall let it through"
)


def base_url(ctx: Context) -> Finding:
    """The server answers ``/healthz`` at the base URL."""
    try:
        answer = ctx.probe.get("/healthz")
    except ProbeError as exc:
        return fail(str(exc), FIX_UNREACHABLE)
    if answer.status != 200:
        return fail(
            f"{ctx.settings.base_url}/healthz answers {answer.status}, not 200: is deadpixel behind it?",
            "have the proxy pass every path of this name to deadpixel serve",
        )
    return ok(f"{ctx.settings.base_url} answers /healthz")


def pixel(ctx: Context) -> Finding:
    """A pixel URL answers with the GIF and cache headers intact (a forged token, so nothing is recorded)."""
    if ctx.probe.down is not None:
        return skip(UNREACHABLE)
    path = f"/o/{FORGED_TOKEN}.gif"
    try:
        answer = ctx.probe.get(path)
    except ProbeError as exc:
        return fail(str(exc), FIX_UNREACHABLE)
    kind = answer.headers.get("content-type", "")
    if answer.status != 200 or not kind.startswith("image/gif") or not answer.body.startswith(b"GIF8"):
        return fail(
            f"{ctx.settings.base_url}{path} answers {answer.status} {kind or 'without a type'}, not the GIF",
            "have the proxy pass /o/ to deadpixel serve unchanged",
        )
    if "no-store" not in answer.headers.get("cache-control", ""):
        return warn(
            "the pixel comes back without 'Cache-Control: no-store': something in front rewrites it, and a "
            "cached pixel is an open never recorded",
            "do not cache /o/ in the proxy, and let deadpixel's own headers through",
        )
    return ok("a pixel URL answers with the GIF and no-store (the token was forged: no open recorded)")


def _expiry_of(host: str, port: int, timeout: float) -> dt.datetime | None:
    """The certificate's end of validity, read without verifying it (to report it when it is not valid)."""
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return x509.load_der_x509_certificate(der).not_valid_after_utc if der else None


def _day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def tls(ctx: Context, now: dt.datetime | None = None) -> Finding:
    """An https base URL has a certificate the system trusts for its name, not close to expiry."""
    probe = ctx.probe
    now = now or dt.datetime.now(dt.UTC)
    if not probe.https:
        try:
            local = ipaddress.ip_address(probe.host).is_loopback
        except ValueError:
            local = probe.host == "localhost"
        if local:
            return skip("the base URL is http:// on this machine: no certificate to check")
        return warn(
            "the base URL is plain http://: pixel and link URLs cross the network readable, and some mail "
            "clients refuse insecure images",
            "put Caddy or nginx with a certificate in front and set DEADPIXEL_BASE_URL=https://...",
        )
    renew = (
        f"renew the certificate of {probe.host} (Caddy renews by itself; with certbot: certbot renew, then "
        "reload nginx)"
    )
    try:
        with (
            socket.create_connection((probe.host, probe.port), timeout=ctx.timeout) as raw,
            ssl.create_default_context().wrap_socket(raw, server_hostname=probe.host) as conn,
        ):
            cert = conn.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        expiry = _expiry_of(probe.host, probe.port, ctx.timeout)
        if expiry is not None and expiry < now:
            return fail(f"the certificate of {probe.host} expired on {_day(expiry)}", renew)
        until = f" (valid until {_day(expiry)})" if expiry is not None else ""
        return fail(
            f"the certificate of {probe.host} is not valid: {exc.verify_message}{until}",
            f"install a certificate for {probe.host} from a CA mail clients trust (Caddy gets one by "
            "itself; with nginx, certbot); a private CA's bundle can be named in SSL_CERT_FILE",
        )
    except (OSError, ValueError) as exc:
        return fail(f"cannot open TLS to {probe.host}:{probe.port}: {exc}", FIX_UNREACHABLE)
    not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str((cert or {})["notAfter"])), dt.UTC)
    days = (not_after - now).total_seconds() / 86400
    if days < 0:
        return fail(f"the certificate of {probe.host} expired on {_day(not_after)}", renew)
    if days < CERT_WARN_DAYS:
        return warn(
            f"the certificate of {probe.host} expires on {_day(not_after)}, in {days:.1f} days", renew
        )
    return ok(f"the certificate of {probe.host} is valid until {_day(not_after)} ({days:.0f} days)")


def _client_view(ctx: Context, headers: dict[str, str] | None = None) -> dict[str, object] | None:
    answer = ctx.probe.get("/healthz/client", headers)
    if answer.status != 200:
        return None
    try:
        view = json.loads(answer.body)
    except ValueError:
        return None
    return view if isinstance(view, dict) else None


def _ip(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        return None


def proxies(ctx: Context) -> Finding:
    """The server takes a reader's address from a proxy's headers exactly when they come from the proxy.

    The server's ``/healthz/client`` says what address it resolved for the request, whether the request
    carried forwarding headers, and whether it believed them (the peer is a trusted proxy).
    """
    settings = ctx.settings
    everyone = [str(net) for net in settings.trusted_proxies if net.prefixlen == 0]
    if everyone:
        return fail(
            f"DEADPIXEL_TRUSTED_PROXIES includes {everyone[0]}: anyone can choose the address an open is "
            "recorded from, with an X-Forwarded-For header",
            "list only the addresses your proxy connects from, e.g. DEADPIXEL_TRUSTED_PROXIES=127.0.0.1/32",
        )
    if ctx.probe.down is not None:
        return skip(UNREACHABLE)
    try:
        view = _client_view(ctx)
    except ProbeError as exc:
        return fail(str(exc), FIX_UNREACHABLE)
    if view is None:
        return skip("the server does not say what address it sees (/healthz/client); an older deadpixel?")
    client, forwarded, believed = view.get("client"), bool(view.get("forwarded")), bool(view.get("trusted"))
    client_ip = _ip(client)
    add_proxy = (
        f"add the proxy's address to DEADPIXEL_TRUSTED_PROXIES (here {client}/32 if that is the proxy) and "
        "restart deadpixel serve"
    )
    if forwarded and not believed:
        return fail(
            f"requests reach the server through a proxy, but it does not believe the proxy's "
            f"X-Forwarded-For and takes {client}, the proxy itself, as the reader: every open would seem to "
            "come from there",
            add_proxy,
        )
    host_ip = _ip(ctx.probe.host)
    local_base = ctx.probe.host == "localhost" or (host_ip is not None and host_ip.is_loopback)
    if not forwarded and client_ip is not None and client_ip.is_loopback and not local_base:
        return fail(
            f"the request went to {ctx.probe.host} but reached the server from {client} without "
            "X-Forwarded-For: the proxy in front does not pass on the reader's address",
            "have the proxy send X-Forwarded-For (nginx: proxy_set_header X-Forwarded-For "
            "$proxy_add_x_forwarded_for; Caddy does by default) and list it in DEADPIXEL_TRUSTED_PROXIES",
        )
    how = "through the proxy" if forwarded else "directly (no proxy in front)"
    if client_ip is not None and any(client_ip in net for net in settings.trusted_proxies):
        return ok(
            f"the server sees this machine as {client} {how} (a trusted proxy itself: forging untested)"
        )
    try:
        forged = _client_view(ctx, {"X-Forwarded-For": FORGED_ADDRESS})
    except ProbeError as exc:
        return fail(str(exc), FIX_UNREACHABLE)
    if forged is not None and forged.get("client") == FORGED_ADDRESS:
        return fail(
            f"the server believed an X-Forwarded-For header this machine made up ({FORGED_ADDRESS}): anyone "
            "can choose the address an open is recorded from",
            "list only your proxy's own addresses in DEADPIXEL_TRUSTED_PROXIES, and have the proxy append to "
            "X-Forwarded-For (nginx: $proxy_add_x_forwarded_for) or replace it, never pass a caller's on",
        )
    return ok(f"the server sees this machine as {client} {how}, and ignores a forged X-Forwarded-For")
