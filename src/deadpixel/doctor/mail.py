"""Checks of the mail side: the SMTP login deadpixel sends with, and the bounce domain's MX."""

from __future__ import annotations

from dataclasses import replace

from deadpixel.doctor.context import Context
from deadpixel.doctor.result import Finding, fail, ok, one_line, skip


def smtp(ctx: Context) -> Finding:
    """Connect, EHLO, STARTTLS or TLS as configured, AUTH when a username is set, QUIT: never a message."""
    from deadpixel.mail.smtp import DeliveryError, SMTPSender
    from deadpixel.send.smtp_config import smtp_settings

    if not ctx.settings.smtp_host:
        return skip("DEADPIXEL_SMTP_HOST is not set: this deadpixel does not send mail")
    settings = replace(smtp_settings(ctx.settings), timeout=ctx.timeout)
    where = f"{settings.host}:{settings.port} ({settings.tls})"
    try:
        with SMTPSender(settings) as sender:
            sender.connect()
    except DeliveryError as error:
        reason = error.reason
        if "AUTH" in reason and "not supported" in reason:
            fix = (
                "the server offers no AUTH on this connection: use DEADPIXEL_SMTP_TLS=starttls or ssl, or "
                "unset DEADPIXEL_SMTP_USERNAME for a relay that needs no login"
            )
        elif error.code in (530, 534, 535, 538) or "auth" in reason.lower():
            fix = "check DEADPIXEL_SMTP_USERNAME and DEADPIXEL_SMTP_PASSWORD (some want an app password)"
        elif "certificate" in reason:
            fix = (
                "the server's certificate must be valid for DEADPIXEL_SMTP_HOST and trusted here (a private "
                "CA's bundle can be named in SSL_CERT_FILE)"
            )
        elif "STARTTLS" in reason:
            fix = "set DEADPIXEL_SMTP_TLS=ssl (and DEADPIXEL_SMTP_PORT=465) if the server speaks TLS at once"
        else:
            fix = "check DEADPIXEL_SMTP_HOST, DEADPIXEL_SMTP_PORT and DEADPIXEL_SMTP_TLS, and the firewall"
        code = f"{error.code} " if error.code is not None and str(error.code) not in reason else ""
        return fail(f"SMTP at {where}: {code}{reason}", fix)
    except (OSError, ValueError) as exc:
        return fail(f"SMTP at {where}: {one_line(exc)}", "check DEADPIXEL_SMTP_HOST and DEADPIXEL_SMTP_PORT")
    if settings.username is None:
        return ok(f"SMTP at {where} answers; no login tried (DEADPIXEL_SMTP_USERNAME is not set)")
    return ok(f"logged in to SMTP at {where} as {settings.username} (nothing sent)")


def bounce_mx(ctx: Context) -> Finding:
    """The bounce domain has an MX, so bounces to the VERP senders can come back."""
    domain = ctx.settings.bounce_domain
    if not domain:
        return skip("DEADPIXEL_BOUNCE_DOMAIN is not set: bounces are not collected")
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=ctx.nameservers is None)
    if ctx.nameservers is not None:
        resolver.nameservers = [host for host, _ in ctx.nameservers]
        resolver.port = ctx.nameservers[0][1]
    resolver.lifetime = ctx.timeout
    add_mx = (
        f"add a record like '{domain}. 3600 IN MX 10 <the host running deadpixel bounces listen>.' (or your "
        "mail host, for a bounce mailbox); see docs/bounces.md"
    )
    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        return fail(f"the bounce domain {domain} does not exist in DNS", add_mx)
    except dns.resolver.NoAnswer:
        return fail(f"the bounce domain {domain} has no MX record: bounces cannot come back", add_mx)
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration) as exc:
        return skip(f"DNS does not answer here, so the MX of {domain} is unchecked ({one_line(exc)})")
    records = sorted((rr.preference, rr.exchange.to_text()) for rr in answer)
    if all(exchange == "." for _, exchange in records):
        return fail(f"{domain} has a null MX ('.'): it refuses all mail, bounces included", add_mx)
    listed = ", ".join(f"{preference} {exchange}" for preference, exchange in records)
    return ok(f"the MX of {domain}: {listed}")
