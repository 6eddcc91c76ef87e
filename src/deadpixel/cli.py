"""The ``deadpixel`` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import click
from sqlalchemy import Connection

from deadpixel import analytics, exports
from deadpixel.bounces.commands import bounces
from deadpixel.config import ConfigError, Settings, ensure_data_dir, load_settings
from deadpixel.doctor.command import doctor
from deadpixel.enrich.opens import OpenClassifier, enricher_from_settings, networks_dir
from deadpixel.hooks.commands import webhook
from deadpixel.hooks.registry import backlog_gauges
from deadpixel.keys import KeyFileError, load_or_create_keys, rotate_keys
from deadpixel.logs import configure as configure_logs
from deadpixel.metrics import node_totals, prometheus_text
from deadpixel.pixels import new_pixel
from deadpixel.send.commands import campaign, send, suppression
from deadpixel.store import maintenance, rollups
from deadpixel.store.api_tokens import ApiToken, TokenError, create_token, list_tokens, revoke_token
from deadpixel.store.clicks import purge_click_detail, reclassify_clicks
from deadpixel.store.db import create_engine
from deadpixel.store.migrate import current_revision, ensure_current, head_revision, upgrade
from deadpixel.tokens import TokenSigner
from deadpixel.users import UserError, create_user, delete_user, list_users

F = TypeVar("F", bound=Callable[..., Any])


class DeadpixelGroup(click.Group):
    """Turn the errors a user can fix into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.ClickException(f"bad setting: {exc}") from None
        except KeyFileError as exc:
            raise click.ClickException(str(exc)) from None
        except analytics.UnknownCampaign as exc:
            raise click.ClickException(f"no campaign named {exc.args[0]!r}") from None


@contextmanager
def store(settings: Settings) -> Iterator[Connection]:
    """A connection to a store that is migrated to the current schema (created on first use)."""
    ensure_data_dir(settings)
    engine = create_engine(settings.database_url)
    try:
        ensure_current(engine)
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def fold_rollups(settings: Settings) -> None:
    """Bring the charts' rollups up to date, through an engine that takes SQLite's write lock up front."""
    writer = create_engine(settings.database_url, writer=True)
    try:
        rollups.catch_up(writer)
    finally:
        writer.dispose()


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


