"""What the companion page shows a user of their own activity: credit movements and recent answers."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Database
from storage.ledger import Entry


@dataclass(frozen=True, slots=True)
class Use:
    model: str
    started_at: float
    outcome: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Movement:
    """A ledger row as the follower reads it: an answer's reserve with its settle folded in (what the
    answer cost), the answer's model and whether its usage was estimated."""

    entry: Entry
    model: str | None = None
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Charge:
    """What one answer cost, in milli-credits."""

    gen_key: str
    model: str | None
    milli: int
    estimated: bool
    at: float


class UsageRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def movements(self, openid: str, limit: int, offset: int) -> list[Movement]:
        """Ledger rows that moved credits, newest first. A settle row is folded into its reserve's (a
        token-priced settle gives back what the answer did not spend), so an answer is one line: its cost."""
        rows = await self.db.fetchall(
            "SELECT l.id, l.kind, l.amount + COALESCE(s.amount, 0) AS amount,"
            " l.daily_amount + COALESCE(s.daily_amount, 0) AS daily_amount, l.ref, l.created_at,"
            " l.amount_milli + COALESCE(s.amount_milli, 0) AS amount_milli,"
            " l.daily_milli + COALESCE(s.daily_milli, 0) AS daily_milli, a.model, r.estimated"
            " FROM ledger l"
            " LEFT JOIN ledger s ON l.kind = 'reserve' AND s.openid = l.openid AND s.kind = 'settle' AND s.ref = l.ref"
            " LEFT JOIN reservations r ON l.kind = 'reserve' AND r.gen_key = l.ref"
            " LEFT JOIN answers a ON l.kind = 'reserve' AND a.msg_key = l.ref"
            " WHERE l.openid = ? AND l.kind != 'settle'"
            " AND (l.amount != 0 OR l.daily_amount != 0 OR l.amount_milli != 0 OR l.daily_milli != 0)"
            " ORDER BY l.id DESC LIMIT ? OFFSET ?", (openid, limit, offset))
        return [Movement(Entry(*tuple(r)[:8]), r["model"], bool(r["estimated"])) for r in rows]

    async def charges(self, openid: str, limit: int) -> list[Charge]:
        """The latest answers the follower paid for, newest first, with what each cost."""
        rows = await self.db.fetchall(
            "SELECT r.gen_key, a.model, CASE WHEN r.spent_milli IS NULL THEN r.amount * 1000 ELSE r.spent_milli END"
            " AS milli, r.estimated, r.finished_at FROM reservations r LEFT JOIN answers a ON a.msg_key = r.gen_key"
            " WHERE r.openid = ? AND r.state = 'settled' AND r.amount > 0 ORDER BY r.finished_at DESC LIMIT ?",
            (openid, limit))
        return [Charge(r["gen_key"], r["model"], r["milli"], bool(r["estimated"]), r["finished_at"]) for r in rows]

    async def recent(self, openid: str, limit: int) -> list[Use]:
        """The user's latest generations (a channel that failed over is not one: its successor is)."""
        rows = await self.db.fetchall(
            "SELECT model, started_at, outcome, prompt_tokens, completion_tokens FROM generations"
            " WHERE openid = ? AND outcome != 'failed_over' ORDER BY id DESC LIMIT ?", (openid, limit))
        return [Use(*tuple(r)) for r in rows]
