"""API tokens: the store functions and the ``deadpixel token`` commands as a user runs them."""

from __future__ import annotations

import json

import pytest

from deadpixel.config import Settings
from deadpixel.store.api_tokens import (
    LiveToken,
    TokenError,
    create_token,
    hash_secret,
    revoke_token,
    token_for_secret,
)
from deadpixel.store.db import create_engine
from deadpixel.store.roles import Role
from deadpixel.store.schema import api_tokens

from .helpers import deadpixel


def test_a_token_is_stored_as_a_hash_and_stops_working_when_revoked(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        made, secret = create_token(conn, "ci")
        assert secret.startswith("dp_") and len(secret) == 46
        stored = conn.execute(api_tokens.select()).one()
        assert stored.secret_hash == hash_secret(secret) and secret not in tuple(map(str, stored))
        assert token_for_secret(conn, secret) == LiveToken(made.id, "ci", Role.OWNER)
        assert token_for_secret(conn, secret + "x") is None
        assert token_for_secret(conn, "") is None
        with pytest.raises(TokenError, match="already exists"):
            create_token(conn, "ci")
        with pytest.raises(TokenError, match="not a usable name"):
            create_token(conn, "two words")
        first = revoke_token(conn, "ci")
        assert first.revoked_at is not None
        assert revoke_token(conn, str(made.id)).revoked_at == first.revoked_at
        assert token_for_secret(conn, secret) is None
        with pytest.raises(TokenError, match="no token"):
            revoke_token(conn, "nope")
    engine.dispose()


def test_token_commands(settings: Settings) -> None:
    created = deadpixel("token", "create", "reporting")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("dp_") and "reporting" in created.stderr
    assert deadpixel("token", "create", "reporting").returncode == 1
    listed = json.loads(deadpixel("token", "list", "--json").stdout)
    assert [(t["id"], t["name"], t["revoked_at"]) for t in listed] == [(1, "reporting", None)]
    assert secret not in deadpixel("token", "list").stdout
    revoked = deadpixel("token", "revoke", "1")
    assert revoked.returncode == 0 and "reporting" in revoked.stdout
    assert json.loads(deadpixel("token", "list", "--json").stdout)[0]["revoked_at"] is not None
    missing = deadpixel("token", "revoke", "other")
    assert missing.returncode == 1 and "no token named 'other'" in missing.stderr
