"""The sign-in brake's state: tries per (client address, account) in a fixed window, in the store.

A try is counted when it starts, before the password is checked, in one atomic upsert: however many guesses
arrive at once, from however many server processes, at most ``limit`` of them per window reach the password
check. A success clears its pair's count; a failure leaves its try counted. The key is the pair, so wrong
passwords from one address never lock the account out for anyone else, and a proxy's address shared by
everyone (before trusted proxies are configured) locks out only the accounts guessed at through it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete
from sqlalchemy.dialects import postgresql, sqlite

from deadpixel.store.schema import sign_in_tries

KEY_CHARS = 64  # the column width: longer client texts are cut, account names are never longer


@functools.cache
def _take_statement(dialect: str) -> Any:
    t = sign_in_tries
    statement: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t)
    statement = statement.values(
        client=bindparam("client"), account=bindparam("account"), tries=1, window_start=bindparam("now")
    )
    expired = t.c.window_start <= bindparam("cutoff")
    return statement.on_conflict_do_update(
        index_elements=["client", "account"],
        set_={
            "tries": case((expired, 1), else_=t.c.tries + 1),
            "window_start": case((expired, bindparam("now")), else_=t.c.window_start),
        },
    ).returning(t.c.tries, t.c.window_start)


def take(conn: Connection, client: str, account: str, now: float, limit: int, window: float) -> int:
    """Count one try for the pair: 0 when it may go ahead, else the whole seconds until its window ends."""
    tries, start = conn.execute(
        _take_statement(conn.dialect.name),
        {"client": client[:KEY_CHARS], "account": account[:KEY_CHARS], "now": now, "cutoff": now - window},
    ).one()
    if tries <= limit:
        return 0
    return max(1, math.ceil(float(start) + window - now))


def clear(conn: Connection, client: str, account: str) -> None:
    """A right password: the pair starts afresh."""
    t = sign_in_tries
    conn.execute(delete(t).where(and_(t.c.client == client[:KEY_CHARS], t.c.account == account[:KEY_CHARS])))


def purge(conn: Connection, now: float, window: float) -> int:
    """Forget windows that have ended (a spray of made-up names must not grow the table for ever)."""
    return int(
        conn.execute(delete(sign_in_tries).where(sign_in_tries.c.window_start <= now - window)).rowcount
    )
