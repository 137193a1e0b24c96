"""Generation records (one row per channel attempt), the follower's chosen model, disabled channels."""

from __future__ import annotations

from dataclasses import astuple, dataclass

from storage.db import Database

OUTCOMES = ("ok", "failed_over", "cut", "refused", "timed_out", "failed")


@dataclass(frozen=True)
class GenerationRecord:
    openid: str
    msg_key: str | None
    channel: str
    model: str
    started_at: float
    first_token_ms: float | None
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    outcome: str
    error_kind: str | None = None


_INSERT = ("INSERT INTO generations (openid, msg_key, channel, model, started_at, first_token_ms, total_ms,"
           " prompt_tokens, completion_tokens, usage_estimated, outcome, error_kind) VALUES ")
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_MAX = 50  # 600 parameters a statement, far below either engine's limit


class GenerationRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_many(self, recs: list[GenerationRecord]) -> None:
        """Several records in one statement (the router writes those that came while its last write
        was on its way: under load a statement per attempt was a tenth of a question's)."""
        for start in range(0, len(recs), _ROWS_MAX):
            chunk = recs[start:start + _ROWS_MAX]
            await self.db.write_one(_INSERT + ", ".join([_ROW] * len(chunk)),
                                    [v for rec in chunk for v in astuple(rec)])

    async def for_message(self, msg_key: str) -> list[GenerationRecord]:
        rows = await self.db.fetchall(
            "SELECT openid, msg_key, channel, model, started_at, first_token_ms, total_ms, prompt_tokens,"
            " completion_tokens, usage_estimated, outcome, error_kind FROM generations WHERE msg_key = ?"
            " ORDER BY started_at, id", (msg_key,))
        return [GenerationRecord(*(bool(v) if i == 9 else v for i, v in enumerate(tuple(r)))) for r in rows]

    async def attempts_since(self, since: float) -> list[dict]:
        """Each attempt since a time, oldest first: channel, when it ended, outcome, error kind."""
        rows = await self.db.fetchall(
            "SELECT channel, started_at + total_ms / 1000.0 AS ended_at, outcome, error_kind FROM generations"
            " WHERE started_at >= ? ORDER BY started_at, id", (since,))
        return [dict(r) for r in rows]

    async def summary(self, since: float) -> list[dict]:
        """Per channel and outcome since a time: counts, tokens, time to first token (for `mpgpt channels`)."""
        rows = await self.db.fetchall(
            "SELECT channel, outcome, COUNT(*) AS n, SUM(prompt_tokens) AS prompt_tokens,"
            " SUM(completion_tokens) AS completion_tokens, AVG(first_token_ms) AS avg_first_token_ms"
            " FROM generations WHERE started_at >= ? GROUP BY channel, outcome ORDER BY channel, outcome",
            (since,))
        return [dict(r) for r in rows]


class ModelChoiceRepo:
    """The model a follower picked with 模型 NAME (None: the global default)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, openid: str) -> str | None:
        row = await self.db.lookup("SELECT model FROM users WHERE openid = ?", (openid,))
        return row["model"] if row else None

    async def set(self, openid: str, model: str | None, now: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO users (openid, first_seen, last_seen, model) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (openid) DO UPDATE SET model = excluded.model",
                (openid, now, now, model),
            )


class DisabledChannelRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def disable(self, channel: str, key_hash: str, reason: str, now: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO disabled_channels (channel, key_hash, reason, disabled_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (channel) DO UPDATE SET key_hash = excluded.key_hash, reason = excluded.reason,"
                " disabled_at = excluded.disabled_at",
                (channel, key_hash, reason, now),
            )

    async def enable(self, channel: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute("DELETE FROM disabled_channels WHERE channel = ?", (channel,))
            return cur.rowcount > 0

    async def all(self) -> dict[str, tuple[str, str]]:
        """channel -> (key_hash, reason)."""
        rows = await self.db.fetchall("SELECT channel, key_hash, reason FROM disabled_channels")
        return {r["channel"]: (r["key_hash"], r["reason"]) for r in rows}
