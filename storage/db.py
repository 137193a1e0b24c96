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
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from storage.steps import Step, after_commit

Row = sqlite3.Row
T = TypeVar("T")


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
    engine = "sqlite"

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000, checkpoint_interval: float = 1.0) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoint_interval = checkpoint_interval
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._lookups: sqlite3.Connection | None = None
        self._checkpoints: asyncio.Task | None = None
        self._write_lock = asyncio.Lock()
        # Group commit: writes that arrive while one batch runs go together in the next one.
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            await _end(conn)
            raise
        return conn

    async def open(self, migrate: bool = True) -> "Database":
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            for path in (self.path, self.path + "-wal", self.path + "-shm"):
                owner_only(path, create=path == self.path)
        try:
            await self._open(migrate)
        except BaseException:
            # A failed (or cancelled) start must not leave connection threads behind: aiosqlite's
            # are not daemons, and one left open keeps the process from exiting.
            await asyncio.shield(self.close())
            raise
        return self

    async def _open(self, migrate: bool) -> None:
        self._writer = await self._connect()
        # WAL lets readers (ours and the other process's) go on while one writer commits.
        # Fetched to the end: an unfinished PRAGMA statement keeps a lock that makes every other
        # connection (our reader included) fail with "database is locked".
        await self._writer.execute_fetchall("PRAGMA journal_mode = WAL")
        # SQLite checkpoints the WAL inside whichever commit crosses 1,000 pages, stalling every
        # write queued behind it (~20 ms seen in bench/); a connection of its own does it instead,
        # PASSIVE, so it never waits for or blocks a writer.
        await self._writer.execute("PRAGMA wal_autocheckpoint = 0")
        self._reader = await self._connect()
        self._checkpointer = await self._connect()
        self._checkpoints = asyncio.create_task(self._checkpoint_loop())
        if migrate:
            await self.migrate()
        if self.path != ":memory:":
            self._lookups = _lookup_connection(self.path)

    async def close(self) -> None:
        """Finish queued writes, then close every connection, each even when another fails: a
        connection left open keeps its (non-daemon) thread, and the process could not exit."""
        if self._lookups is not None:
            self._lookups.close()
            self._lookups = None
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
            self._checkpoints = None
        if self._checkpointer is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self.checkpoint()
        conns = [c for c in (self._checkpointer, self._reader, self._writer) if c is not None]
        self._checkpointer = self._reader = self._writer = None
        errors: list[BaseException] = []
        for conn in conns:
            try:
                await conn.close()
            except BaseException as e:
                await _end(conn)
                errors.append(e)
        if errors:
            raise errors[0]

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

    def where(self) -> str:
        """Where the data is, for the owner's commands."""
        return self.path

    def latest_version(self) -> int:
        """The schema version this code's migrations for this engine end at."""
        return latest_schema_version()

    def clock(self) -> float:
        """Now, as every process sharing this database counts it (one file: one host's clock)."""
        return time.time()

    async def sync_clock(self) -> None:
        """PostgreSQL's hosts follow the database server's clock; one SQLite file has one host."""

    async def changed(self, key: str, timeout: float) -> None:
        """Wait `timeout` (PostgreSQL wakes the waiter early on a notify; here another process's
        writes are seen by polling)."""
        await asyncio.sleep(timeout)

    def announce(self, key: str) -> None:
        """Wake other hosts' waiters on `key` after a committed write (PostgreSQL); one SQLite file
        is one host, whose waiters poll."""

    async def checkpoint(self) -> None:
        """Copy committed pages from the WAL into the database file (never blocks a writer)."""
        if self._checkpointer is not None:
            await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                await self.checkpoint()
            except sqlite3.Error:
                pass  # busy or locked: the next round catches up

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` atomically in the database thread and return its result.

        The hot paths use this instead of `transaction()`. `fn` is plain synchronous SQL, and may run
        twice (see _run_batch): it must have no effects outside the connection. Writes that arrive
        together share one BEGIN IMMEDIATE … COMMIT (group commit), and one failing `fn` rolls back
        only itself: under load a state change costs a fraction of a hand-over to aiosqlite's thread
        instead of one per statement. The result (or error) is delivered only after the COMMIT.
        """
        assert self._writer is not None, "database is not open"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def write_one(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[Row]:
        """One statement that is a whole state change by itself; its rows (RETURNING), if any.

        The same as `write` with a function of one statement (so it joins the group commit here);
        PostgreSQL runs it without BEGIN/COMMIT, one round trip instead of three."""
        return await self.write(lambda conn: conn.execute(sql, params).fetchall())

    async def write_steps(self, steps: Sequence[Step[Any]]) -> list[Any]:
        """Several repositories' parts of one state change, as one transaction (storage/steps.py)."""
        results = await self.write(lambda conn: [step.run(conn) for step in steps])
        after_commit(steps, results)
        return results

    async def _flush(self) -> None:
        writer = self._writer
        assert writer is not None
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    async with self._write_lock:
                        # aiosqlite's way to run a function on its thread; pinned in pyproject.toml
                        outcomes = await writer._execute(_run_batch, writer, [fn for fn, _ in batch])
                except BaseException as e:  # BEGIN or COMMIT failed (busy, disk): nothing was written
                    outcomes = [(False, e)] * len(batch)
                for (_, future), (ok, value) in zip(batch, outcomes):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flusher = None

    async def lookup(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """A read of one row by its key (a primary key or an index), on the event loop's own thread.

        Such a read costs SQLite microseconds, while a hand-over to aiosqlite's thread and back costs
        two thread wake-ups (~0.1–0.5 ms, more on an idle machine): a question makes several. Only for
        reads an index answers: a scan here would stall every request. In WAL mode a read never waits
        for a writer; if the file is busy anyway (a recovery, a schema change by another process), the
        read takes the thread like any other.
        """
        conn = self._lookups
        if conn is not None:
            try:
                # fetched to the end, so no read transaction stays open on this connection
                rows = conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
            else:
                return rows[0] if rows else None
        return await self.fetchone(sql, params)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        # One hop that runs the statement to its end: an open cursor on the shared reader would
        # keep its snapshot, and another coroutine's read would see stale data.
        assert self._reader is not None, "database is not open"
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

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


async def _end(conn: aiosqlite.Connection) -> None:
    """Close a connection whatever state it is in, and wait for its thread to end (aiosqlite's close
    stops the thread even when closing fails): a thread left running keeps the process from exiting,
    and one finishing after the loop closed fails noisily."""
    with contextlib.suppress(Exception):
        await asyncio.shield(conn.close())


def owner_only(path: str | Path, create: bool = True) -> None:
    """Make `path` readable by its owner only (0600), creating it empty if asked and missing.

    The database holds session ids, login tokens and the generated session secret. SQLite creates
    its -wal and -shm files with the database file's mode, so a 0600 database keeps them 0600 too;
    files made by an older version (0644) are tightened here.
    """
    path = str(path)
    if create:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    with contextlib.suppress(FileNotFoundError, PermissionError):  # another owner's file stays theirs
        os.chmod(path, 0o600)


def _lookup_connection(path: str) -> sqlite3.Connection:
    # timeout 0: a busy file falls back to the thread at once instead of blocking the event loop
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only = ON")
    return conn


def _run_batch(writer: aiosqlite.Connection, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
    """On the database thread: one transaction for the batch; one failing change rolls back only itself.

    Changes almost never fail (conflicts are handled in their SQL), so the batch first runs without
    savepoints; only if one raises is it rolled back and run again with a savepoint per change. This
    thread's Python work holds the GIL the event loop needs, and savepoints were half its statements.
    A change must therefore be repeatable: SQL on the connection, no effects outside it.
    """
    conn = writer._conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes: list[tuple[bool, Any]] = [(True, fn(conn)) for fn in fns]
        except Exception as e:
            conn.execute("ROLLBACK")
            if len(fns) == 1:
                return [(False, e)]
            conn.execute("BEGIN IMMEDIATE")
            outcomes = []
            for fn in fns:
                conn.execute("SAVEPOINT one_change")
                try:
                    outcomes.append((True, fn(conn)))
                except Exception as e:
                    conn.execute("ROLLBACK TO one_change")
                    outcomes.append((False, e))
                conn.execute("RELEASE one_change")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


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
