"""The SQLite database: one writer connection, one reader connection, numbered migrations.

Two `mpgpt serve` processes may share one database file, so every state change is one
`BEGIN IMMEDIATE` transaction (SQLite then serialises writers across processes, waiting up to the
busy timeout), and nothing that must be shared is kept in memory.

Inside one process the writer connection is guarded by a lock: coroutines sharing an aiosqlite
connection would otherwise interleave their statements inside each other's transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

Row = sqlite3.Row


class MigrationError(Exception):
    pass


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"two migration files share a number: {numbers}")
    return found


class Database:
    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    async def open(self, migrate: bool = True) -> "Database":
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        # WAL lets readers (ours and the other process's) go on while one writer commits.
        # Fetched to the end: an unfinished PRAGMA statement keeps a lock that makes every other
        # connection (our reader included) fail with "database is locked".
        await self._writer.execute_fetchall("PRAGMA journal_mode = WAL")
        self._reader = await self._connect()
        if migrate:
            await self.migrate()
        return self

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> "Database":
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One atomic state change: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
        assert self._writer is not None, "database is not open"
        async with self._write_lock:
            conn = self._writer
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                # aiosqlite runs statements in its thread in order, even when the awaiting task was
                # cancelled: a cancelled BEGIN (or COMMIT) still happens. Always roll back, so the
                # shared writer connection is never left inside a transaction.
                with contextlib.suppress(sqlite3.OperationalError):
                    await asyncio.shield(conn.execute("ROLLBACK"))
                raise

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        assert self._reader is not None, "database is not open"
        async with self._reader.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        assert self._reader is not None, "database is not open"
        async with self._reader.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def schema_version(self) -> int:
        row = await self.fetchone(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
        if row is None:
            return 0
        row = await self.fetchone("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        return int(row["v"]) if row else 0

    async def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; safe if two processes start at once."""
        applied = []
        for number, name, sql in _migrations():
            async with self.transaction() as conn:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
                )
                async with conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (number,)) as cur:
                    if await cur.fetchone():
                        continue
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (number, name, time.time()),
                )
                applied.append(number)
        return applied


def latest_schema_version() -> int:
    migrations = _migrations()
    return migrations[-1][0] if migrations else 0


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    statements, current = [], []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if sqlite3.complete_statement("\n".join(current)):
            stmt = "\n".join(current).strip()
            if stmt.rstrip(";").strip():
                statements.append(stmt)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        raise MigrationError(f"incomplete SQL statement at end of migration: {rest[:60]!r}")
    return statements
