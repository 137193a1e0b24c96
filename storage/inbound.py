"""Inbound WeChat messages keyed by MsgId (events: sender + time + event).

WeChat delivers each message up to three times. The first delivery to insert the row owns the
message; every delivery, in whichever process, ends with the one reply stored here.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Database


@dataclass(frozen=True, slots=True)
class Receipt:
    msg_key: str
    first: bool
    deliveries: int
    received_at: float
    answer_id: int | None
    note: str | None
    reply: str | None


def _receipt(row, first: bool) -> Receipt:
    return Receipt(row["msg_key"], first, row["deliveries"], row["received_at"], row["answer_id"], row["note"],
                   row["reply"])


class InboundRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def receive(self, msg_key: str, openid: str, kind: str, now: float) -> Receipt:
        """Record one delivery; `first` is true for exactly one delivery of a message."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO inbound (msg_key, openid, kind, received_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (msg_key) DO NOTHING",
                (msg_key, openid, kind, now),
            )
            first = cur.rowcount == 1
            if not first:
                await conn.execute("UPDATE inbound SET deliveries = deliveries + 1 WHERE msg_key = ?", (msg_key,))
            async with conn.execute("SELECT * FROM inbound WHERE msg_key = ?", (msg_key,)) as c:
                row = await c.fetchone()
        return _receipt(row, first)

    async def get(self, msg_key: str) -> Receipt | None:
        row = await self.db.fetchone("SELECT * FROM inbound WHERE msg_key = ?", (msg_key,))
        return _receipt(row, False) if row else None

    async def cached_reply(self, msg_key: str) -> str | None:
        """The reply already given to this message, for WeChat's retries (the fast path)."""
        row = await self.db.fetchone("SELECT reply FROM inbound WHERE msg_key = ?", (msg_key,))
        return row["reply"] if row else None

    async def set_reply(self, msg_key: str, reply: str, now: float) -> str:
        """Store the reply unless one is stored already; return the one that stands."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE inbound SET reply = ?, replied_at = ? WHERE msg_key = ? AND reply IS NULL",
                (reply, now, msg_key),
            )
            async with conn.execute("SELECT reply FROM inbound WHERE msg_key = ?", (msg_key,)) as c:
                row = await c.fetchone()
        return row["reply"]

    async def set_target(self, msg_key: str, answer_id: int, note: str | None) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE inbound SET answer_id = ?, note = ? WHERE msg_key = ?",
                               (answer_id, note, msg_key))