@click.group(cls=DeadpixelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deadpixel")
def main() -> None:
    """Self-hosted email open tracking."""


@main.command()
@click.option("--host", help="Address to listen on (DEADPIXEL_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (DEADPIXEL_PORT, default 8000).")
@click.option("--workers", type=int, help="Worker processes (DEADPIXEL_WORKERS, default 1).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the pixel server (and everything else the web side offers)."""
    from deadpixel.server import serve as run_server

    settings = load_settings(host=host, port=port, workers=workers)
    click.echo(f"deadpixel: data in {settings.data_dir}", err=True)
    click.echo(
        f"deadpixel: listening on http://{settings.host}:{settings.port} "
        f"(pixels point at {settings.base_url}); {settings.workers} worker(s)",
        err=True,
    )
    click.echo(f"deadpixel: dashboard at {settings.base_url}/", err=True)
    if not _has_accounts(settings):
        click.echo("deadpixel: no account yet; create one with: deadpixel user create NAME", err=True)
    run_server(settings)


def _has_accounts(settings: Settings) -> bool:
    from deadpixel.users import list_users

    with store(settings) as conn:
        return bool(list_users(conn))


@main.command()
@click.option("--host", help="Address to listen on (DEADPIXEL_RELAY_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (DEADPIXEL_RELAY_PORT, default 2525).")
def relay(host: str | None, port: int | None) -> None:
    """Run the SMTP relay: point your mail client's outgoing server here."""
    from deadpixel.relay.server import run
    from deadpixel.send.smtp_config import smtp_settings

    settings = load_settings(relay_host=host, relay_port=port)
    configure_logs(settings.log_level, settings.log_format)
    upstream = smtp_settings(settings)
    click.echo(f"deadpixel: data in {settings.data_dir}", err=True)
    click.echo(
        f"deadpixel: relay listening on {settings.relay_host}:{settings.relay_port}, "
        f"passing mail to {upstream.host}:{upstream.port}",
        err=True,
    )
    run(settings, upstream, host=settings.relay_host, port=settings.relay_port)


main.add_command(send)
main.add_command(campaign)
main.add_command(suppression)
main.add_command(bounces)
main.add_command(webhook)
main.add_command(webhook, "webhooks")
main.add_command(doctor)


@main.command()
@click.option("--messages", type=click.IntRange(10, 100_000), default=2000, show_default=True)
def demo(messages: int) -> None:
    """Seed a realistic demo campaign (people, Apple prefetches, scanners, proxies, clicks) to look around."""
    from deadpixel import demo as demo_data
    from deadpixel.store.messages import campaign_id

    settings = load_settings()
    with store(settings) as conn:
        if campaign_id(conn, demo_data.CAMPAIGN, create=False) is not None:
            raise click.ClickException(f"the campaign {demo_data.CAMPAIGN!r} is already there")
        made = demo_data.seed(conn, OpenClassifier.from_settings(settings), messages)
    click.echo(
        f"Seeded {made.campaign!r}: {made.messages} messages, {made.opens} opens, {made.clicks} clicks."
        f" See it at {settings.base_url}/campaigns or with: deadpixel report {made.campaign!r}"
    )


@main.group()
def pixel() -> None:
    """Tracking pixels to paste into mail you send yourself."""


def _valid_address(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in value):
        raise click.BadParameter(f"{value!r} is not an email address")
    return value


@pixel.command("new")
@click.option("--to", "recipient", required=True, callback=_valid_address, help="Recipient's address.")
@click.option("--subject", help="Subject, to recognise the message in reports.")
@click.option("--campaign", help="Campaign to group the message under (created if new).")
@json_option
def pixel_new(recipient: str, subject: str | None, campaign: str | None, as_json: bool) -> None:
    """Create a tracked message and print its pixel."""
    settings = load_settings()
    with store(settings) as conn:  # creates the data dir the signing keys live in
        signer = TokenSigner(load_or_create_keys(settings.keys_file))
        result = new_pixel(conn, settings, signer, recipient=recipient, subject=subject, campaign=campaign)
    if as_json:
        print_json(result)
        return
    click.echo(f"Tracked message {result['message_id']} to {recipient}")
    click.echo(f"Pixel URL: {result['url']}")
    click.echo("Paste this HTML at the end of your message (it is invisible):")
    click.echo(result["html"])


@main.command()
@click.option("--campaign", help="Only opens of this campaign.")
@click.option("--message", "message_id", help="Only opens of this message id.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@json_option
def opens(campaign: str | None, message_id: str | None, limit: int, as_json: bool) -> None:
    """List recorded opens, newest first."""
    with store(load_settings()) as conn:
        rows = analytics.list_opens(conn, campaign=campaign, message_id=message_id, limit=limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No opens recorded yet.")
        return
    for row in rows:
        who = row["recipient"] or row["message_id"]
        click.echo(
            f"{row['at']}  {who:<32}  {row['method']:<4}  {row['ip'] or '-':<15}  {row['user_agent'] or '-'}"
        )


@main.command()
@click.argument("campaign", required=False)
@json_option
def report(campaign: str | None, as_json: bool) -> None:
    """Headline numbers for a campaign (or for all messages); with --json, every chart's data too."""
    settings = load_settings()
    with store(settings) as conn:
        fold_rollups(settings)
        if as_json:
            print_json(analytics.campaign_stats(conn, campaign, ZoneInfo(settings.timezone)))
            return
        figures = analytics.report(conn, campaign)
        waits = analytics.time_to_first_open(conn, campaign)
    click.echo(f"Campaign: {campaign or '(all messages)'}")
    click.echo(f"  sent             {figures['sent']}")
    if figures["untracked"]:
        click.echo(f"  untracked        {figures['untracked']}  (relayed without a pixel; not in sent)")
    over = "sent"
    if figures["bounced"] or figures["soft_bounced"] or figures["complaints"]:
        over = "delivered"
        click.echo(f"  bounced          {figures['bounced']}  ({figures['bounce_rate']:.1%} of sent)")
        click.echo(f"  soft bounced     {figures['soft_bounced']}  (temporary failures; still delivered)")
        click.echo(f"  delivered        {figures['delivered']}")
        click.echo(f"  complaints       {figures['complaints']}")
    click.echo(f"  unique opens     {figures['unique_opens']}  ({figures['open_rate']:.1%} of {over})")
    click.echo(f"    human          {figures['human_opens']}  ({figures['human_open_rate']:.1%} of {over})")
    click.echo(f"    machine only   {figures['machine_opens']}  (Apple prefetch, security scanners)")
    click.echo(f"  total opens      {figures['total_opens']}  ({figures['opens_per_opener']:.1f} per opener)")
    if waits["median_seconds"] is not None:
        median_hours = waits["median_seconds"] / 3600
        click.echo(f"  time to open     median {median_hours:.1f} h to the first human open, over"
                   f" {waits['messages']} messages with a send time")  # fmt: skip
    click.echo(f"  unique clicks    {figures['unique_clicks']}  ({figures['click_rate']:.1%} of {over}, "
               f"{figures['click_to_open_rate']:.1%} of opened)")  # fmt: skip
    click.echo(f"  total clicks     {figures['total_clicks']}  (scanners and HEAD requests included)")


@main.command("export")
@click.argument("kind", type=click.Choice(exports.KINDS))
@click.option("--campaign", help="Only this campaign.")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout)."
)
def export_command(kind: str, campaign: str | None, output: Path | None) -> None:
    """Export opens, clicks or per-recipient status as CSV, oldest first, streamed (see docs/exports.md)."""
    settings = load_settings()
    with store(settings) as conn:
        exports.query(conn, kind, campaign)  # an unknown campaign stops here, before any file is written
    engine = create_engine(settings.database_url)
    try:
        with click.open_file(str(output) if output else "-", "wb") as out:
            for chunk in exports.stream(engine, kind, campaign):
                out.write(chunk)
    finally:
        engine.dispose()


@main.command()
@click.option("--campaign", help="Only clicks of this campaign.")
@click.option("--message", "message_id", help="Only clicks of this message id.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@json_option
def clicks(campaign: str | None, message_id: str | None, limit: int, as_json: bool) -> None:
    """List recorded clicks on tracked links, newest first, with their verdict."""
    with store(load_settings()) as conn:
        rows = analytics.list_clicks(conn, campaign=campaign, message_id=message_id, limit=limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No clicks recorded yet.")
        return
    for row in rows:
        who = row["recipient"] or row["message_id"]
        click.echo(
            f"{row['at']}  {who:<32}  {row['kind'] or '-':<8}  {row['method']:<4}  {row['url'] or '-'}"
        )


@main.command()
@click.option("--user-agent", "user_agent", required=True, help="The User-Agent header of the request.")
@click.option("--ip", help="The client address.")
@click.option("--method", type=click.Choice(["GET", "HEAD"], case_sensitive=False), default="GET")
@click.option("--seconds-after-send", type=float, help="Seconds between sending and this request, if known.")
@json_option
def classify(
    user_agent: str, ip: str | None, method: str, seconds_after_send: float | None, as_json: bool
) -> None:
    """Explain how one request would be counted: client, device, OS, place and verdict with its reason."""
    settings = load_settings()
    enricher = enricher_from_settings(replace(settings, enrichment=True))
    assert enricher is not None
    found = enricher.enrich(
        ip=ip, user_agent=user_agent, method=method.upper(), seconds_after_send=seconds_after_send
    )
    result = found._asdict()
    if as_json:
        print_json(result)
        return
    click.echo(f"{found.kind}: {found.reason}")
    click.echo(f"  client {found.client}, device {found.device}, OS {found.os}")
    if found.country or found.network_owner:
        click.echo(f"  from {found.country or '?'} ({found.network_owner or 'unknown network'})")


@main.command()
def reclassify() -> None:
    """Rerun enrichment and verdicts over every stored open with the current rules, and rebuild counts."""
    settings = load_settings()
    with store(settings) as conn:
        classifier = OpenClassifier(enricher_from_settings(settings), settings.ip_mode)
        n = maintenance.reclassify(conn, classifier)
        n_clicks = reclassify_clicks(conn, classifier)
    fold_rollups(settings)  # reclassify emptied them: rebuild now, not on the next page view
    click.echo(f"Reclassified {n} opens and {n_clicks} clicks.")


@main.command()
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget(address: str, yes: bool) -> None:
    """Erase every message to ADDRESS and every open of those messages."""
    if not yes:
        click.confirm(f"Erase all messages to {address} and their opens? This cannot be undone", abort=True)
    with store(load_settings()) as conn:
        erased_messages, erased_opens = maintenance.forget_recipient(conn, address)
    click.echo(f"Erased {erased_messages} message(s) and {erased_opens} open(s) of {address}.")


@main.command()
def purge() -> None:
    """Apply DEADPIXEL_RETENTION_DAYS now: drop raw detail (address, user agent, city) of older opens."""
    settings = load_settings()
    if settings.retention_days <= 0:
        click.echo("DEADPIXEL_RETENTION_DAYS is not set: raw detail is kept.")
        return
    with store(settings) as conn:
        n = maintenance.purge_raw_detail(conn, settings.retention_days)
        n_clicks = purge_click_detail(conn, settings.retention_days)
    click.echo(
        f"Dropped raw detail of {n} open(s) older than {settings.retention_days} days"
        f" and of {n_clicks} click(s)."
    )


@main.group()
def networks() -> None:
    """The lists of proxy and scanner networks that verdicts use."""


@networks.command("update")
def networks_update() -> None:
    """Fetch the official lists (Microsoft EOP, Apple's relay egress, Google's fetchers); needs internet.

    Fresher copies go to the data dir and replace the shipped ones; run `deadpixel reclassify` afterwards to
    apply them to opens already recorded.
    """
    from deadpixel.enrich.update import update_networks

    settings = load_settings()
    ensure_data_dir(settings)
    counts, failures = update_networks(networks_dir(settings))
    for name, count in counts.items():
        click.echo(f"{name}: {count} ranges")
    for name, reason in failures.items():
        click.echo(f"{name}: not updated ({reason})", err=True)
    if failures:
        failed, total = len(failures), len(counts) + len(failures)
        raise click.ClickException(f"{failed} of {total} lists not updated; their previous files stay in use")


@main.command()
@json_option
@click.option("--prometheus", is_flag=True, help="Print the Prometheus text format instead.")
def metrics(as_json: bool, prometheus: bool) -> None:
    """Counters of the running server's processes, summed (pixel requests, invalid tokens, opens, batches)."""
    settings = load_settings()
    engine = create_engine(settings.database_url)
    try:
        totals, processes = node_totals(settings.data_dir, backlog_gauges(engine))
    finally:
        engine.dispose()
    if prometheus:
        click.echo(prometheus_text(totals, processes), nl=False)
        return
    if as_json:
        print_json({"processes": processes, **totals})
        return
    if not processes:
        click.echo(f"No running server publishes metrics in {settings.data_dir}.")
        return
    click.echo(f"{processes} server process(es)")
    for name, value in totals.items():
        click.echo(f"  {name:<24} {value:g}")


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the store to the current schema (every command also does this on first use)."""
    settings = load_settings()
    ensure_data_dir(settings)
    engine = create_engine(settings.database_url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"Schema already current (revision {after}).")
    else:
        click.echo(f"Schema migrated from {before or 'empty'} to {after}.")


@db.command("current")
def db_current() -> None:
    """Show the schema revision of the store and the newest one this version knows."""
    settings = load_settings()
    engine = create_engine(settings.database_url)
    try:
        click.echo(f"store: {current_revision(engine) or 'empty'}; newest: {head_revision()}")
    finally:
        engine.dispose()


@main.command("backup")
@click.argument("into", type=click.Path(file_okay=False, path_type=Path))
def backup_command(into: Path) -> None:
    """Copy the store and the signing keys into a new directory under INTO, while the server runs."""
    from deadpixel.store.backup import BackupError, backup

    settings = load_settings()
    try:
        made = backup(settings, into)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Backup written to {made.directory}")
    if made.database is None:
        click.echo(
            "The store is PostgreSQL: the backup holds the signing keys; back the database up with pg_dump"
            " (see docs/deploy.md)."
        )


@main.group()
def user() -> None:
    """Accounts that may log in to the SMTP relay."""


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    if not password:
        raise click.ClickException("the password is empty")
    return password


@user.command("create")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def user_create(name: str, password_stdin: bool) -> None:
    """Create an account; the password is asked for twice (or read from stdin)."""
    settings = load_settings()
    password = _new_password(password_stdin)
    try:
        with store(settings) as conn:
            create_user(conn, name, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"User {name} created.")


@user.command("list")
@json_option
def user_list(as_json: bool) -> None:
    """The accounts, by name."""
    with store(load_settings()) as conn:
        found = list_users(conn)
    if as_json:
        print_json([{"name": u.name, "created_at": analytics.iso(u.created_at)} for u in found])
        return
    for u in found:
        click.echo(f"{u.name}\t{analytics.iso(u.created_at)}")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def user_passwd(name: str, password_stdin: bool) -> None:
    """Change an account's password; its dashboard sessions end everywhere."""
    from deadpixel.users import set_password

    password = _new_password(password_stdin)
    try:
        with store(load_settings()) as conn:
            set_password(conn, name, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Password of {name} changed; its sessions have ended.")


@user.command("delete")
@click.argument("name")
def user_delete(name: str) -> None:
    """Delete an account; it can no longer log in."""
    try:
        with store(load_settings()) as conn:
            delete_user(conn, name)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"User {name} deleted.")


@main.group()
def token() -> None:
    """Bearer tokens for the JSON API (/api/v1)."""


def _token_json(t: ApiToken) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "created_at": analytics.iso(t.created_at),
        "last_used_at": analytics.iso(t.last_used_at),
        "revoked_at": analytics.iso(t.revoked_at),
    }


@token.command("create")
@click.argument("name")
def token_create(name: str) -> None:
    """Create a token and print its secret: shown this once, only a hash of it is stored."""
    try:
        with store(load_settings()) as conn:
            _, secret_value = create_token(conn, name)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Token {name} created. Its secret (shown only now):", err=True)
    click.echo(secret_value)


@token.command("list")
@json_option
def token_list(as_json: bool) -> None:
    """The tokens: id, name, created, last used, revoked."""
    with store(load_settings()) as conn:
        found = [_token_json(t) for t in list_tokens(conn)]
    if as_json:
        print_json(found)
        return
    for t in found:
        state = f"revoked {t['revoked_at']}" if t["revoked_at"] else "active"
        click.echo(
            f"{t['id']}\t{t['name']}\t{t['created_at']}\tlast used {t['last_used_at'] or 'never'}\t{state}"
        )


@token.command("revoke")
@click.argument("name_or_id")
def token_revoke(name_or_id: str) -> None:
    """Revoke a token by name or id: requests with it get 401 from then on."""
    try:
        with store(load_settings()) as conn:
            revoked = revoke_token(conn, name_or_id)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Token {revoked.name} (id {revoked.id}) revoked.")


@main.group()
def secret() -> None:
    """The keys that sign pixel and link tokens."""


@secret.command("rotate")
def secret_rotate() -> None:
    """Make a new signing key current; pixels signed with older keys keep working."""
    settings = load_settings()
    ensure_data_dir(settings)
    keys = rotate_keys(settings.keys_file)
    click.echo(
        f"Signing key {keys.current_id} is now current ({len(keys.keys)} keys kept in {settings.keys_file})."
    )
    if settings.database_url.startswith(("postgres", "postgresql")):
        click.echo("Copy that file to every other deadpixel server that shares this database.")
