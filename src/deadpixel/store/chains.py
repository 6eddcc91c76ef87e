"""Each message's opens as a chain: ``messages.last_open_id`` names its newest stored open and every open
names the one stored before it (``opens.prev_id``).

This replaces an index on ``opens.message_id``. Opens arrive for messages all over that index, so each one
dirtied another page of it: at a million opens that was a third of what every commit wrote, the WAL and
its checkpoints grew with it, and the pixel's p99 latency doubled. The chain costs no page of its own: the
open's row is written anyway, and so is its message's row, whose counters every batch bumps.

The writer links a batch as it stores it: on SQLite here (``link``), with the one writer's next ids; on
PostgreSQL inside the batch's one statement (``deadpixel.store.writes``), after the batch has locked its
messages' rows (``FOR UPDATE``, in id order), so two servers never link to the same predecessor.
Reading a message's opens follows the chain, one primary-key lookup per open (``open_ids``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import CTE, Connection, select

from deadpixel.store.driver import run
from deadpixel.store.schema import messages, opens

if TYPE_CHECKING:
    from deadpixel.store.writes import Known


def newest_open_id(conn: Connection) -> int:
    ((newest,),) = run(conn, "SELECT max(id) FROM opens")
    return int(newest or 0)


def link(rows: Sequence[dict[str, Any]], known: Mapping[str, Known], newest: int) -> dict[str, int]:
    """SQLite: give each row its id and its predecessor, in the one writer's transaction, before the rows are
    inserted; the next ids are the ones after ``newest``, the highest stored. Returns each linked message's
    new newest open."""
    heads: dict[str, int] = {}
    for open_id, row in enumerate(rows, newest + 1):
        mid = row["message_id"]
        row["id"] = open_id
        row["prev_id"] = heads[mid] if mid in heads else known[mid].last_open_id
        heads[mid] = open_id
    return heads


def open_ids(message_ids: Sequence[str]) -> CTE:
    """The ids of these messages' opens (column ``id``), followed down their chains."""
    heads = select(messages.c.last_open_id.label("id")).where(
        messages.c.id.in_(message_ids), messages.c.last_open_id.is_not(None)
    )
    chain = heads.cte("chain", recursive=True)
    # prev_id < id always; saying so means a damaged chain still ends.
    step = select(opens.c.prev_id).join(chain, opens.c.id == chain.c.id).where(opens.c.prev_id < chain.c.id)
    return chain.union_all(step)
