"""``deadpixel segment``: who opened, who did not, who only a machine fetched; and saved segments.

``deadpixel segment CAMPAIGN --who WHO`` and ``deadpixel segment --audience WHO ...`` list a segment (they
are the ``members`` subcommand, which a first argument that names no subcommand goes to); ``save``,
``list``, ``show`` and ``delete`` keep definitions under a name. The definitions live in
deadpixel.reports.segments; this module only presents them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json

if TYPE_CHECKING:
    from deadpixel.reports.segments import Segment

CAMPAIGN_WHO = ("openers", "non-openers", "machine-only", "clickers")
AUDIENCE_WHO = ("inactive", "never-opened")
SUBCOMMANDS = ("members", "save", "list", "show", "delete")


class _SegmentGroup(click.Group):
    """A group whose first argument, when it names no subcommand, is a campaign for ``members``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["members", *args]
        return super().parse_args(ctx, args)


@click.group("segment", cls=_SegmentGroup)
def segment() -> None:
    """Who opened, who did not, who only a machine fetched: recipients by what they did (docs/segments.md).

    \b
    deadpixel segment CAMPAIGN --who openers|non-openers|machine-only|clickers [--json] [--explain]
    deadpixel segment --audience inactive --days 90
    deadpixel segment --audience never-opened | --client NAME | --device NAME | --country CODE
    deadpixel segment save NAME CAMPAIGN:WHO     (or @inactive:90, @country:DE, ...)
    deadpixel segment list | show NAME | delete NAME
    """


def _chosen(
    campaign: str | None,
    who: str | None,
    audience: str | None,
    days: int | None,
    client: str | None,
    device: str | None,
    country: str | None,
    saved: str | None,
) -> str:
    """The options as one definition (``spring:openers``, ``@inactive:90``) or a saved name."""
    by_open = {"client": client, "device": device, "country": country}
    given = [name for name, value in by_open.items() if value is not None]
    ways = sum(x is not None for x in (campaign, audience, saved)) + len(given)
    if ways != 1:
        raise click.UsageError(
            "name one segment: CAMPAIGN --who WHO, --audience WHO, --client, --device, --country or --saved"
        )
    if saved is not None:
        return saved
    if campaign is not None:
        if who is None:
            raise click.UsageError(f"--who is needed with a campaign: one of {', '.join(CAMPAIGN_WHO)}")
        return f"{campaign}:{who}"
    if who is not None:
        raise click.UsageError("--who goes with a campaign; over the whole audience, use --audience")
    if given:
        return f"@{given[0]}:{by_open[given[0]]}"
    if audience == "inactive":
        if days is None:
            raise click.UsageError("--audience inactive needs --days N")
        return f"@inactive:{days}"
    if days is not None:
        raise click.UsageError("--days goes with --audience inactive")
    return f"@{audience}"


@segment.command("members")
@click.argument("campaign", required=False)
@click.option("--who", type=click.Choice(CAMPAIGN_WHO), help="Which of the campaign's recipients.")
@click.option("--audience", type=click.Choice(AUDIENCE_WHO), help="Over every address ever sent to.")
@click.option(
    "--days", type=click.IntRange(1, 36_500), help="With --audience inactive: no human open for N days."
)
@click.option("--client", help="Addresses with a human open from this mail client (e.g. Thunderbird).")
@click.option("--device", help="Addresses with a human open on this device (desktop, mobile, tablet).")
@click.option("--country", help="Addresses with a human open from this country (ISO code, e.g. DE).")
@click.option("--saved", help="A saved segment (deadpixel segment list), evaluated now.")
@click.option("--explain", is_flag=True, help="Print the segment's definition before its addresses.")
@json_option
@pass_cli
def members(
    cli: Cli,
    campaign: str | None,
    who: str | None,
    audience: str | None,
    days: int | None,
    client: str | None,
    device: str | None,
    country: str | None,
    saved: str | None,
    explain: bool,
    as_json: bool,
) -> None:
    """List a segment: one address per line, or with --json an object per recipient."""
    from deadpixel.reports import segments

    spec = _chosen(campaign, who, audience, days, client, device, country, saved)
    with cli.migrated() as engine, engine.connect() as conn:
        found = segments.resolve(conn, spec)
        rows = _rows(conn, found, as_json)
    _present(found, rows, explain=explain, as_json=as_json)


