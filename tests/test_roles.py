"""Roles and the audit log: every route has a rule, a real server on loopback refuses a viewer's every
state-changing request and a sender's management, owners manage accounts but never remove the last owner,
each action leaves an audit row, and the upgrade makes existing accounts and tokens owners."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa

from deadpixel.accounts import access
from deadpixel.accounts.users import UserError, create_user, delete_user, role_of, set_role
from deadpixel.config import Settings
from deadpixel.server.app import Deadpixel
from deadpixel.store import audit, migrate
from deadpixel.store.api_tokens import create_token, list_tokens
from deadpixel.store.db import create_engine
from deadpixel.store.roles import Role, RoleError, parse_role
from deadpixel.track.app import PIXEL_PREFIX
from deadpixel.track.click import CLICK_PREFIX

from .conftest import Server
from .helpers import deadpixel

PASSWORD = "correct horse"
SAMPLE = {"{name:path}": "spring", "{id}": "1", "{name}": "vic", "{kind}": "opens"}


def _url(path: str) -> str:
    for template, value in SAMPLE.items():
        path = path.replace(template, value)
    return path


def _all_routes(settings: Settings) -> list[tuple[str, set[str]]]:
    return list(access.walk(Deadpixel(settings).web.routes))


def test_every_route_of_the_web_app_and_the_api_has_a_role_rule_and_no_rule_is_stale(
    settings: Settings,
) -> None:
    routes = _all_routes(settings)
    keys = {f"{method} {path}" for path, methods in routes for method in methods if method != "HEAD"}
    assert keys == set(access.RULES), "the table and the routes differ"
    assert len([k for k in keys if k.startswith("POST ")]) >= 14
    assert PIXEL_PREFIX and CLICK_PREFIX  # answered before the router, public by design (test_api.py)
    with pytest.raises(access.MissingRule):
        access.needed("POST", "/not/a/route")
    assert access.needed("HEAD", "/campaigns") is Role.VIEWER


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.OWNER.allows(Role.SENDER) and Role.SENDER.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.SENDER) and not Role.SENDER.allows(Role.OWNER)
    assert parse_role(" Sender ") is Role.SENDER
    with pytest.raises(RoleError, match="one of viewer, sender, owner"):
        parse_role("admin")


def test_the_last_owner_can_be_neither_demoted_nor_deleted(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        assert create_user(conn, "olga", PASSWORD).role is Role.OWNER  # the first account
        assert create_user(conn, "vic", PASSWORD).role is Role.VIEWER  # every later one
        for change in (lambda: set_role(conn, "olga", Role.SENDER), lambda: delete_user(conn, "olga")):
            with pytest.raises(UserError, match="last owner"):
                change()
        assert set_role(conn, "vic", Role.OWNER) is Role.VIEWER
        assert set_role(conn, "olga", Role.VIEWER) is Role.OWNER
        assert role_of(conn, "olga") is Role.VIEWER
        with pytest.raises(UserError, match="last owner"):
            delete_user(conn, "vic")
        with pytest.raises(UserError, match="no user"):
            set_role(conn, "nobody", Role.OWNER)
    engine.dispose()


@dataclass
class People:
    server: Server
    tokens: dict[Role, str]

    def browser(self, name: str) -> httpx.Client:
        client = httpx.Client(base_url=self.server.url, timeout=10, follow_redirects=False)
        page = client.get("/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = client.post("/login", data={"csrf": csrf, "name": name, "password": PASSWORD, "next": "/"})
        assert signed.status_code == 303, signed.text
        return client

    def api(self, role: Role) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.tokens[role]}"}
        return httpx.Client(base_url=self.server.url + "/api/v1", headers=headers, timeout=10)


def _csrf(client: httpx.Client) -> str:
    page = client.get("/campaigns")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


@pytest.fixture
def people(settings: Settings, server_factory: type[Server], env: dict[str, str]) -> Iterator[People]:
    engine = create_engine(settings.database_url)
    migrate.ensure_current(engine)
    tokens = {}
    with engine.begin() as conn:
        create_user(conn, "olga", PASSWORD, Role.OWNER)
        create_user(conn, "sam", PASSWORD, Role.SENDER)
        create_user(conn, "vic", PASSWORD, Role.VIEWER)
        for role in Role:
            tokens[role] = create_token(conn, f"t-{role.label}", role)[1]
    engine.dispose()
    yield People(server_factory(env=dict(env)).start(), tokens)


def _guarded(settings: Settings, least: Role) -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, methods in _all_routes(settings)
        for method in sorted(methods - {"HEAD"})
        if (needed := access.needed(method, path)) is not None and needed >= least
    ]


def test_a_viewer_gets_403_from_every_state_changing_route_and_a_sender_from_every_owners_route(
    people: People, settings: Settings
) -> None:
    above_viewer = _guarded(settings, Role.SENDER)
    changing = [(m, p) for m, p in above_viewer if m == "POST"]
    assert len(changing) >= 10
    vic = people.browser("vic")
    vic_csrf = _csrf(vic)
    for method, path in above_viewer:
        if path.startswith("/api/"):
            answer = people.api(Role.VIEWER).request(method, _url(path.removeprefix("/api/v1")), json={})
            assert answer.status_code == 403, (method, path, answer.text)
            assert "sender" in answer.json()["error"]
        else:
            answer = vic.request(method, _url(path), data={"csrf": vic_csrf, "to": "a@example.com"})
            assert answer.status_code == 403, (method, path)
    owners_only = _guarded(settings, Role.OWNER)
    assert ("POST", "/users/{name}/role") in owners_only and ("POST", "/settings/tokens") in owners_only
    sam = people.browser("sam")
    sam_csrf = _csrf(sam)
    for method, path in owners_only:
        answer = sam.request(method, _url(path), data={"csrf": sam_csrf, "name": "x", "role": "owner"})
        assert answer.status_code == 403, (method, path)
    # what they may do, they can
    assert vic.get("/campaigns").status_code == 200 and vic.get("/exports/opens.csv").status_code == 200
    assert people.api(Role.VIEWER).get("/campaigns").status_code == 200
    made = sam.post("/pixels/new", data={"csrf": sam_csrf, "to": "a@example.com", "campaign": "spring"})
    assert made.status_code == 200 and "/o/" in made.text
    sent = people.api(Role.SENDER).post("/messages", json={"to": "b@example.com", "campaign": "spring"})
    assert sent.status_code == 201, sent.text
    assert 'href="/settings"' not in vic.get("/campaigns").text  # the page shows only what the role may do
    with create_engine(settings.database_url).connect() as conn:
        rows = [(r.actor, r.action) for r in audit.recent(conn)]
    assert ("sam", "pixel.create") in rows and ("token:t-sender", "pixel.create") in rows
    assert not [r for r in rows if r[0] in ("vic", "token:t-viewer")]  # refused requests changed nothing


def test_an_owner_manages_accounts_tokens_and_settings_and_every_change_is_audited(
    people: People, settings: Settings
) -> None:
    olga = people.browser("olga")
    csrf = _csrf(olga)
    users_page = olga.get("/users")
    assert users_page.status_code == 200 and "sam" in users_page.text and "vic" in users_page.text
    made = olga.post("/users", data={"csrf": csrf, "name": "nina", "password": PASSWORD, "role": "sender"})
    assert made.status_code == 201
    assert olga.post("/users/nina/role", data={"csrf": csrf, "role": "owner"}).status_code == 200
    bad = olga.post("/users/nina/role", data={"csrf": csrf, "role": "admin"})
    assert bad.status_code == 400 and "not a role" in bad.text
    assert olga.post("/users/vic/delete", data={"csrf": csrf}).status_code == 200
    token = olga.post("/settings/tokens", data={"csrf": csrf, "name": "reporting", "role": "viewer"})
    assert token.status_code == 200 and "reporting" in token.text
    saved = olga.post("/settings/notices", data={"csrf": csrf, "email": "", "url": "", "format": "auto"})
    assert saved.status_code == 200
    # the last owner: nina and olga are owners; demote nina, then olga cannot go
    assert olga.post("/users/nina/role", data={"csrf": csrf, "role": "viewer"}).status_code == 200
    refused = olga.post("/users/olga/role", data={"csrf": csrf, "role": "viewer"})
    assert refused.status_code == 400 and "last owner" in refused.text
    refused = olga.post("/users/olga/delete", data={"csrf": csrf})
    assert refused.status_code == 400 and "last owner" in refused.text
    # a demotion counts at once: nina's role is read on every request
    nina = people.browser("nina")
    assert nina.get("/users").status_code == 403
    settings_page = olga.get("/settings")
    assert settings_page.status_code == 200 and 'id="audit-log"' in settings_page.text
    assert "user.role" in settings_page.text
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert {t.name: t.role for t in list_tokens(conn)}["reporting"] is Role.VIEWER
    engine.dispose()
    listed = json.loads(deadpixel("audit", "--json", "--limit", "100", check=True).stdout)
    seen = [(row["actor"], row["action"], row["target"]) for row in listed]
    assert seen[::-1] == [
        ("olga", "user.create", "nina (sender)"),
        ("olga", "user.role", "nina: sender -> owner"),
        ("olga", "user.delete", "vic"),
        ("olga", "token.create", "reporting (viewer)"),
        ("olga", "settings.notices", "email=, url=, format="),
        ("olga", "user.role", "nina: owner -> viewer"),
    ]
    assert all(row["at"].endswith("Z") or "+" in row["at"] for row in listed)


def test_the_user_and_token_commands_take_roles_and_are_audited_as_cli(settings: Settings) -> None:
    def make(*args: str) -> str:
        return deadpixel("user", "create", *args, "--password-stdin", input="pw\n", check=True).stdout

    assert "Role: owner." in make("ann")
    assert "Role: viewer." in make("bob")
    assert "Role: sender." in make("cyd", "--role", "sender")
    assert deadpixel("user", "role", "bob", "owner", check=True).stdout.startswith("bob is now owner")
    deadpixel("user", "role", "ann", "viewer", check=True)
    refused = deadpixel("user", "role", "bob", "sender")
    assert refused.returncode == 1 and "last owner" in refused.stderr and "Traceback" not in refused.stderr
    assert deadpixel("user", "delete", "bob").returncode == 1
    wrong = deadpixel("user", "role", "bob", "admin")
    assert wrong.returncode == 2 and "admin" in wrong.stderr
    listed = json.loads(deadpixel("user", "list", "--json", check=True).stdout)
    assert {u["name"]: u["role"] for u in listed} == {"ann": "viewer", "bob": "owner", "cyd": "sender"}
    deadpixel("user", "passwd", "cyd", "--password-stdin", input="new\n", check=True)
    deadpixel("user", "delete", "cyd", check=True)
    deadpixel("token", "create", "ci", check=True)
    deadpixel("token", "create", "sender-bot", "--role", "sender", check=True)
    deadpixel("token", "revoke", "ci", check=True)
    tokens = json.loads(deadpixel("token", "list", "--json", check=True).stdout)
    assert {t["name"]: t["role"] for t in tokens} == {"ci": "viewer", "sender-bot": "sender"}
    deadpixel("suppression", "add", "someone@example.com", check=True)
    deadpixel("suppression", "remove", "someone@example.com", check=True)
    rows = json.loads(deadpixel("audit", "--json", check=True).stdout)
    assert {row["actor"] for row in rows} == {"cli"}
    assert [(row["action"], row["target"]) for row in rows][::-1] == [
        ("user.create", "ann (owner)"),
        ("user.create", "bob (viewer)"),
        ("user.create", "cyd (sender)"),
        ("user.role", "bob: viewer -> owner"),
        ("user.role", "ann: owner -> viewer"),
        ("user.passwd", "cyd"),
        ("user.delete", "cyd"),
        ("token.create", "ci (viewer)"),
        ("token.create", "sender-bot (sender)"),
        ("token.revoke", "ci"),
        ("suppression.add", "s***@example.com"),
        ("suppression.remove", "s***@example.com"),
    ]
    assert len(json.loads(deadpixel("audit", "--json", "--limit", "2", check=True).stdout)) == 2
    assert deadpixel("audit", "--limit", "0").returncode == 2
    text = deadpixel("audit", check=True).stdout.splitlines()
    assert text[0].split("\t")[1:] == ["cli", "suppression.remove", "s***@example.com"]


def test_the_upgrade_makes_existing_accounts_and_tokens_owners(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine, "0017")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (name, password_hash, created_at) VALUES ('old', 'x', 1)"))
        conn.execute(
            sa.text("INSERT INTO api_tokens (name, secret_hash, created_at) VALUES ('old', 'abc', 1)")
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert role_of(conn, "old") is Role.OWNER
        assert [t.role for t in list_tokens(conn)] == [Role.OWNER]
        assert audit.recent(conn) == []
    engine.dispose()
