"""Settings from ``DEADPIXEL_*`` environment variables and an optional TOML file.

Every setting is validated once, at start-up, so a typo stops the program with one line naming the
setting instead of surfacing later as a traceback on the hot path.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs

from deadpixel.errors import DeadpixelError
from deadpixel.extras import MissingExtra, require_postgres

ENV_PREFIX = "DEADPIXEL_"
# Settings that hold a credential: each may instead come from a file named by DEADPIXEL_<NAME>_FILE, the way
# container secrets arrive (/run/secrets/...), so the value never sits in the environment or a compose file.
SECRET_SETTINGS = (
    "database_url",
    "smtp_password",
    "bounce_imap_password",
    "notify_url",
)  # a push URL's path is its key
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


class ConfigError(DeadpixelError):
    """A setting has a value deadpixel cannot use; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{ENV_PREFIX}{setting.upper()}: {problem}")
        self.setting = setting

    def one_line(self) -> str:
        return f"bad setting: {self}"


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    base_url: str = ""
    trusted_proxies: tuple[Network, ...] = field(default_factory=tuple)
    proxy_header: str = "x-forwarded-for"  # the one header read from a trusted proxy (track.client_ip)
    batch_size: int = 2000
    open_cap: int = 60  # stored opens per message per minute and server process; 0: no cap
    commit_deadline_ms: int = 1000  # a batch that waits longer on a lock goes to the spool
    log_level: str = "info"
    log_format: str = "text"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no Prometheus listener
    ip_mode: str = "truncate"
    self_ips: tuple[Network, ...] = field(default_factory=tuple)
    geoip_database: Path | None = None
    retention_days: int = 0
    enrichment: bool = True
    api_rate: int = 600  # /api/v1 requests per minute per token and server process; 0: no limit
    timezone: str = "UTC"  # an IANA zone: the hours and weekdays of the dashboard's heatmap
    # Webhook delivery (deadpixel.hooks.deliver): first retry after webhook_backoff s, doubling each time.
    webhook_backoff: float = 30.0
    webhook_max_attempts: int = 10
    webhook_timeout: float = 10.0
    # CIDRs, addresses and host names webhooks may reach although they are loopback, private, link-local...
    # (deadpixel.hooks.guard); empty: only public addresses.
    webhook_allow: tuple[str, ...] = ()
    # Outgoing mail (``deadpixel send``, ``campaign send``); nothing else needs these.
    smtp_host: str | None = None
    smtp_port: int | None = None  # None: 465 for ssl, 587 otherwise
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_tls: str = "starttls"
    smtp_helo: str | None = None
    mail_from: str | None = None
    # The SMTP relay (``deadpixel relay``); it hands mail on to the smtp_* server above.
    relay_host: str = "127.0.0.1"
    relay_port: int = 2525
    relay_tls_cert: Path | None = None  # None: a self-signed certificate made on first start
    relay_tls_key: Path | None = None
    relay_max_size: int = 50 * 1024 * 1024  # bytes, announced with SIZE
    relay_max_recipients: int = 100  # per message; RFC 5321 asks servers to take at least 100
    # Bounces (``deadpixel bounces``): VERP envelope senders under bounce_domain, the listener for that
    # domain, a mailbox to read, and after how many soft bounces in a row an address counts as hard.
    bounce_domain: str | None = None
    bounce_host: str = "127.0.0.1"
    bounce_port: int = 2526
    bounce_max_size: int = 10 * 1024 * 1024
    soft_bounce_limit: int = 3
    bounce_imap_host: str | None = None
    bounce_imap_port: int | None = None  # None: 993 for ssl, 143 otherwise
    bounce_imap_tls: str = "ssl"
    bounce_imap_username: str | None = None
    bounce_imap_password: str | None = None
    bounce_imap_folder: str = "INBOX"
    bounce_imap_done_folder: str | None = None  # None: handled mail stays, marked with a keyword
    # Read notices (deadpixel.hooks.notify): by email through the smtp_* server, and/or to a push/chat URL;
    # the dashboard's settings page can set email, URL and format too, and its values win.
    notify_email: str | None = None
    notify_url: str | None = None
    notify_format: str = "auto"  # one of NOTIFY_FORMATS; auto: from the URL
    notify_clicks: bool = False  # a notice for every human click too, not only the first read

    @property
    def keys_file(self) -> Path:
        return self.data_dir / "signing-keys.json"

    def pixel_url(self, token: str) -> str:
        return f"{self.base_url}/o/{token}.gif"

    def click_url(self, token: str) -> str:
        return f"{self.base_url}/c/{token}"

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.base_url}/u/{token}"


