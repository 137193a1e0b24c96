"""What a write says differently on PostgreSQL, where several hosts write at once.

On SQLite every write transaction already runs alone (BEGIN IMMEDIATE), so each of these is nothing
there; on PostgreSQL (READ COMMITTED) they are what keeps a read-then-write exact:
- `for_update(conn)`: the row read is locked until COMMIT (the next writer reads what this one wrote);
- `skip_locked(conn)`: rows another host is claiming are passed over instead of waited for;
- `serialize(conn, key)`: one transaction at a time per key (an advisory lock released at COMMIT),
  where what must be serial is a count or a sequence rather than one row.
"""

from __future__ import annotations

from typing import Any

from storage.pgconn import AsyncPgConn, PgConn

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"


def is_postgres(conn: Any) -> bool:
    return isinstance(conn, (PgConn, AsyncPgConn))


def for_update(conn: Any) -> str:
    return " FOR UPDATE" if is_postgres(conn) else ""


def skip_locked(conn: Any) -> str:
    return " FOR UPDATE SKIP LOCKED" if is_postgres(conn) else ""


def serialize(conn: Any, key: str) -> None:
    """Inside a write function: wait until no other transaction holds `key`, hold it to COMMIT."""
    if isinstance(conn, PgConn):
        conn.execute(_LOCK, (key,))


async def serialize_async(conn: Any, key: str) -> None:
    """The same inside a `transaction()` block."""
    if isinstance(conn, AsyncPgConn):
        await conn.execute(_LOCK, (key,))
