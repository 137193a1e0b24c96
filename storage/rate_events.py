"""Questions counted by the per-user rate limit, in storage so every process sees the same count."""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from storage.db import Database
from storage.dialect import serialize


class RateCount(NamedTuple):
    """One question to count: refused when the user has `limit` events after `since`; else at `now`."""

    limit: int
    since: float
    now: float


# PostgreSQL: the steps of count_now in one call (migration 0025), after the user's advisory lock.
ADMIT_PG = ("SELECT mpgpt_admit_question(?, CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION),"
            " CAST(? AS DOUBLE PRECISION)) AS admitted")


def count_now(conn: sqlite3.Connection, openid: str, count: RateCount) -> bool:
    """RateEvents.admit inside one BEGIN IMMEDIATE transaction (SQLite, which makes it serial)."""
    conn.execute("DELETE FROM rate_events WHERE openid = ? AND at <= ?", (openid, count.since))
    return bool(conn.execute(
        "INSERT INTO rate_events (openid, at) SELECT ?, ?"
        " WHERE (SELECT COUNT(*) FROM rate_events WHERE openid = ? AND at > ?) < ? RETURNING at",
        (openid, count.now, openid, count.since, count.limit)).fetchall())


class RateEvents:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def admit(self, openid: str, limit: int, window: float, now: float) -> bool:
        """Count one question unless the user already has `limit` within the last `window` seconds.

        One INSERT ... SELECT decides, and on PostgreSQL an advisory lock per user makes that
        count-then-insert serial (READ COMMITTED would let two hosts count the same rows). Refused
        questions are not counted: a user who waits out the window gets in again. The user's own
        expired events are pruned in the same transaction. (storage.ledger's admit_and_reserve makes
        the same count together with the question's reservation.)"""
        count = RateCount(limit, now - window, now)
        if self.db.engine == "postgresql":  # the same steps in one call (migration 0025): one round trip
            rows = await self.db.write_one(ADMIT_PG, (openid, *count))
            return bool(rows[0]["admitted"])
        return await self.db.write(lambda conn: count_now(conn, openid, count))

    async def prune(self, before: float) -> int:
        """Drop every event older than `before` (users who stopped writing); returns how many."""
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall("DELETE FROM rate_events WHERE at < ? RETURNING at", (before,))
            return len(list(rows))


class Attempts:
    """Attempts per subject (a follower's 登录 codes, their orders), limited within a window."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def admit(self, subject: str, limit: int, window: float, now: float) -> bool:
        """Count one attempt unless `subject` made `limit` within the last `window` seconds (one
        INSERT ... SELECT decides, as in RateEvents.admit)."""
        since = now - window

        def run(conn: sqlite3.Connection) -> bool:
            serialize(conn, "attempts:" + subject)
            conn.execute("DELETE FROM attempts WHERE subject = ? AND at <= ?", (subject, since))
            return bool(conn.execute(
                "INSERT INTO attempts (subject, at) SELECT ?, ?"
                " WHERE (SELECT COUNT(*) FROM attempts WHERE subject = ? AND at > ?) < ? RETURNING at",
                (subject, now, subject, since, limit)).fetchall())

        return await self.db.write(run)

    async def prune(self, before: float) -> int:
        return await self.db.write(lambda conn: conn.execute("DELETE FROM attempts WHERE at < ?", (before,)).rowcount)
