"""storage.db.Database itself: group-committed writes and point reads on the event loop's thread."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest

from storage.db import Database


def _insert(openid: str):
    def run(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO users (openid, first_seen, last_seen) VALUES (?, 0, 0)", (openid,))
        return openid
    return run


async def test_writes_arriving_together_commit_together_and_a_failing_one_rolls_back_alone(db: Database):
    await db.write(_insert("o_taken"))
    results = await asyncio.gather(*(db.write(_insert(o)) for o in ("o_a", "o_taken", "o_b")),
                                   return_exceptions=True)
    assert results[0] == "o_a" and results[2] == "o_b"
    assert isinstance(results[1], (sqlite3.IntegrityError, psycopg.IntegrityError))
    rows = await db.fetchall("SELECT openid FROM users ORDER BY openid")
    assert [r["openid"] for r in rows] == ["o_a", "o_b", "o_taken"]


async def test_a_lookup_sees_what_another_process_committed_at_once(db: Database, tmp_path: Path):
    assert await db.lookup("SELECT openid FROM users WHERE openid = ?", ("o_other",)) is None
    if db.engine == "sqlite":
        other = sqlite3.connect(tmp_path / "mpgpt.db", isolation_level=None)
    else:
        other = psycopg.connect(db.url, autocommit=True)
    other.execute("INSERT INTO users (openid, first_seen, last_seen) VALUES ('o_other', 0, 0)")
    other.close()
    row = await db.lookup("SELECT openid FROM users WHERE openid = ?", ("o_other",))
    assert row is not None and row["openid"] == "o_other"


async def test_lookup_refuses_to_write(db: Database):
    if db.engine != "sqlite":
        pytest.skip("SQLite's lookups run on a read-only connection of their own; PostgreSQL's share the pool")
    with pytest.raises(sqlite3.OperationalError):
        await db.lookup("INSERT INTO users (openid, first_seen, last_seen) VALUES ('o_w', 0, 0) RETURNING openid")


async def test_a_change_that_fails_half_way_leaves_nothing_and_its_batch_mates_commit_once(db: Database):
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO users (openid, first_seen, last_seen) VALUES ('o_half', 0, 0)")
        raise RuntimeError("failed after its first statement")

    def count_up(conn: sqlite3.Connection) -> int:
        # run twice by the retry, it would still count once: its first run was rolled back
        conn.execute("INSERT INTO users (openid, first_seen, last_seen) VALUES ('o_count', 0, 0)"
                     " ON CONFLICT (openid) DO UPDATE SET last_seen = users.last_seen + 1")
        return conn.execute("SELECT last_seen FROM users WHERE openid = 'o_count'").fetchone()[0]

    results = await asyncio.gather(db.write(_insert("o_before")), db.write(half_then_fail), db.write(count_up),
                                   return_exceptions=True)
    assert results[0] == "o_before" and isinstance(results[1], RuntimeError) and results[2] == 0
    assert await db.lookup("SELECT 1 FROM users WHERE openid = 'o_half'") is None
    assert (await db.lookup("SELECT last_seen FROM users WHERE openid = 'o_count'"))["last_seen"] == 0


async def test_text_with_a_nul_character_is_stored_without_it_rather_than_failing(db: Database):
    # PostgreSQL's text cannot hold NUL; a follower's or a model's NUL must not fail the write there
    await db.write(_insert("o_nul"))
    await db.write(lambda conn: conn.execute("UPDATE users SET model = ? WHERE openid = 'o_nul'", ("gpt\x00-4o",)))
    stored = (await db.lookup("SELECT model FROM users WHERE openid = 'o_nul'"))["model"]
    assert stored.replace("\x00", "") == "gpt-4o"