def _as_int(name: str, low: int, high: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be a whole number (got {raw!r})") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high} (got {value})")
        return value

    return parse


def _as_float(name: str, low: float, high: float) -> Callable[[Any], float]:
    def parse(raw: Any) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be a number (got {raw!r})") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low:g} and {high:g} (got {value:g})")
        return value

    return parse


def _as_networks(name: str) -> Callable[[Any], tuple[Network, ...]]:
    def parse(raw: Any) -> tuple[Network, ...]:
        items = raw if isinstance(raw, list) else str(raw).replace(",", " ").split()
        networks = []
        for item in items:
            try:
                networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
            except ValueError:
                raise ConfigError(name, f"{item!r} is not an IP address or CIDR range") from None
        return tuple(networks)

    return parse


def _as_webhook_allow(raw: Any) -> tuple[str, ...]:
    """The webhook allow-list, each item checked now."""
    items = tuple(
        str(i).strip() for i in (raw if isinstance(raw, list) else str(raw).replace(",", " ").split())
    )
    if not items:
        return items
    from deadpixel.security.allowlist import parse_allow

    try:
        parse_allow(items)
    except ValueError as exc:
        raise ConfigError("webhook_allow", str(exc)) from None
    return items


def _as_choice(name: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)} (got {raw!r})")
        return value

    return parse


