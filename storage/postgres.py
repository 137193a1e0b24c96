"""The PostgreSQL engine: several mpgpt hosts on one database ([storage] url).

The same surface as storage.db.Database (SQLite), so repositories do not know which engine they run
on. `pool_size` connections are shared out:
- single statements (reads, `write_one`) run on the event loop, pipelined on two thirds of the
  connections (storage.pgpipeline): under load a thread hand-over per statement cost ~350 µs of CPU,
  psycopg's async cursors on a pool ~150 µs, a pipelined statement ~50 µs;
- write functions of several steps (`write(fn)`, `transaction()`, bulk copies) keep SQLite's
  synchronous shape and run on a thread per connection (a third of the connections).

No group commit here: on PostgreSQL a batch of unrelated writes would hold every row lock of the
batch until its COMMIT (and deadlock against another host's batch), while concurrent commits share
their WAL flush anyway. Each `write(fn)` is one short transaction of its own, retried when
PostgreSQL gives up on it (serialization failure, deadlock): `fn` must be repeatable, as on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from storage.pgconn import AsyncPgConn, PgConn, Row, configure, configure_async, translated
from storage.pgnotify import CHANNEL, Notifications
from storage.pgpipeline import IN_FLIGHT_MAX, ROOM_WAIT, PipelinedStatements
from storage.steps import Step, after_commit

T = TypeVar("T")

# pg_advisory_lock key held while migrations run: two hosts starting at once apply each migration once
MIGRATION_LOCK = 0x6D70677074  # "mpgpt"
_RETRIED = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
# a write PostgreSQL gave up on is tried this many times in all, after a growing random pause
ATTEMPTS = 8


# set_config(..., true) lasts to the end of this statement's own transaction, whose commit reads it
_ASYNC_COMMIT = "SELECT set_config('synchronous_commit', 'off', true)"
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', key) FROM unnest(CAST(%s AS TEXT[])) AS key"
# how long announced keys wait to leave together (one NOTIFY transaction for all of them)
ANNOUNCE_WINDOW = 0.01


def _pause(attempt: int) -> float:
    return random.uniform(0, 0.002 * 2**attempt)


class StorageUnavailable(Exception):
    """The database named by the URL cannot be used (bad URL, unreachable, refused)."""


def redact(url: str) -> str:
    """The URL without its password (for logs and error lines)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def pg_migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in (resources.files("storage.migrations") / "postgresql").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class PostgresDatabase:
    engine = "postgresql"
    path = None

    def __init__(self, url: str, pool_size: int = 10, connect_timeout: float = 5.0, *,
                 in_flight_max: int = IN_FLIGHT_MAX, room_wait: float = ROOM_WAIT) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        # the bound on statements in flight per pipelined connection, and the wait for room (StorageBusy)
        self.in_flight_max = in_flight_max
        self.room_wait = room_wait
        # a third of the connections for write functions (threads), the rest for single statements
        self.threads = max(1, pool_size // 3)
        self.statements = max(1, pool_size - self.threads)
        self._pool: ConnectionPool | None = None
        self._statements: PipelinedStatements | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._offset = 0.0
        self._notes: Notifications | None = None  # LISTEN, from the first wait on (servers, not commands)
        self._announcing: set[asyncio.Future] = set()
        self._unannounced: set[str] = set()
        self._announce_soon: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"PostgresDatabase({redact(self.url)!r})"

    async def _hop(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "database is not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # One slot per connection, taken on the loop: a thread never blocks waiting for a connection,
        # so a transaction holding a lock always finds a thread for its next statement.
        assert self._slots is not None, "database is not open"
        async with self._slots:
            return await self._hop(fn, *args)

    async def open(self, migrate: bool = True) -> "PostgresDatabase":
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="mpgpt-pg")
        self._slots = asyncio.Semaphore(self.threads)
        try:
            await self._hop(self._check)
            # every connection up front: none is made while a request waits
            connect = {"connect_timeout": max(1, round(self.connect_timeout))}
            self._pool = ConnectionPool(self.url, min_size=self.threads, max_size=self.threads,
                                        configure=configure, open=False, timeout=30.0, name="mpgpt",
                                        kwargs=connect)
            await self._hop(functools.partial(self._pool.open, wait=True, timeout=self.connect_timeout))
            self._statements = PipelinedStatements(self.url, self.statements, configure_async,
                                                   in_flight_max=self.in_flight_max, room_wait=self.room_wait,
                                                   **connect)
            await self._statements.open()
            await self.sync_clock()
            if migrate:
                await self.migrate()
        except BaseException:
            await self.close()
            raise
        return self

    def _check(self) -> None:
        # A direct connection first: the pool would only say it timed out, this says why.
        try:
            conn = psycopg.connect(self.url, connect_timeout=max(1, round(self.connect_timeout)))
        except (psycopg.Error, ValueError) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise StorageUnavailable(f"cannot connect to {redact(self.url)}: {reason}") from None
        conn.close()

    async def close(self) -> None:
        self._announce_now()  # the last writes' wake-ups leave before the connections close
        if self._announcing:
            await asyncio.wait(set(self._announcing), timeout=ANNOUNCE_WINDOW * 100)
        notes, self._notes = self._notes, None
        if notes is not None:
            await notes.close()
        statements, self._statements = self._statements, None
        if statements is not None:
            await statements.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._hop(pool.close)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> "PostgresDatabase":
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def where(self) -> str:
        return redact(self.url)

    def latest_version(self) -> int:
        return latest_pg_schema_version()

    def clock(self) -> float:
        """Now by the database server's clock (this host's clock plus its measured offset): leases
        and claims written by different hosts compare one clock, so hosts need no NTP."""
        return time.time() + self._offset

    async def sync_clock(self) -> None:
        """Measure this host's clock against the server's (the middle of one round trip)."""
        self._offset = await self._run(self._measure_offset)

    def _measure_offset(self) -> float:
        assert self._pool is not None, "database is not open"
        with self._pool.connection() as raw:
            before = time.time()
            server = raw.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0]
            after = time.time()
        return float(server) - (before + after) / 2

    async def changed(self, key: str, timeout: float) -> None:
        """Wait until a write on any host announces `key` (`announce`), at most `timeout`."""
        if self._notes is None:
            self._notes = Notifications(self.url, self.connect_timeout)
        await self._notes.changed(key, timeout)

    def announce(self, key: str) -> None:
        """Wake whoever on any host waits on `key` (`changed`), after the write that changed it committed.

        A NOTIFY of its own, not part of that write: PostgreSQL serializes every committing
        transaction that notifies, database-wide, on one lock held through its commit, so writes
        that notified committed one at a time across all hosts. Keys announced within
        ANNOUNCE_WINDOW leave together, in one transaction whose commit is asynchronous (it does not
        wait for the WAL flush its commit record would otherwise cost): a wake-up needs no
        durability, and a few milliseconds more cost a waiter on another host nothing it would
        notice. Sent without waiting (its waiters poll anyway if it is lost)."""
        if self._statements is None:
            return
        self._unannounced.add(key)
        if self._announce_soon is None:
            self._announce_soon = asyncio.get_running_loop().call_later(ANNOUNCE_WINDOW, self._announce_now)

    def _announce_now(self) -> None:
        if self._announce_soon is not None:
            self._announce_soon.cancel()
            self._announce_soon = None
        keys, self._unannounced = sorted(self._unannounced), set()
        if not keys or self._statements is None:
            return
        sent = asyncio.ensure_future(self._statements.run_together([(_ASYNC_COMMIT, ()), (_NOTIFY, (keys,))]))
        self._announcing.add(sent)
        sent.add_done_callback(self._announced)

    def _announced(self, sent: asyncio.Future) -> None:
        self._announcing.discard(sent)
        if not sent.cancelled():
            sent.exception()  # a lost wake-up costs a waiter one poll interval, nothing else

    async def checkpoint(self) -> None:
        """SQLite's WAL checkpoint; PostgreSQL checkpoints on its own."""

    # -- writes ---------------------------------------------------------------------------------

    async def write(self, fn: Callable[[PgConn], T]) -> T:
        """Run `fn(conn)` in a transaction of its own on a pool thread; retried if PostgreSQL aborts it."""
        return await self._run(self._write, fn)

    def _write(self, fn: Callable[[PgConn], T]) -> T:
        assert self._pool is not None, "database is not open"
        for attempt in range(ATTEMPTS):
            try:
                with self._pool.connection() as raw, raw.transaction():
                    return fn(PgConn(raw))
            except _RETRIED:
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(_pause(attempt))
        raise AssertionError("unreachable")

    async def write_one(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[Row]:
        """One statement that is a whole state change by itself; its rows (RETURNING), if any.

        Sent on an autocommit connection, where PostgreSQL makes the statement its own transaction:
        one round trip instead of BEGIN, the statement and COMMIT (a question makes about a dozen
        writes). Repositories reach the same with several steps in one statement (data-modifying
        WITH) where a step does not need to see what a concurrent one committed after it began."""
        (rows,) = await self.write_together([(sql, params)])
        return rows

    async def write_steps(self, steps: Sequence[Step[Any]]) -> list[Any]:
        """Several repositories' parts of one state change, as one transaction (storage/steps.py):
        where each part is one statement, they share one Sync on a pipelined connection (one round
        trip, one commit); otherwise a transaction on a pool thread."""
        statements = [step.statement for step in steps]
        if any(s is None for s in statements):
            results = await self.write(lambda conn: [step.run(conn) for step in steps])
        else:
            rows = await self.write_together(statements)  # type: ignore[arg-type]
            results = [step.read(r) if step.read is not None else r for step, r in zip(steps, rows, strict=True)]
        after_commit(steps, results)
        return results

    async def write_together(self, statements: Sequence[tuple[str, Iterable[Any] | Mapping[str, Any]]]
                             ) -> list[list[Row]]:
        """Statements that make one state change together: one transaction, one round trip; each
        one's rows. Retried as a whole if PostgreSQL aborts it."""
        assert self._statements is not None, "database is not open"
        sent = [translated(sql, params) for sql, params in statements]
        for attempt in range(ATTEMPTS):
            try:
                return await self._statements.run_together(sent)
            except _RETRIED:
                if attempt == ATTEMPTS - 1:
                    raise
                await asyncio.sleep(_pause(attempt))
        raise AssertionError("unreachable")

    async def _statement(self, sql: str, params: Iterable[Any] | Mapping[str, Any]) -> list[Row]:
        """One statement, its own transaction, run to its end on a pipelined connection."""
        assert self._statements is not None, "database is not open"
        return await self._statements.run(*translated(sql, params))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncPgConn]:
        """One atomic state change whose steps await: BEGIN ... COMMIT, or ROLLBACK on any error."""
        assert self._pool is not None and self._slots is not None, "database is not open"
        pool = self._pool
        async with self._slots:
            raw = await self._hop(pool.getconn)
            try:
                await self._hop(raw.execute, "BEGIN")
                try:
                    yield AsyncPgConn(raw, self._hop)
                    await self._hop(raw.execute, "COMMIT")
                except BaseException:
                    # a cancelled statement still runs on its thread: the ROLLBACK queues behind it
                    with contextlib.suppress(psycopg.Error):
                        await asyncio.shield(self._hop(raw.execute, "ROLLBACK"))
                    raise
            finally:
                pool.putconn(raw)

    async def with_connection(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """`fn(conn)` on a thread with a pool connection of its own (bulk work: copies, dumps)."""
        def run() -> T:
            assert self._pool is not None, "database is not open"
            with self._pool.connection() as raw:
                return fn(raw)
        return await self._run(run)

    # -- reads ----------------------------------------------------------------------------------

    async def lookup(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """A read of one row by its key (on SQLite this one skips the thread; here every read is a
        statement on the loop's connections, like fetchone)."""
        return await self.fetchone(sql, params)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        rows = await self._statement(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return await self._statement(sql, params)

    # -- migrations -----------------------------------------------------------------------------

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
        if not row or not row["present"]:
            return 0
        row = await self.fetchone("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        return int(row["v"]) if row else 0

    async def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction, under an advisory lock: hosts that
        start together wait for the first one instead of applying a migration twice."""
        return await self._run(self._migrate)

    def _migrate(self) -> list[int]:
        assert self._pool is not None, "database is not open"
        applied = []
        with self._pool.connection() as raw:
            raw.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                raw.execute("CREATE TABLE IF NOT EXISTS schema_migrations"
                            " (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
                done = {r[0] for r in raw.execute("SELECT version FROM schema_migrations").fetchall()}
                for number, name, sql in pg_migrations():
                    if number in done:
                        continue
                    with raw.transaction():
                        raw.execute(sql)  # no parameters: the whole file in one round trip
                        raw.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                                    (number, name, time.time()))
                    applied.append(number)
            finally:
                raw.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        return applied


def latest_pg_schema_version() -> int:
    found = pg_migrations()
    return found[-1][0] if found else 0