def _rows(conn: Any, found: Segment, full: bool) -> list[dict[str, Any]]:
    """Full rows for --json; only the addresses (a cheaper query) for the plain list."""
    from deadpixel.reports import segments

    if full:
        return segments.members(conn, found)
    return [{"email": email} for email in segments.emails(conn, found)]


def _present(found: Segment, rows: list[dict[str, Any]], *, explain: bool, as_json: bool) -> None:
    from deadpixel.reports import segments

    if as_json:
        print_json({**segments.describe(found), "count": len(rows), "recipients": rows})
        return
    if explain:
        click.echo(f"# {found.spec}: {found.definition()}")
        click.echo(f"# {len(rows)} recipient{'s' if len(rows) != 1 else ''}")
    for row in rows:
        click.echo(row["email"])


@segment.command("save")
@click.argument("name")
@click.argument("definition")
@pass_cli
def save(cli: Cli, name: str, definition: str) -> None:
    """Keep DEFINITION (CAMPAIGN:WHO, @inactive:DAYS, @never-opened, @client:NAME, @device:NAME,
    @country:CODE) as NAME; it is evaluated again each time it is used."""
    from deadpixel.reports import segments
    from deadpixel.store import audit
    from deadpixel.store import segments as store

    parsed = segments.parse(definition)
    with cli.store() as conn:
        store.save(conn, name, parsed.spec)
        audit.record(conn, audit.CLI, "segment.save", f"{name} = {parsed.spec}"[:200])
    click.echo(f"Saved {name}: {parsed.spec} ({parsed.definition()}).")


@segment.command("list")
@json_option
@pass_cli
def list_command(cli: Cli, as_json: bool) -> None:
    """The saved segments with their definitions (counts: segment show NAME)."""
    from deadpixel.reports import segments
    from deadpixel.reports.analytics import iso
    from deadpixel.store import segments as store

    with cli.migrated() as engine, engine.connect() as conn:
        found = store.list_saved(conn)
    rows = [
        {"name": s.name, **segments.describe(segments.parse(s.definition)), "created_at": iso(s.created_at)}
        for s in found
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No saved segments (deadpixel segment save NAME CAMPAIGN:WHO).")
    for row in rows:
        click.echo(f"{row['name']:<24}  {row['spec']:<32}  {row['definition']}")


@segment.command("show")
@click.argument("name")
@click.option("--explain/--no-explain", default=True, show_default=True, help="Print the definition first.")
@json_option
@pass_cli
def show(cli: Cli, name: str, explain: bool, as_json: bool) -> None:
    """The saved segment NAME's definition and its recipients as of now."""
    from deadpixel.reports import segments

    with cli.migrated() as engine, engine.connect() as conn:
        found = segments.resolve(conn, _saved_name(name))
        rows = _rows(conn, found, as_json)
    if as_json:
        print_json({"name": name, **segments.describe(found), "count": len(rows), "recipients": rows})
        return
    _present(found, rows, explain=explain, as_json=False)


def _saved_name(name: str) -> str:
    if ":" in name or name.startswith("@"):
        raise click.UsageError(f"{name!r} is a definition, not a saved segment's name")
    return name


@segment.command("delete")
@click.argument("name")
@pass_cli
def delete(cli: Cli, name: str) -> None:
    """Forget the saved segment NAME (nothing else changes: it was only a definition)."""
    from deadpixel.store import audit
    from deadpixel.store import segments as store

    with cli.store() as conn:
        if not store.remove(conn, name):
            raise click.ClickException(f"no saved segment named {name!r}")
        audit.record(conn, audit.CLI, "segment.delete", name)
    click.echo(f"Deleted the saved segment {name}.")
