"""``deadpixel user ...``, ``deadpixel token ...`` and ``deadpixel audit``: who may sign in, send and call the
API, with which role, and who did what. Changes made here are audited as ``cli``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json

if TYPE_CHECKING:
    from deadpixel.store.api_tokens import ApiToken


@click.group()
def user() -> None:
    """Accounts for the dashboard and the relay, and their roles."""


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    if not password:
        raise click.ClickException("the password is empty")
    return password


ROLE_CHOICE = click.Choice(["viewer", "sender", "owner"], case_sensitive=False)


@user.command("create")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, help="[default: owner for the first account, viewer after]")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_cli
def user_create(cli: Cli, name: str, role: str | None, password_stdin: bool) -> None:
    """Create an account; the password is asked for twice (or read from stdin)."""
    from deadpixel.accounts.users import create_user
    from deadpixel.store import audit
    from deadpixel.store.roles import parse_role

    cli.load()  # a bad setting stops the command before the password is asked for
    password = _new_password(password_stdin)
    with cli.store() as conn:
        made = create_user(conn, name, password, parse_role(role) if role else None)
        audit.record(conn, audit.CLI, "user.create", f"{name} ({made.role.label})")
    click.echo(f"User {name} created. Role: {made.role.label}.")


@user.command("role")
@click.argument("name")
@click.argument("role", type=ROLE_CHOICE)
@pass_cli
def user_role(cli: Cli, name: str, role: str) -> None:
    """Give an account a role: viewer, sender or owner. The last owner keeps the owner role."""
    from deadpixel.accounts.users import set_role
    from deadpixel.store import audit
    from deadpixel.store.roles import parse_role

    wanted = parse_role(role)
    with cli.store() as conn:
        before = set_role(conn, name, wanted)
        audit.record(conn, audit.CLI, "user.role", f"{name}: {before.label} -> {wanted.label}")
    click.echo(f"{name} is now {wanted.label} (was {before.label}).")


@user.command("list")
@json_option
@pass_cli
def user_list(cli: Cli, as_json: bool) -> None:
    """The accounts, by name."""
    from deadpixel.accounts.users import list_users
    from deadpixel.reports.analytics import iso

    with cli.store() as conn:
        found = list_users(conn)
    if as_json:
        print_json([{"name": u.name, "role": u.role.label, "created_at": iso(u.created_at)} for u in found])
        return
    for u in found:
        click.echo(f"{u.name}\t{u.role.label}\t{iso(u.created_at)}")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_cli
def user_passwd(cli: Cli, name: str, password_stdin: bool) -> None:
    """Change an account's password; its dashboard sessions end everywhere."""
    from deadpixel.accounts.users import set_password
    from deadpixel.store import audit

    password = _new_password(password_stdin)
    with cli.store() as conn:
        set_password(conn, name, password)
        audit.record(conn, audit.CLI, "user.passwd", name)
    click.echo(f"Password of {name} changed; its sessions have ended.")


@user.command("delete")
@click.argument("name")
@pass_cli
def user_delete(cli: Cli, name: str) -> None:
    """Delete an account; it can no longer log in. The last owner cannot be deleted."""
    from deadpixel.accounts.users import delete_user
    from deadpixel.store import audit

    with cli.store() as conn:
        delete_user(conn, name)
        audit.record(conn, audit.CLI, "user.delete", name)
    click.echo(f"User {name} deleted.")


@click.group()
def token() -> None:
    """Bearer tokens for the JSON API (/api/v1)."""


def _token_json(t: ApiToken) -> dict[str, Any]:
    from deadpixel.reports.analytics import iso

    return {
        "id": t.id,
        "name": t.name,
        "created_at": iso(t.created_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
        "role": t.role.label,
    }


@token.command("create")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, default="viewer", show_default=True, help="What the token may do.")
@pass_cli
def token_create(cli: Cli, name: str, role: str) -> None:
    """Create a token and print its secret: shown this once, only a hash of it is stored."""
    from deadpixel.store import audit
    from deadpixel.store.api_tokens import create_token
    from deadpixel.store.roles import parse_role

    wanted = parse_role(role)
    with cli.store() as conn:
        _, secret_value = create_token(conn, name, wanted)
        audit.record(conn, audit.CLI, "token.create", f"{name} ({wanted.label})")
    click.echo(f"Token {name} created ({wanted.label}). Its secret (shown only now):", err=True)
    click.echo(secret_value)


@token.command("list")
@json_option
@pass_cli
def token_list(cli: Cli, as_json: bool) -> None:
    """The tokens: id, name, created, last used, revoked."""
    from deadpixel.store.api_tokens import list_tokens

    with cli.store() as conn:
        found = [_token_json(t) for t in list_tokens(conn)]
    if as_json:
        print_json(found)
        return
    for t in found:
        state = f"revoked {t['revoked_at']}" if t["revoked_at"] else "active"
        click.echo(
            f"{t['id']}\t{t['name']}\t{t['role']}\t{t['created_at']}\t"
            f"last used {t['last_used_at'] or 'never'}\t{state}"
        )


@token.command("revoke")
@click.argument("name_or_id")
@pass_cli
def token_revoke(cli: Cli, name_or_id: str) -> None:
    """Revoke a token by name or id: requests with it get 401 from then on."""
    from deadpixel.store import audit
    from deadpixel.store.api_tokens import revoke_token

    with cli.store() as conn:
        revoked = revoke_token(conn, name_or_id)
        audit.record(conn, audit.CLI, "token.revoke", revoked.name)
    click.echo(f"Token {revoked.name} (id {revoked.id}) revoked.")


@click.command("audit")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="How many rows.")
@json_option
@pass_cli
def audit_log(cli: Cli, limit: int, as_json: bool) -> None:
    """Who sent or changed settings, tokens or accounts, and when.

    Newest first: sends, webhooks, tokens, accounts, read-notice settings and suppressions."""
    from deadpixel.reports.analytics import iso
    from deadpixel.store import audit

    with cli.store() as conn:
        rows = audit.recent(conn, limit)
    if as_json:
        print_json([{"id": r.id, "at": iso(r.at), "actor": r.actor, "action": r.action, "target": r.target}
                    for r in rows])  # fmt: skip
        return
    for r in rows:
        click.echo(f"{iso(r.at)}\t{r.actor}\t{r.action}\t{r.target}")
