"""``deadpixel user ...`` and ``deadpixel token ...``: who may log in to the relay and call the API."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from deadpixel.cli.context import Cli, json_option, pass_cli, print_json

if TYPE_CHECKING:
    from deadpixel.store.api_tokens import ApiToken


@click.group()
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
@pass_cli
def user_create(cli: Cli, name: str, password_stdin: bool) -> None:
    """Create an account; the password is asked for twice (or read from stdin)."""
    from deadpixel.accounts.users import create_user

    cli.load()  # a bad setting stops the command before the password is asked for
    password = _new_password(password_stdin)
    with cli.store() as conn:
        create_user(conn, name, password)
    click.echo(f"User {name} created.")


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
        print_json([{"name": u.name, "created_at": iso(u.created_at)} for u in found])
        return
    for u in found:
        click.echo(f"{u.name}\t{iso(u.created_at)}")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_cli
def user_passwd(cli: Cli, name: str, password_stdin: bool) -> None:
    """Change an account's password; its dashboard sessions end everywhere."""
    from deadpixel.accounts.users import set_password

    password = _new_password(password_stdin)
    with cli.store() as conn:
        set_password(conn, name, password)
    click.echo(f"Password of {name} changed; its sessions have ended.")


@user.command("delete")
@click.argument("name")
@pass_cli
def user_delete(cli: Cli, name: str) -> None:
    """Delete an account; it can no longer log in."""
    from deadpixel.accounts.users import delete_user

    with cli.store() as conn:
        delete_user(conn, name)
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
    }


@token.command("create")
@click.argument("name")
@pass_cli
def token_create(cli: Cli, name: str) -> None:
    """Create a token and print its secret: shown this once, only a hash of it is stored."""
    from deadpixel.store.api_tokens import create_token

    with cli.store() as conn:
        _, secret_value = create_token(conn, name)
    click.echo(f"Token {name} created. Its secret (shown only now):", err=True)
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
            f"{t['id']}\t{t['name']}\t{t['created_at']}\tlast used {t['last_used_at'] or 'never'}\t{state}"
        )


@token.command("revoke")
@click.argument("name_or_id")
@pass_cli
def token_revoke(cli: Cli, name_or_id: str) -> None:
    """Revoke a token by name or id: requests with it get 401 from then on."""
    from deadpixel.store.api_tokens import revoke_token

    with cli.store() as conn:
        revoked = revoke_token(conn, name_or_id)
    click.echo(f"Token {revoked.name} (id {revoked.id}) revoked.")