def _as_bool(name: str) -> Callable[[Any], bool]:
    def parse(raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        value = str(raw).strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false (got {raw!r})")

    return parse


def _as_existing_file(raw: Any) -> Path | None:
    if raw in (None, ""):
        return None
    path = Path(str(raw)).expanduser()
    if not path.is_file():
        raise ConfigError("geoip_database", f"file {path} does not exist")
    return path


def _as_base_url(raw: Any) -> str:
    url = str(raw).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("base_url", f"must be an http:// or https:// URL (got {raw!r})")
    if parts.query or parts.fragment:
        raise ConfigError("base_url", "must not have a query string or fragment")
    return url


def _as_database_url(raw: Any) -> str:
    url = str(raw).strip()
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError("database_url", f"must start with sqlite:// or postgresql:// (got {url!r})")
    if scheme != "sqlite":
        try:
            require_postgres()
        except MissingExtra as exc:
            raise ConfigError("database_url", str(exc)) from None
    return url


def _as_timezone(raw: Any) -> str:
    name = str(raw).strip()
    try:
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigError("timezone", f"must be an IANA time zone like Europe/Berlin (got {raw!r})") from None
    return name


def _as_optional_text(raw: Any) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip()
    return text or None


def _as_mail_from(raw: Any) -> str | None:
    """A sender like ``News <news@example.com>``: one address, with a domain, no header injection."""
    value = _as_optional_text(raw)
    if value is None:
        return None
    from email.utils import getaddresses

    found = getaddresses([value])
    address = found[0][1] if len(found) == 1 else ""
    local, _, domain = address.rpartition("@")
    if "\r" in value or "\n" in value or not local or "." not in domain or any(c.isspace() for c in address):
        raise ConfigError(
            "mail_from", f"must be one email address, e.g. 'News <news@example.com>' (got {raw!r})"
        )
    return value


NOTIFY_FORMATS = ("auto", "ntfy", "slack", "discord", "matrix", "telegram", "json")
NOTIFY_URL_MAX = 2048


def notify_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a notify URL, or None. Private and loopback hosts are fine: the operator chose
    it (a self-hosted ntfy), unlike a webhook anyone with the dashboard adds."""
    if len(url) > NOTIFY_URL_MAX:
        return f"is longer than {NOTIFY_URL_MAX} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"is not a URL (got {url!r})"
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        return f"must be an http:// or https:// URL (got {url!r})"
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        return "must not contain spaces or control characters"
    return None


def email_address_problem(value: str) -> str | None:
    """Why ``value`` is not one usable address (``Name <a@b.example>`` allowed), or None."""
    from email.utils import getaddresses

    found = getaddresses([value])
    address = found[0][1] if len(found) == 1 else ""
    local, _, domain = address.rpartition("@")
    if "\r" in value or "\n" in value or not local or "." not in domain or any(c.isspace() for c in address):
        return f"must be one email address, e.g. 'me@example.com' (got {value!r})"
    return None


def _notify_settings(value: Callable[[str, Any], Any]) -> dict[str, Any]:
    email = _as_optional_text(value("notify_email", None))
    if email is not None and (problem := email_address_problem(email)):
        raise ConfigError("notify_email", problem)
    url = _as_optional_text(value("notify_url", None))
    if url is not None and (problem := notify_url_problem(url)):
        raise ConfigError("notify_url", problem)
    return {
        "notify_email": email,
        "notify_url": url,
        "notify_format": _as_choice("notify_format", NOTIFY_FORMATS)(value("notify_format", "auto")),
        "notify_clicks": _as_bool("notify_clicks")(value("notify_clicks", False)),
    }


def _file_settings(env: Mapping[str, str], data_dir: Path) -> dict[str, Any]:
    """Read the TOML file named by DEADPIXEL_CONFIG, or ``deadpixel.toml`` in the data dir."""
    explicit = env.get(ENV_PREFIX + "CONFIG")
    path = Path(explicit) if explicit else data_dir / "deadpixel.toml"
    if not path.exists():
        if explicit:
            raise ConfigError("config", f"file {path} does not exist")
        return {}
    try:
        with path.open("rb") as fh:
            return {key.lower(): value for key, value in tomllib.load(fh).items()}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {exc}") from None


def _read_secret_files(env: Mapping[str, str]) -> Mapping[str, str]:
    """The environment with each DEADPIXEL_<NAME>_FILE of a secret setting replaced by the file's content."""
    found = {}
    for name in SECRET_SETTINGS:
        var = ENV_PREFIX + name.upper()
        path = env.get(var + "_FILE")
        if not path:
            continue
        if env.get(var):
            raise ConfigError(name, f"is set and so is {var}_FILE; set only one of them")
        try:
            found[var] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            problem = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(name + "_file", f"cannot read {path}: {problem}") from None
    return {**env, **found} if found else env


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings: explicit overrides beat environment variables, which beat the TOML file."""
    env = _read_secret_files(os.environ if env is None else env)
    data_dir = Path(
        overrides.get("data_dir")
        or env.get(ENV_PREFIX + "DATA_DIR")
        or platformdirs.user_data_dir("deadpixel", appauthor=False)
    ).expanduser()
    file_values = _file_settings(env, data_dir)

    def value(name: str, default: Any) -> Any:
        if overrides.get(name) is not None:
            return overrides[name]
        if ENV_PREFIX + name.upper() in env:
            return env[ENV_PREFIX + name.upper()]
        return file_values.get(name, default)

    host = str(value("host", "127.0.0.1"))
    port = _as_int("port", 1, 65535)(value("port", 8000))
    default_db = f"sqlite:///{data_dir / 'deadpixel.db'}"
    base_default = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    return Settings(
        data_dir=data_dir,
        database_url=_as_database_url(value("database_url", default_db)),
        host=host,
        port=port,
        workers=_as_int("workers", 1, 256)(value("workers", 1)),
        base_url=_as_base_url(value("base_url", base_default)),
        trusted_proxies=_as_networks("trusted_proxies")(value("trusted_proxies", "")),
        proxy_header=_as_choice("proxy_header", PROXY_HEADERS)(value("proxy_header", "x-forwarded-for")),
        batch_size=_as_int("batch_size", 1, 100_000)(value("batch_size", 2000)),
        open_cap=_as_int("open_cap", 0, 1_000_000)(value("open_cap", 60)),
        commit_deadline_ms=_as_int("commit_deadline_ms", 50, 600_000)(value("commit_deadline_ms", 1000)),
        log_level=_as_choice("log_level", ("debug", "info", "warning", "error"))(value("log_level", "info")),
        log_format=_as_choice("log_format", ("text", "json"))(value("log_format", "text")),
        metrics_host=str(value("metrics_host", "127.0.0.1")),
        metrics_port=_as_int("metrics_port", 0, 65535)(value("metrics_port", 0)),
        ip_mode=_as_choice("ip_mode", ("full", "truncate", "none"))(value("ip_mode", "truncate")),
        self_ips=_as_networks("self_ips")(value("self_ips", "")),
        geoip_database=_as_existing_file(value("geoip_database", None)),
        retention_days=_as_int("retention_days", 0, 100_000)(value("retention_days", 0)),
        enrichment=_as_bool("enrichment")(value("enrichment", True)),
        api_rate=_as_int("api_rate", 0, 10_000_000)(value("api_rate", 600)),
        timezone=_as_timezone(value("timezone", "UTC")),
        webhook_backoff=_as_float("webhook_backoff", 0.01, 86_400)(value("webhook_backoff", 30)),
        webhook_max_attempts=_as_int("webhook_max_attempts", 1, 100)(value("webhook_max_attempts", 10)),
        webhook_timeout=_as_float("webhook_timeout", 0.1, 300)(value("webhook_timeout", 10)),
        webhook_allow=_as_webhook_allow(value("webhook_allow", "")),
        **_smtp_settings(value),
        **_relay_settings(value),
        **_bounce_settings(value),
        **_notify_settings(value),
    )


def _smtp_settings(value: Callable[[str, Any], Any]) -> dict[str, Any]:
    port = value("smtp_port", None)
    username = _as_optional_text(value("smtp_username", None))
    password = _as_optional_text(value("smtp_password", None))
    if password is not None and username is None:
        raise ConfigError("smtp_password", "is set but DEADPIXEL_SMTP_USERNAME is not")
    return {
        "smtp_host": _as_optional_text(value("smtp_host", None)),
        "smtp_port": None if port in (None, "") else _as_int("smtp_port", 1, 65535)(port),
        "smtp_username": username,
        "smtp_password": password,
        "smtp_tls": _as_choice("smtp_tls", ("starttls", "ssl", "none"))(value("smtp_tls", "starttls")),
        "smtp_helo": _as_optional_text(value("smtp_helo", None)),
        "mail_from": _as_mail_from(value("mail_from", None)),
    }


def _as_path(name: str) -> Callable[[Any], Path | None]:
    def parse(raw: Any) -> Path | None:
        if raw in (None, ""):
            return None
        path = Path(str(raw)).expanduser()
        if not path.is_file():
            raise ConfigError(name, f"file {path} does not exist")
        return path

    return parse


def _relay_settings(value: Callable[[str, Any], Any]) -> dict[str, Any]:
    cert = _as_path("relay_tls_cert")(value("relay_tls_cert", None))
    key = _as_path("relay_tls_key")(value("relay_tls_key", None))
    if (cert is None) != (key is None):
        raise ConfigError("relay_tls_cert", "and DEADPIXEL_RELAY_TLS_KEY must be set together")
    return {
        "relay_host": str(value("relay_host", "127.0.0.1")),
        "relay_port": _as_int("relay_port", 1, 65535)(value("relay_port", 2525)),
        "relay_tls_cert": cert,
        "relay_tls_key": key,
        "relay_max_size": _as_int("relay_max_size", 1024, 2**31 - 1)(
            value("relay_max_size", 50 * 1024 * 1024)
        ),
        "relay_max_recipients": _as_int("relay_max_recipients", 1, 100_000)(
            value("relay_max_recipients", 100)
        ),
    }


def _as_domain(name: str) -> Callable[[Any], str | None]:
    def parse(raw: Any) -> str | None:
        value = _as_optional_text(raw)
        if value is None:
            return None
        domain = value.lower().rstrip(".")
        labels = domain.split(".")
        ok = len(domain) <= 253 and all(
            0 < len(label) <= 63
            and label.isascii()
            and label.replace("-", "").isalnum()
            and not label.startswith("-")
            and not label.endswith("-")
            for label in labels
        )
        if not ok:
            raise ConfigError(name, f"must be a domain name like bounces.example.com (got {raw!r})")
        return domain

    return parse


def _bounce_settings(value: Callable[[str, Any], Any]) -> dict[str, Any]:
    port = value("bounce_imap_port", None)
    username = _as_optional_text(value("bounce_imap_username", None))
    password = _as_optional_text(value("bounce_imap_password", None))
    if (username is None) != (password is None):
        raise ConfigError("bounce_imap_username", "and DEADPIXEL_BOUNCE_IMAP_PASSWORD must be set together")
    return {
        "bounce_domain": _as_domain("bounce_domain")(value("bounce_domain", None)),
        "bounce_host": str(value("bounce_host", "127.0.0.1")),
        "bounce_port": _as_int("bounce_port", 1, 65535)(value("bounce_port", 2526)),
        "bounce_max_size": _as_int("bounce_max_size", 1024, 2**31 - 1)(
            value("bounce_max_size", 10 * 1024 * 1024)
        ),
        "soft_bounce_limit": _as_int("soft_bounce_limit", 1, 1000)(value("soft_bounce_limit", 3)),
        "bounce_imap_host": _as_optional_text(value("bounce_imap_host", None)),
        "bounce_imap_port": None if port in (None, "") else _as_int("bounce_imap_port", 1, 65535)(port),
        "bounce_imap_tls": _as_choice("bounce_imap_tls", ("ssl", "starttls", "none"))(
            value("bounce_imap_tls", "ssl")
        ),
        "bounce_imap_username": username,
        "bounce_imap_password": password,
        "bounce_imap_folder": _as_optional_text(value("bounce_imap_folder", None)) or "INBOX",
        "bounce_imap_done_folder": _as_optional_text(value("bounce_imap_done_folder", None)),
    }


def ensure_data_dir(settings: Settings) -> None:
    """Create the data dir readable only by its owner, or make it so again: it holds secrets and, by
    default, the data (see deadpixel.security.private)."""
    from deadpixel.security.private import tighten_data_dir

    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tighten_data_dir(settings.data_dir)
