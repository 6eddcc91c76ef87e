"""Read notices: what a notice says, where it goes, and sending it by email or to a push/chat URL.

A notice row in the outbox (``deadpixel.store.notices``) names its channel (``email`` or ``url``) but not its
destination: that is read when it is sent, from the dashboard's values (``notify_settings``) or else the
``DEADPIXEL_NOTIFY_*`` settings, so a notice goes where the operator says now. A row whose channel is not
configured, or a click notice while ``DEADPIXEL_NOTIFY_CLICKS`` is off, is finished as ``skipped``.

Emails go through the configured SMTP server (``DEADPIXEL_SMTP_*``), as plain text. URLs get the body their
service expects: ntfy, Slack, Discord, Matrix, Telegram, or deadpixel's own JSON; the format is chosen by
``DEADPIXEL_NOTIFY_FORMAT``, a ``#format=NAME`` fragment on the URL (never sent), or the URL's host and
path. Unlike a webhook, a notify URL may be on a private or loopback address: only the operator sets it.
Requests keep a timeout, follow no redirect, ignore proxy variables and never read the answer's body.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx

from deadpixel.config import NOTIFY_FORMATS, Settings
from deadpixel.hooks.outcome import COULD_NOT_CONNECT, NOT_ACCEPTED, Outcome
from deadpixel.hooks.tls import client_context
from deadpixel.mail.smtp import SMTPSender, SMTPSettings

log = logging.getLogger(__name__)
USER_AGENT = "deadpixel-notify/1"
TEXT_MAX = 3500  # characters of a notice's text (Discord takes 2,000, Telegram 4,096)
NOT_SENT = "the mail server did not take the notice"


@dataclass(frozen=True, slots=True)
class NoticeConfig:
    """The settings a notice needs; the dashboard's values are laid over ``email``, ``url`` and ``format``."""

    email: str | None = None
    url: str | None = None
    format: str = "auto"
    clicks: bool = False
    smtp: SMTPSettings | None = None
    mail_from: str | None = None
    timezone: str = "UTC"
    base_url: str = ""
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> NoticeConfig:
        from deadpixel.config import ConfigError
        from deadpixel.send.smtp_config import smtp_settings

        try:
            smtp: SMTPSettings | None = smtp_settings(settings)
        except ConfigError:
            smtp = None  # no SMTP server: an email notice fails, and says why in the log
        return cls(
            email=settings.notify_email, url=settings.notify_url, format=settings.notify_format,
            clicks=settings.notify_clicks, smtp=smtp, mail_from=settings.mail_from,
            timezone=settings.timezone, base_url=settings.base_url, timeout=settings.webhook_timeout,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Destination:
    channel: str  # email or url
    address: str  # the email address or the URL
    format: str = "email"  # for a URL: one of NOTIFY_FORMATS but auto


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice, written out: a title, the text, and the facts as fields (the JSON format sends these)."""

    event: str  # read, click or digest
    event_id: str
    title: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


def detect_format(url: str) -> str:
    """The push/chat service a URL belongs to, from its host and path; ``json`` when none is recognised."""
    parts = urlsplit(url)
    host, path = (parts.hostname or "").lower(), parts.path
    if host == "hooks.slack.com":
        return "slack"
    if host.endswith(("discord.com", "discordapp.com")) and path.startswith("/api/webhooks/"):
        return "discord"
    if host == "api.telegram.org":
        return "telegram"
    if "/_matrix/client/" in path:
        return "matrix"
    if host == "ntfy.sh" or host.startswith("ntfy."):
        return "ntfy"
    return "json"


def url_format(url: str, setting: str) -> tuple[str, str]:
    """The URL to send to (without a ``#format=`` fragment) and its format: the setting if it names one,
    else the fragment, else what the URL looks like."""
    base, _, fragment = url.partition("#")
    named = fragment[len("format=") :].lower() if fragment.startswith("format=") else ""
    if setting != "auto":
        return base, setting
    if named in NOTIFY_FORMATS and named != "auto":
        return base, named
    return base, detect_format(base)


def destination(channel: str, config: NoticeConfig, stored: dict[str, str]) -> Destination | None:
    """Where a notice of ``channel`` goes now; None when that channel is not configured."""
    if channel == "email":
        address = stored.get("email") or config.email
        return Destination("email", address) if address else None
    url = stored.get("url") or config.url
    if not url:
        return None
    target, fmt = url_format(url, stored.get("format") or config.format)
    return Destination("url", target, fmt)


def _when(at: float, zone: str) -> str:
    return datetime.fromtimestamp(at, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _client(p: dict[str, Any]) -> str | None:
    parts = [str(v) for v in (p.get("client"), p.get("os"), p.get("device")) if v]
    return ", ".join(parts) or None


def _place(p: dict[str, Any]) -> str | None:
    place = ", ".join(str(v) for v in (p.get("city"), p.get("region"), p.get("country")) if v)
    extra = [str(v) for v in (p.get("network_owner"), p.get("ip")) if v]
    if extra:
        place = f"{place} ({', '.join(extra)})" if place else ", ".join(extra)
    return place or None


def compose(
    event: str,
    event_id: str,
    payload: dict[str, Any],
    contexts: dict[str, dict[str, Any]],
    config: NoticeConfig,
) -> Notice:
    """A notice's words from its payload and its messages as they are now (an erased message names nobody)."""
    if event == "digest":
        return _compose_digest(event_id, payload, contexts, config)
    mid = payload.get("message_id")
    context = contexts.get(str(mid), {})
    who = context.get("recipient") or "Someone"
    subject = context.get("subject") or "(no subject)"
    verb = "clicked a link in" if event == "click" else "read"
    title = f"{who} {verb} “{subject}”"
    lines = [title, f"When: {_when(float(payload['at']), config.timezone)}"]
    if client := _client(payload):
        lines.append(f"Client: {client}")
    if place := _place(payload):
        lines.append(f"From: {place}")
    if context.get("campaign"):
        lines.append(f"Campaign: {context['campaign']}")
    link = None
    if event == "click":
        link = context.get("links", {}).get(payload.get("link"))
        lines.append(f"Link: {link or 'number ' + str(payload.get('link'))}")
    if config.base_url and mid:
        lines.append(f"Details: {config.base_url}/messages/{mid}")
    fields = {
        "id": event_id, "type": event, "at": payload.get("at"), "message_id": mid,
        "recipient": context.get("recipient"), "subject": context.get("subject"),
        "campaign": context.get("campaign"), "verdict": payload.get("kind"),
        **{name: payload.get(name) for name in ("client", "device", "os", "country", "region", "city")},
        "network": payload.get("network_owner"), "ip": payload.get("ip"),
    }  # fmt: skip
    if event == "click":
        fields["link"] = {"number": payload.get("link"), "url": link}
    return Notice(event, event_id, title, "\n".join(lines)[:TEXT_MAX], fields)


def _compose_digest(
    event_id: str, payload: dict[str, Any], contexts: dict[str, dict[str, Any]], config: NoticeConfig
) -> Notice:
    reads = payload.get("reads", [])
    campaign = payload.get("campaign")
    since = _when(payload["since"], config.timezone)
    title = f"{len(reads)}{'+' if payload.get('more') else ''} read “{campaign}” since {since}"
    lines = [title]
    listed = []
    for read in reads:
        context = contexts.get(read["message_id"], {})
        who = context.get("recipient") or "someone"
        listed.append({"message_id": read["message_id"], "recipient": context.get("recipient"),
                       "subject": context.get("subject"), "at": read["at"]})  # fmt: skip
        lines.append(
            f"- {who}, “{context.get('subject') or '(no subject)'}”, {_when(read['at'], config.timezone)}"
        )
    if payload.get("more"):
        lines.append("- and more: see the campaign's report")
    fields = {"id": event_id, "type": "digest", "campaign": campaign, "since": payload.get("since"),
              "until": payload.get("until"), "reads": listed, "more": bool(payload.get("more"))}  # fmt: skip
    return Notice("digest", event_id, title, "\n".join(lines)[:TEXT_MAX], fields)


def _header_text(value: str) -> str:
    """A header value as ASCII (RFC 2047 when it is not), which HTTP headers need (ntfy decodes it)."""
    clean = " ".join(value.split())
    return clean if clean.isascii() else Header(clean, "utf-8").encode()


def request_for(
    notice: Notice, target: Destination, base_url: str = ""
) -> tuple[str, str, dict[str, str], bytes]:
    """Method, URL, headers and body for a notice in the target's format."""
    url, fmt = target.address, target.format
    as_json = {"content-type": "application/json"}

    def encoded(body: Any) -> bytes:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    if fmt == "ntfy":
        headers = {
            "content-type": "text/plain; charset=utf-8",
            "Title": _header_text(notice.title),
            "Tags": "eyes",
        }
        if base_url and notice.fields.get("message_id"):
            headers["Click"] = f"{base_url}/messages/{notice.fields['message_id']}"
        return "POST", url, headers, notice.text.encode("utf-8")
    if fmt == "slack":
        return "POST", url, as_json, encoded({"text": notice.text})
    if fmt == "discord":
        return (
            "POST",
            url,
            as_json,
            encoded({"content": notice.text[:2000], "allowed_mentions": {"parse": []}}),
        )
    if fmt == "telegram":
        chat = parse_qs(urlsplit(url).query).get("chat_id", [None])[0]
        body = {"text": notice.text, **({"chat_id": chat} if chat else {})}
        return "POST", url, as_json, encoded(body)
    if fmt == "matrix":  # PUT .../send/m.room.message/<txn id>: the homeserver drops a repeat of the same id
        parsed = httpx.URL(url)
        put_to = parsed.copy_with(path=parsed.path.rstrip("/") + "/" + notice.event_id)
        return "PUT", str(put_to), as_json, encoded({"msgtype": "m.text", "body": notice.text})
    return "POST", url, as_json, encoded({**notice.fields, "title": notice.title, "text": notice.text})


def email_for(notice: Notice, to: str, sender: str | None) -> EmailMessage:
    """Plain text: no pixel, no tracked link; marked automatic so no vacation reply answers it."""
    message = EmailMessage()
    message["From"] = sender or to
    message["To"] = to
    message["Subject"] = notice.title
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="deadpixel.invalid")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(notice.text + "\n")
    return message


class Notifier:
    """Sends composed notices; one HTTP client for the life of the deliverer."""

    def __init__(self, config: NoticeConfig) -> None:
        self.config = config
        self._client = httpx.Client(
            verify=client_context(),
            timeout=config.timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": USER_AGENT},
        )

    def close(self) -> None:
        self._client.close()

    def send(self, notice: Notice, target: Destination) -> Outcome:
        if target.channel == "email":
            return self._email(notice, target.address)
        method, url, headers, body = request_for(notice, target, self.config.base_url)
        try:
            with self._client.stream(method, url, content=body, headers=headers) as response:
                status = response.status_code
        except Exception as exc:  # any failure to get an answer is a failed attempt
            return Outcome(None, COULD_NOT_CONNECT, f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return Outcome(status, None)
        return Outcome(status, NOT_ACCEPTED, f"HTTP {status}")

    def _email(self, notice: Notice, to: str) -> Outcome:
        if self.config.smtp is None:
            return Outcome(
                None, NOT_SENT, "DEADPIXEL_SMTP_HOST is not set: email notices need an SMTP server"
            )
        message = email_for(notice, to, self.config.mail_from)
        try:
            with SMTPSender(self.config.smtp) as sender:
                sender.send(message)
        except Exception as exc:  # DeliveryError and anything else: tried again later
            return Outcome(None, NOT_SENT, f"{type(exc).__name__}: {exc}"[:300])
        return Outcome(250, None)
