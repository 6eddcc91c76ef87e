"""From deadpixel's settings to what ``deadpixel.mail.smtp`` needs, with errors that name the setting."""

from __future__ import annotations

from typing import Literal

from deadpixel.config import ConfigError, Settings
from deadpixel.mail.smtp import SMTPSettings

DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


def smtp_settings(settings: Settings) -> SMTPSettings:
    if not settings.smtp_host:
        raise ConfigError("smtp_host", "is not set: deadpixel needs your SMTP server to send mail")
    tls: Literal["starttls", "ssl", "none"]
    if settings.smtp_tls == "ssl":
        tls = "ssl"
    elif settings.smtp_tls == "none":
        tls = "none"
    else:
        tls = "starttls"
    return SMTPSettings(
        host=settings.smtp_host,
        port=settings.smtp_port or DEFAULT_PORTS[tls],
        username=settings.smtp_username,
        password=settings.smtp_password,
        tls=tls,
        local_hostname=settings.smtp_helo,
    )


def sender_address(settings: Settings, given: str | None) -> str:
    """``--from`` if given, else DEADPIXEL_MAIL_FROM."""
    if given:
        return given
    if settings.mail_from:
        return settings.mail_from
    raise ConfigError("mail_from", "is not set and no --from was given: who is the mail from?")
