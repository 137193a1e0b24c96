"""The owner's audit trail: what was changed, when, by whom, why, with which command line.

An owner change and its audit row are one transaction:

    async with audit.change("credits.grant", target=openid, reason=reason, args=argv) as ch:
        await Ledger(ch.db).apply(openid, "admin", 100, f"audit:{ch.id}")
        ch.detail["amount"] = 100

`ch.db` is the open transaction dressed as a Database, so the server's own repositories (the ledger,
accounts, orders, disabled channels) run inside it unchanged: each of their `transaction()` blocks
becomes a SAVEPOINT of ours. Either the change and its audit row are both committed, or neither is.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from storage.db import Database, Row
from storage.dialect import serialize_async


class InTransaction:
    """A Database look-alike bound to an open transaction: writes join it (each `transaction()` a
    savepoint, rolled back alone if it fails), reads see its uncommitted changes."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        await self._conn.execute("SAVEPOINT owner_step")
        try:
            yield self._conn
        except BaseException:
            await self._conn.execute("ROLLBACK TO owner_step")
            await self._conn.execute("RELEASE owner_step")
            raise
        await self._conn.execute("RELEASE owner_step")

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    # Inside the transaction a read by key must see its uncommitted changes: same connection.
    lookup = fetchone


@dataclass
class Change:
    id: int
    db: InTransaction
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: float
    action: str
    target: str
    reason: str
    args: list[str]
    detail: dict[str, Any]
    actor: str


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


_INSERT = ("INSERT INTO audit (id, at, action, target, reason, args, detail, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class Audit:
    def __init__(self, db: Database, actor: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.actor = default_actor() if actor is None else actor
        self.clock = clock

    @asynccontextmanager
    async def change(self, action: str, target: str = "", *, reason: str = "",
                     args: Sequence[str] = ()) -> AsyncIterator[Change]:
        """One audited change: the body's writes through `ch.db` and the audit row commit together.
        The row's id is known up front (`ch.id`), so ledger rows can name it."""
        async with self.db.transaction() as conn:
            # Safe: no other writer takes this id meanwhile (SQLite's BEGIN IMMEDIATE; PostgreSQL: the lock).
            await serialize_async(conn, "audit")
            rows = list(await conn.execute_fetchall("SELECT COALESCE(MAX(id), 0) + 1 AS id FROM audit"))
            ch = Change(int(rows[0]["id"]), InTransaction(conn))
            yield ch
            await conn.execute(_INSERT, (ch.id, self.clock(), action, target, reason, _json(list(args)),
                                         _json(ch.detail), self.actor))

    async def record(self, action: str, target: str = "", *, reason: str = "", args: Sequence[str] = (),
                     detail: dict[str, Any] | None = None) -> int:
        """An audit row of its own (the outcome of an outside call made after the change committed)."""
        async with self.change(action, target, reason=reason, args=args) as ch:
            ch.detail.update(detail or {})
        return ch.id

    async def recent(self, *, target: str | None = None, action: str | None = None,
                     limit: int = 50) -> list[AuditRow]:
        """Newest first; `action` matches a prefix ('orders' finds 'orders.refund')."""
        rows = await self.db.fetchall(
            "SELECT * FROM audit WHERE (CAST(?1 AS TEXT) IS NULL OR target = ?1)"
            " AND (CAST(?2 AS TEXT) IS NULL OR action = ?2 OR action LIKE ?2 || '.%') ORDER BY id DESC LIMIT ?3",
            (target, action, limit))
        return [AuditRow(r["id"], r["at"], r["action"], r["target"], r["reason"], json.loads(r["args"]),
                         json.loads(r["detail"]), r["actor"]) for r in rows]
