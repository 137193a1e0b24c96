"""Single statements are pipelined on a few connections (storage/pgpipeline.py). Each must still be
its own transaction, get its own rows or error, and survive what happens to its neighbours: a
failure, a cancelled caller, a lock wait, a lost connection. Statements written together are one
transaction; wake-ups announced together leave together; a flood past the room in flight is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import psycopg.errors
import pytest

from storage import pgpipeline
from storage.postgres import PostgresDatabase

# pool_size 2: one connection for write functions, one pipelined connection for every statement
ONE_PIPELINE = 2


async def test_statements_in_one_pipeline_commit_alone(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as db:
        await db.write_one("CREATE TABLE pipe_alone (id BIGINT PRIMARY KEY)")
        insert = "INSERT INTO pipe_alone (id) VALUES (?)"
        results = await asyncio.gather(db.write_one(insert, (1,)), db.write_one(insert, (1,)),
                                       db.write_one(insert, (2,)), return_exceptions=True)
        assert results[0] == [] and results[2] == []
        assert isinstance(results[1], psycopg.errors.UniqueViolation)
        # the failure between them rolled back neither neighbour
        rows = await db.fetchall("SELECT id FROM pipe_alone ORDER BY id")
        assert [r["id"] for r in rows] == [1, 2]


def test_statements_sync_without_a_flush_each_where_libpq_has_it():
    # libpq 17+ (psycopg's wheels bring 18): otherwise every statement costs a send() of its own
    if psycopg.pq.version() >= 170000:
        assert pgpipeline._SYNC_WITHOUT_FLUSH is not None


@pytest.mark.parametrize("flush_each", [False, True], ids=["send-sync", "sync-and-flush"])
async def test_each_statement_gets_its_own_rows_or_error(postgres_url: str, flush_each: bool, monkeypatch):
    if flush_each:  # the path taken where PQsendPipelineSync cannot be found
        monkeypatch.setattr(pgpipeline, "_SYNC_WITHOUT_FLUSH", None)
    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as db:
        async def one(i: int) -> object:
            if i % 7 == 0:  # a failing statement among them, prepared after its first run like the others
                return await db.fetchone("SELECT 1 / (? - ?) AS x", (i, i))
            if i % 3 == 0:  # several rows
                return [r["n"] for r in await db.fetchall("SELECT generate_series(1, ?) AS n", (i,))]
            return (await db.fetchone("SELECT CAST(? AS BIGINT) * 2 AS twice, ? AS label", (i, f"q{i}")))

        results = await asyncio.gather(*(one(i) for i in range(1, 201)), return_exceptions=True)
        for i, got in enumerate(results, 1):
            if i % 7 == 0:
                assert isinstance(got, psycopg.errors.DivisionByZero), (i, got)
            elif i % 3 == 0:
                assert got == list(range(1, i + 1)), i
            else:
                assert (got["twice"], got["label"]) == (2 * i, f"q{i}"), (i, got)


async def test_a_cancelled_caller_leaves_the_connection_in_step(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as db:
        await db.write_one("CREATE TABLE pipe_cancel (id BIGINT PRIMARY KEY)")
        slow = asyncio.ensure_future(db.write_one(
            "INSERT INTO pipe_cancel (id) SELECT 7 FROM pg_sleep(0.3)"))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # the next statements on the same connection get their own results, not the cancelled one's
        assert (await db.fetchone("SELECT 2 AS two"))["two"] == 2
        # the statement itself ran to its end (a cancelled caller does not cancel a sent statement)
        assert (await db.fetchone("SELECT count(*) AS n FROM pipe_cancel"))["n"] == 1


async def test_a_statement_that_fails_to_prepare_says_why(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as db:
        query = "SELECT id FROM pipe_later WHERE id = ?"
        for _ in range(3):  # the second run is the one prepared: its error is the table's, not the pipeline's
            with pytest.raises(psycopg.errors.UndefinedTable):
                await db.fetchone(query, (1,))
        await db.write_one("CREATE TABLE pipe_later (id BIGINT PRIMARY KEY)")
        await db.write_one("INSERT INTO pipe_later (id) VALUES (1)")
        for _ in range(3):
            assert (await db.fetchone(query, (1,)))["id"] == 1


async def test_a_lock_wait_holds_up_only_its_own_connection(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=6) as db:  # four pipelined connections
        await db.write_one("CREATE TABLE pipe_lock (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        await db.write_one("INSERT INTO pipe_lock (id, n) VALUES (1, 0)")
        async with db.transaction() as conn:
            await conn.execute("UPDATE pipe_lock SET n = n + 1 WHERE id = 1")  # the row stays locked
            waiting = asyncio.ensure_future(db.write_one("UPDATE pipe_lock SET n = n + 10 WHERE id = 1"))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            started = time.monotonic()
            for i in range(50):
                assert (await db.fetchone("SELECT CAST(? AS BIGINT) AS i", (i,)))["i"] == i
            assert time.monotonic() - started < 2.0
            assert not waiting.done()
        await asyncio.wait_for(waiting, 5)
        assert (await db.fetchone("SELECT n FROM pipe_lock WHERE id = 1"))["n"] == 11


async def test_a_lost_connection_fails_its_statements_and_is_replaced(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as db:
        pid = (await db.fetchone("SELECT pg_backend_pid() AS pid"))["pid"]
        sleeping = asyncio.ensure_future(db.fetchone("SELECT pg_sleep(30)"))
        queued = asyncio.ensure_future(db.fetchone("SELECT 1 AS one"))
        await asyncio.sleep(0.1)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        for statement in (sleeping, queued):  # at once, not after the sleep
            with pytest.raises(psycopg.OperationalError):
                await asyncio.wait_for(statement, 5)
        row = await db.fetchone("SELECT pg_backend_pid() AS pid")
        assert row["pid"] != pid
        assert (await db.fetchone("SELECT 3 AS three"))["three"] == 3


async def test_closing_lets_statements_in_flight_end(postgres_url: str):
    db = await PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE).open()
    await db.write_one("CREATE TABLE pipe_close (id BIGINT PRIMARY KEY)")
    last = asyncio.ensure_future(db.write_one("INSERT INTO pipe_close (id) SELECT 1 FROM pg_sleep(0.3) RETURNING id"))
    await asyncio.sleep(0.05)
    await db.close()  # a shutdown's last write was already sent: it ends, and its caller hears so
    assert [r["id"] for r in await last] == [1]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM pipe_close").fetchone()[0] == 1


async def test_statements_written_together_are_one_transaction(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as db:
        await db.write_one("CREATE TABLE pipe_together (id BIGINT PRIMARY KEY)")
        insert = "INSERT INTO pipe_together (id) VALUES (?) RETURNING id"
        # a single statement between the two batches, on the same connection, keeps its own fate
        ok, alone, failed = await asyncio.gather(
            db.write_together([(insert, (1,)), (insert, (2,))]),
            db.write_one(insert, (3,)),
            db.write_together([(insert, (4,)), (insert, (1,)), (insert, (5,))]),
            return_exceptions=True)
        assert [[r["id"] for r in rows] for rows in ok] == [[1], [2]]
        assert [r["id"] for r in alone] == [3]
        # the second statement's error is the one raised; the first's row went with it, the third never ran
        assert isinstance(failed, psycopg.errors.UniqueViolation)
        rows = await db.fetchall("SELECT id FROM pipe_together ORDER BY id")
        assert [r["id"] for r in rows] == [1, 2, 3]
        # and the connection is in step afterwards
        assert [[r["n"] for r in rows] for rows in await db.write_together(
            [("SELECT CAST(? AS BIGINT) AS n", (7,)), ("SELECT CAST(? AS BIGINT) AS n", (8,))])] == [[7], [8]]


async def test_statements_together_share_their_transaction_settings(postgres_url: str):
    # announce's set_config lasts exactly its own transaction: the next statement on the same
    # connection commits synchronously again (as this database's sessions do: the test cluster's
    # own default is off)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()[0]
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as db:
        show = "SELECT current_setting('synchronous_commit') AS s"
        first, second = await db.write_together(
            [("SELECT set_config('synchronous_commit', 'off', true)", ()), (show, ())])
        assert second[0]["s"] == "off"
        assert (await db.fetchone(show))["s"] == "on"


async def test_wake_ups_announced_together_leave_together_and_each_wakes_its_waiter(postgres_url: str):
    from storage.postgres import ANNOUNCE_WINDOW

    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as here, \
            PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as there:
        keys = [f"answer:{i}" for i in range(40)]
        waiting = [asyncio.create_task(here.changed(k, 5.0)) for k in keys]
        bystander = asyncio.create_task(here.changed("answer:not-announced", 1.0))
        await asyncio.sleep(0.5)  # the LISTEN is in place
        before = (await there.fetchone("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
        started = time.perf_counter()
        for k in keys:
            there.announce(k)
        await asyncio.wait_for(asyncio.gather(*waiting), 3)
        assert time.perf_counter() - started < 1.0 and not bystander.done()
        await asyncio.sleep(ANNOUNCE_WINDOW * 5)
        after = (await there.fetchone("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
        # one transaction for the forty (and the reads around it), not forty
        assert after["xact_commit"] - before["xact_commit"] < 10
        # a key announced as the database closes still leaves
        last = asyncio.create_task(here.changed("answer:last", 5.0))
        await asyncio.sleep(0.1)
        there.announce("answer:last")
    await asyncio.wait_for(last, 3)
    await bystander


@asynccontextmanager
async def narrow_pipeline(postgres_url: str, room_wait: float) -> AsyncIterator[tuple[PostgresDatabase, pgpipeline.PipelinedStatements, str]]:
    """One pipelined connection with room for 3 statements in flight, a database to hold a row lock
    with, and a statement that waits for that lock."""
    from storage.pgconn import configure_async

    async with PostgresDatabase(postgres_url, pool_size=ONE_PIPELINE) as db:
        await db.write_one("CREATE TABLE pipe_room (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        await db.write_one("INSERT INTO pipe_room (id, n) VALUES (1, 0)")
        statements = pgpipeline.PipelinedStatements(postgres_url, 1, configure_async, in_flight_max=3,
                                                    room_wait=room_wait)
        await statements.open()
        try:
            yield db, statements, "UPDATE pipe_room SET n = n + 1 WHERE id = 1"
        finally:
            await statements.close()


async def test_a_flood_past_the_room_in_flight_is_refused_not_queued_without_bound(postgres_url: str):
    async with narrow_pipeline(postgres_url, room_wait=0.3) as (db, statements, bump):
        async with db.transaction() as conn:
            await conn.execute(bump)  # the row stays locked
            stuck = [asyncio.ensure_future(statements.run(bump, ())) for _ in range(2)]
            await asyncio.sleep(0.1)
            started = time.monotonic()
            together = asyncio.ensure_future(statements.run_together([(bump, ()), ("SELECT 1", ())]))
            with pytest.raises(pgpipeline.StorageBusy):  # the fourth and fifth have no room
                await together
            assert 0.25 < time.monotonic() - started < 2.0
            assert not any(s.done() for s in stuck)
        # the lock is gone: those in flight end, and the room is back (three at once fit again)
        await asyncio.wait_for(asyncio.gather(*stuck), 5)
        got = await asyncio.wait_for(asyncio.gather(*(statements.run("SELECT 2 AS two", ()) for _ in range(3))), 5)
        assert [rows[0]["two"] for rows in got] == [2, 2, 2]
        rows = await statements.run("SELECT n FROM pipe_room WHERE id = 1", ())
        assert rows[0]["n"] == 3  # the transaction's bump and the two that waited; the refused pair never ran


async def test_a_statement_waiting_for_room_goes_as_soon_as_results_make_some(postgres_url: str):
    async with narrow_pipeline(postgres_url, room_wait=5.0) as (db, statements, bump):
        async with db.transaction() as conn:
            await conn.execute(bump)  # the row stays locked
            stuck = [asyncio.ensure_future(statements.run(bump, ())) for _ in range(3)]
            waiting = asyncio.ensure_future(statements.run("SELECT 4 AS four", ()))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # no room: not even sent
        started = time.monotonic()
        assert (await asyncio.wait_for(waiting, 5))[0]["four"] == 4
        assert time.monotonic() - started < 1.0  # woken by the results, not the 5 s wait
        await asyncio.gather(*stuck)
