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


class UsageRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def movements(self, openid: str, limit: int, offset: int) -> list[Entry]:
        """Ledger rows that moved credits, newest first (a settle row moves nothing: its reserve did)."""
        rows = await self.db.fetchall(
            "SELECT id, kind, amount, daily_amount, ref, created_at FROM ledger"
            " WHERE openid = ? AND (amount != 0 OR daily_amount != 0) ORDER BY id DESC LIMIT ? OFFSET ?",
            (openid, limit, offset))
        return [Entry(*tuple(r)) for r in rows]

    async def recent(self, openid: str, limit: int) -> list[Use]:
        """The user's latest generations (a channel that failed over is not one: its successor is)."""
        rows = await self.db.fetchall(
            "SELECT model, started_at, outcome, prompt_tokens, completion_tokens FROM generations"
            " WHERE openid = ? AND outcome != 'failed_over' ORDER BY id DESC LIMIT ?", (openid, limit))
        return [Use(*tuple(r)) for r in rows]
