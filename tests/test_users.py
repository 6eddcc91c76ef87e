"""Accounts: scrypt hashes, and the ``deadpixel user`` commands as a user runs them."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from deadpixel.accounts.users import (
    TEST_COST_ENV,
    UserError,
    authenticate,
    check_password,
    create_user,
    delete_user,
    hash_password,
    sign_in,
)
from deadpixel.config import Settings
from deadpixel.store.db import create_engine
from deadpixel.store.migrate import ensure_current
from deadpixel.store.roles import Role
from deadpixel.store.schema import users
from deadpixel.store.sign_ins import purge, take

from .helpers import deadpixel


def test_a_hash_is_salted_and_carries_its_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    full = hash_password("correct horse")
    assert full.startswith("scrypt$131072$8$1$") and check_password("correct horse", full)  # OWASP's cost
    monkeypatch.setenv(TEST_COST_ENV, "1024")  # the rest holds at any cost
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and first.startswith("scrypt$1024$8$1$")
    assert check_password("correct horse", first) and check_password("correct horse", second)
    assert not check_password("correct horsE", first)
    assert not check_password("correct horse", "md5$whatever") and not check_password("x", "garbage")


def test_an_old_hash_is_upgraded_to_todays_cost_when_its_owner_signs_in(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database_url, writer=True)
    ensure_current(engine)
    monkeypatch.setenv(TEST_COST_ENV, str(2**14))  # what deadpixel stored before
    with engine.begin() as conn:
        create_user(conn, "alice", "s3cret")
    monkeypatch.delenv(TEST_COST_ENV)

    def stored() -> str:
        with engine.connect() as conn:
            return str(conn.execute(select(users.c.password_hash)).scalar_one())

    assert not asyncio.run(sign_in(engine, "192.0.2.1", "alice", "wrong")).ok
    assert stored().startswith("scrypt$16384$8$1$")  # a wrong password changes nothing
    assert asyncio.run(sign_in(engine, "192.0.2.1", "alice", "s3cret")).ok
    assert stored().startswith("scrypt$131072$8$1$") and check_password("s3cret", stored())
    engine.dispose()


def test_the_brake_counts_tries_per_address_and_account_in_a_fixed_window(database_url: str) -> None:
    engine = create_engine(database_url, writer=True)
    ensure_current(engine)
    with engine.begin() as conn:
        assert [take(conn, "192.0.2.1", "alice", 1000.0, 3, 600) for _ in range(4)] == [0, 0, 0, 600]
        assert take(conn, "192.0.2.1", "alice", 1300.5, 3, 600) == 300
        assert take(conn, "192.0.2.2", "alice", 1300.0, 3, 600) == 0  # another address
        assert take(conn, "192.0.2.1", "bob", 1300.0, 3, 600) == 0  # another account
        assert take(conn, "192.0.2.1", "alice", 1600.0, 3, 600) == 0  # the window has ended: a new one
        assert purge(conn, 2000.0, 600) == 2  # the windows that started at 1300 are over
    engine.dispose()


def test_accounts_in_the_store(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_COST_ENV, "1024")
    engine = create_engine(database_url)
    ensure_current(engine)
    with engine.begin() as conn:
        create_user(conn, "alice", "s3cret pässword")
        with pytest.raises(UserError, match="already exists"):
            create_user(conn, "alice", "other")
        with pytest.raises(UserError, match="not a usable name"):
            create_user(conn, "bad name", "x")
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
        assert "s3cret" not in stored
        assert authenticate(conn, "alice", "s3cret pässword")
        assert not authenticate(conn, "alice", "s3cret password")
        assert not authenticate(conn, "bob", "s3cret pässword")
        with pytest.raises(UserError, match="last owner"):
            delete_user(conn, "alice")
        create_user(conn, "root", "other", Role.OWNER)
        delete_user(conn, "alice")
        assert not authenticate(conn, "alice", "s3cret pässword")
        with pytest.raises(UserError, match="no user"):
            delete_user(conn, "alice")
    engine.dispose()


def test_user_commands(settings: Settings) -> None:
    created = deadpixel("user", "create", "alice", "--password-stdin", input="pw1\n", check=True)
    assert "User alice created." in created.stdout
    deadpixel("user", "create", "bob", "--role", "owner", "--password-stdin", input="pw2\n", check=True)
    again = deadpixel("user", "create", "bob", "--password-stdin", input="pw3\n", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    empty = deadpixel("user", "create", "carol", "--password-stdin", input="\n", check=False)
    assert empty.returncode == 1 and "empty" in empty.stderr
    assert [u["name"] for u in json.loads(deadpixel("user", "list", "--json").stdout)] == ["alice", "bob"]
    deadpixel("user", "delete", "alice", check=True)
    assert deadpixel("user", "list").stdout.split("\t")[0] == "bob"
    assert deadpixel("user", "delete", "alice", check=False).returncode == 1


def test_user_create_asks_for_the_password_twice(settings: Settings) -> None:
    typo = deadpixel("user", "create", "dave", input="one\ntwo\n", check=False)
    assert typo.returncode != 0
    deadpixel("user", "create", "dave", input="same\nsame\n", check=True)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert authenticate(conn, "dave", "same")
    engine.dispose()
