"""``deadpixel contacts``: the audience: import, list, tag, export and delete contacts (docs/contacts.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json, recipient_address

if TYPE_CHECKING:
    from deadpixel.mail.addresses import Recipient

STATE = click.Choice(("subscribed", "unsubscribed", "bounced", "complained"))
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("contacts")
def contacts() -> None:
    """Your audience: contacts with fields, tags and a state (see docs/contacts.md)."""


@contacts.command("import")
@click.argument("file", type=FILE)
@click.option("--tag", "tags", multiple=True, help="Give every imported contact this tag; repeat for more.")
@json_option
@pass_cli
def import_command(cli: Cli, file: Path, tags: tuple[str, ...], as_json: bool) -> None:
    """Import contacts from FILE: a CSV with an 'email' column (others become fields), or a Mailchimp export.

    Good rows are stored in one transaction; bad ones are listed with their line and reason and left out
    (exit status 1 when there were any). Importing the same file again changes nothing."""
    from deadpixel.contacts.transfer import import_file

    with cli.migrated() as engine:
        result = import_file(engine, file, tags)
    if as_json:
        print_json({"file": str(file), **result.as_dict()})
    else:
        for bad in result.bad:
            click.echo(f"line {bad.line}: {bad.value!r}: {bad.reason}", err=True)
        click.echo(
            f"Imported {file.name} ({result.kind}): {result.added} added, {result.updated} updated,"
            f" {result.unchanged} unchanged, {len(result.bad)} bad."
        )
    if result.bad:
        sys.exit(1)


@contacts.command("list")
@click.option("--tag", help="Only contacts with this tag.")
@click.option("--state", type=STATE, help="Only contacts in this state.")
@json_option
@pass_cli
def list_command(cli: Cli, tag: str | None, state: str | None, as_json: bool) -> None:
    """List contacts by address, with state, tags, name and last human open."""
    from deadpixel.contacts.transfer import contacts_pages
    from deadpixel.reports.audience import contact_row

    with cli.migrated() as engine:
        found = [c for page in contacts_pages(engine, tag, state, opens=True) for c in page]
    rows = [contact_row(c) for c in sorted(found, key=lambda c: c.key)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No contacts.")
    for row in rows:
        seen = row["last_human_open_at"] or "-"
        click.echo(
            f"{row['address']:<40}  {row['state']:<12}  {seen:<29}  {','.join(row['tags']) or '-':<20}"
            f"  {row['name'] or ''}".rstrip()
        )


@contacts.command("show")
@click.argument("address", callback=recipient_address)
@json_option
@pass_cli
def show_command(cli: Cli, address: Recipient, as_json: bool) -> None:
    """Show one contact with every field."""
    from deadpixel.reports.audience import contact_row
    from deadpixel.store.contacts import get_contact

    with cli.store() as conn:
        found = get_contact(conn, key=address.key)
    if found is None:
        raise click.ClickException(f"{address.key} is not a contact")
    row = contact_row(found)
    if as_json:
        print_json(row)
        return
    for name in ("address", "name", "state", "created_at", "last_human_open_at"):
        click.echo(f"{name}: {row[name] if row[name] is not None else '-'}")
    click.echo(f"tags: {', '.join(row['tags']) or '-'}")
    for name, value in sorted(row["fields"].items()):
        click.echo(f"field {name}: {value}")


def _keys(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    """Each ADDRESS under the one address rule (``cli.context.recipient_address``), as its key."""
    return [recipient_address(ctx, param, value).key for value in values]


def _tagging(name: str, doc: str) -> click.Command:
    @click.argument("addresses", nargs=-1, required=True, callback=_keys)
    @click.option("--tag", required=True, help="The tag.")
    @pass_cli
    def command(cli: Cli, addresses: list[str], tag: str) -> None:
        from deadpixel.store import audit
        from deadpixel.store.contacts import tag_contacts, untag_contacts

        change = tag_contacts if name == "tag" else untag_contacts
        with cli.store() as conn:
            changed, missing = change(conn, addresses, tag)
            audit.record(conn, audit.CLI, f"contacts.{name}", f"{tag}: {changed}")
        for key in missing:
            click.echo(f"{key} is not a contact: skipped", err=True)
        verb = "tagged" if name == "tag" else "untagged"
        click.echo(f"{changed} contact(s) {verb} {tag!r}.")
        if missing:
            sys.exit(1)

    command.__doc__ = doc
    return contacts.command(name)(command)


tag_command = _tagging("tag", "Give the contacts ADDRESS... the tag --tag (status 1 if one is no contact).")
untag_command = _tagging("untag", "Take the tag --tag off the contacts ADDRESS....")


@contacts.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tag", help="Only contacts with this tag.")
@pass_cli
def export_command(cli: Cli, file: Path | None, tag: str | None) -> None:
    """Write contacts as CSV to FILE (default: stdout): email, name, tags, state and every field.

    ``contacts import`` reads the file back as it was."""
    from deadpixel.contacts.transfer import export_rows

    with cli.migrated() as engine, click.open_file(str(file) if file else "-", "w", encoding="utf-8") as out:
        for text in export_rows(engine, tag):
            out.write(text)


@contacts.command("delete")
@click.argument("address", callback=recipient_address)
@pass_cli
def delete_command(cli: Cli, address: Recipient) -> None:
    """Remove ADDRESS from the contacts (its messages and opens stay; `deadpixel forget` erases those too).

    An unsubscribe, bounce or complaint of the address stays on the suppression list."""
    from deadpixel.store import audit
    from deadpixel.store.contacts import delete_contact

    with cli.store() as conn:
        deleted = delete_contact(conn, address.key)
        if deleted:
            audit.record(conn, audit.CLI, "contacts.delete", audit.masked(address.key))
    if not deleted:
        raise click.ClickException(f"{address.key} is not a contact")
    click.echo(f"Deleted the contact {address.key}.")
