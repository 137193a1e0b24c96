"""Redemption codes: batches the owner makes, and a follower redeeming one (migration 0018).

Only a hash of each code is stored (the caller hashes; see bot.economics.codes). Redeeming is one
write: take a wrong-code slot for the follower (refused past the limit), the code's conditional
UPDATE (one winner however many race), the ledger's `redeem` row, and the slot given back when the
code was right. Everything a race could break is decided inside a statement, so it holds with N
processes on a shared database, not because one writer is let in at a time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from storage.db import Database
from storage.ledger import apply_entry_now

Outcome = Literal["redeemed", "mine", "used", "expired", "disabled", "invalid", "limited"]


@dataclass(frozen=True, slots=True)
class Redemption:
    outcome: Outcome
    credits: int = 0
    # for "limited": seconds until the window has passed
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class Code:
    id: int
    batch: str
    credits: int
    created_at: float
    expires_at: float | None
    disabled_at: float | None
    redeemed_by: str | None
    redeemed_at: float | None

    def state(self, now: float) -> str:
        if self.redeemed_by is not None:
            return "redeemed"
        if self.disabled_at is not None:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "open"


@dataclass(frozen=True, slots=True)
class Batch:
    batch: str
    credits: int
    total: int
    redeemed: int
    disabled: int
    expired: int
    created_at: float
    expires_at: float | None


def _code(row: Any) -> Code:
    return Code(row["id"], row["batch"], row["credits"], row["created_at"], row["expires_at"], row["disabled_at"],
                row["redeemed_by"], row["redeemed_at"])


def _redeem(conn: sqlite3.Connection, openid: str, code_hash: str, now: float, limit: int,
            window: float) -> Redemption:
    since = now - window
    # A slot first, whatever the code: the upsert locks the follower's row, so concurrent guesses by
    # one follower queue here and each sees the others' count.
    slot = conn.execute(
        "INSERT INTO redeem_guard (openid, window_start, failures) VALUES (?, ?, 1)"
        " ON CONFLICT (openid) DO UPDATE SET"
        " failures = CASE WHEN redeem_guard.window_start <= ? THEN 1 ELSE redeem_guard.failures + 1 END,"
        " window_start = CASE WHEN redeem_guard.window_start <= ? THEN excluded.window_start"
        " ELSE redeem_guard.window_start END"
        " WHERE redeem_guard.window_start <= ? OR redeem_guard.failures < ? RETURNING failures",
        (openid, now, since, since, since, limit)).fetchall()
    if not slot:
        row = conn.execute("SELECT window_start FROM redeem_guard WHERE openid = ?", (openid,)).fetchone()
        return Redemption("limited", retry_after=max(0.0, row["window_start"] + window - now))
    won = conn.execute(
        "UPDATE redeem_codes SET redeemed_by = ?, redeemed_at = ? WHERE code_hash = ? AND redeemed_by IS NULL"
        " AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > ?) RETURNING id, credits",
        (openid, now, code_hash, now)).fetchall()
    if won:
        code_id, credits = won[0]["id"], won[0]["credits"]
        apply_entry_now(conn, openid, "redeem", credits, f"code:{code_id}", now)
        outcome: Redemption = Redemption("redeemed", credits)
    else:
        row = conn.execute("SELECT * FROM redeem_codes WHERE code_hash = ?", (code_hash,)).fetchone()
        if row is None:
            return Redemption("invalid")  # the slot stays taken: this is what the limit counts
        code = _code(row)
        if code.redeemed_by == openid:
            outcome = Redemption("mine", code.credits)
        elif code.redeemed_by is not None:
            outcome = Redemption("used")
        elif code.disabled_at is not None:
            outcome = Redemption("disabled")
        else:
            outcome = Redemption("expired")
    # A real code (won, or lost to someone) is no guess: the slot is given back.
    conn.execute("UPDATE redeem_guard SET failures = failures - 1 WHERE openid = ? AND failures > 0", (openid,))
    return outcome


class CodeRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def redeem(self, openid: str, code_hash: str, *, limit: int, window: float) -> Redemption:
        """Redeem the code with this hash for `openid`, exactly once across every process."""
        now = self.clock()
        return await self.db.write(lambda conn: _redeem(conn, openid, code_hash, now, limit, window))

    async def add_batch(self, batch: str, credits: int, hashes: Sequence[str], expires_at: float | None) -> list[int]:
        """Store a batch of codes (their hashes), in one transaction; their ids, in order."""
        now = self.clock()
        ids = []
        async with self.db.transaction() as conn:
            for h in hashes:
                rows = list(await conn.execute_fetchall(
                    "INSERT INTO redeem_codes (code_hash, batch, credits, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING id", (h, batch, credits, now, expires_at)))
                ids.append(rows[0]["id"])
        return ids

    async def batches(self) -> list[Batch]:
        now = self.clock()
        rows = await self.db.fetchall(
            "SELECT batch, MAX(credits) AS credits, COUNT(*) AS total,"
            " COUNT(*) FILTER (WHERE redeemed_by IS NOT NULL) AS redeemed,"
            " COUNT(*) FILTER (WHERE redeemed_by IS NULL AND disabled_at IS NOT NULL) AS disabled,"
            " COUNT(*) FILTER (WHERE redeemed_by IS NULL AND disabled_at IS NULL AND expires_at <= ?) AS expired,"
            " MIN(created_at) AS created_at, MAX(expires_at) AS expires_at"
            " FROM redeem_codes GROUP BY batch ORDER BY MIN(id)", (now,))
        return [Batch(r["batch"], r["credits"], r["total"], r["redeemed"], r["disabled"], r["expired"],
                      r["created_at"], r["expires_at"]) for r in rows]

    async def by_hash(self, code_hash: str) -> Code | None:
        row = await self.db.fetchone("SELECT * FROM redeem_codes WHERE code_hash = ?", (code_hash,))
        return _code(row) if row else None

    async def in_batch(self, batch: str, limit: int = 1000) -> list[Code]:
        rows = await self.db.fetchall("SELECT * FROM redeem_codes WHERE batch = ? ORDER BY id LIMIT ?", (batch, limit))
        return [_code(r) for r in rows]

    async def disable(self, *, code_hash: str | None = None, batch: str | None = None) -> int:
        """Disable one code or every unredeemed code of a batch; how many changed (a redeemed code stays
        redeemed: its credits were given)."""
        assert (code_hash is None) != (batch is None), "one code or one batch"
        column, value = ("code_hash", code_hash) if code_hash is not None else ("batch", batch)
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall(
                f"UPDATE redeem_codes SET disabled_at = ? WHERE {column} = ? AND redeemed_by IS NULL"
                " AND disabled_at IS NULL RETURNING id", (self.clock(), value))
            return len(list(rows))
