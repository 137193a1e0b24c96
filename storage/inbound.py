"""Inbound WeChat messages keyed by MsgId (events: sender + time + event).

WeChat delivers each message up to three times. The first delivery to insert the row owns the
message; every delivery, in whichever process, ends with the one reply stored here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from dataclasses import dataclass

from storage.db import Database
from storage.standing import STANDING_READ, Standing, StandingRepo, standing_from_row


@dataclass(frozen=True, slots=True)
class Receipt:
    msg_key: str
    first: bool
    deliveries: int
    received_at: float
    answer_id: int | None
    note: str | None
    reply: str | None
    # the sender's chosen model (模型 NAME), read in the same step as a delivery (None: not read, or none chosen)
    model: str | None = None
    # the sender's standing, when asked for (receive(with_standing=True))
    standing: Standing | None = None
    # the first delivery decides the message until then, renewing it while it takes long; past it
    # (the process died deciding) a retry may take the decision over (claim_deciding)
    deciding_until: float | None = None

    @property
    def decided(self) -> bool:
        return self.reply is not None or self.answer_id is not None


def _receipt(row: sqlite3.Row, first: bool, model: str | None = None, standing: Standing | None = None) -> Receipt:
    return Receipt(row["msg_key"], first, row["deliveries"], row["received_at"], row["answer_id"], row["note"],
                   row["reply"], model, standing, row["deciding_until"])


# an undecided message whose decision may be taken (over) or renewed
_UNDECIDED = "msg_key = ? AND reply IS NULL AND answer_id IS NULL"


# PostgreSQL: the user seen and the delivery recorded in one statement, with the user's chosen model.
_RECEIVE_PG = (
    "WITH seen AS (INSERT INTO users (openid, first_seen, last_seen) VALUES (:o, :now, :now)"
    " ON CONFLICT (openid) DO UPDATE SET last_seen = excluded.last_seen RETURNING model)"
    " INSERT INTO inbound (msg_key, openid, kind, received_at, reply, replied_at, deciding_until)"
    " VALUES (:k, :o, :kind, :now, :reply, :replied, :deciding)"
    " ON CONFLICT (msg_key) DO UPDATE SET deliveries = inbound.deliveries + 1"
    " RETURNING *, (SELECT model FROM seen) AS chosen_model")


class InboundRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def receive(self, msg_key: str, openid: str, kind: str, now: float, reply: str | None = None, *,
                      with_standing: bool = False, deciding_until: float | None = None) -> Receipt:
        """Record one delivery (and the sender as a user); `first` is true for exactly one delivery.

        A `reply` known without looking at any state (help, "text only") is stored with the first
        delivery in the same step. The receipt carries the stored reply, if the message has one, and
        the sender's chosen model (a question needs it next: one read fewer). `with_standing`: it
        carries the sender's standing too (storage.standing), for what looks like a question: on
        PostgreSQL read in the same round trip, on SQLite on the reader beside the write.
        `deciding_until`: the first delivery's lease on deciding the message (Receipt.deciding_until).
        """
        if self.db.engine == "postgresql":  # one round trip (the standing: a second statement in it)
            received = (_RECEIVE_PG, {"o": openid, "k": msg_key, "kind": kind, "now": now, "reply": reply,
                                      "replied": None if reply is None else now, "deciding": deciding_until})
            if not with_standing:
                row = (await self.db.write_one(*received))[0]
                return _receipt(row, row["deliveries"] == 1, row["chosen_model"])
            rows, standing = await self.db.write_together([received, (STANDING_READ, (openid,))])
            return _receipt(rows[0], rows[0]["deliveries"] == 1, rows[0]["chosen_model"],
                            standing_from_row(openid, standing[0]))

        def run(conn: sqlite3.Connection) -> Receipt:
            model = conn.execute(
                "INSERT INTO users (openid, first_seen, last_seen) VALUES (?, ?, ?)"
                " ON CONFLICT (openid) DO UPDATE SET last_seen = excluded.last_seen RETURNING model",
                (openid, now, now),
            ).fetchall()[0]["model"]
            # A new row starts at one delivery; a retry counts itself on the stored one.
            row = conn.execute(
                "INSERT INTO inbound (msg_key, openid, kind, received_at, reply, replied_at, deciding_until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (msg_key) DO UPDATE SET deliveries = inbound.deliveries + 1 RETURNING *",
                (msg_key, openid, kind, now, reply, None if reply is None else now, deciding_until),
            ).fetchall()[0]
            return _receipt(row, row["deliveries"] == 1, model)

        if not with_standing:
            return await self.db.write(run)
        # the read does not wait for the write's group commit, nor the write for the read
        read = asyncio.ensure_future(StandingRepo(self.db).of(openid))
        try:
            receipt = await self.db.write(run)
        except BaseException:
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
            raise
        return dataclasses.replace(receipt, standing=await read)

    async def get(self, msg_key: str) -> Receipt | None:
        row = await self.db.lookup("SELECT * FROM inbound WHERE msg_key = ?", (msg_key,))
        return _receipt(row, False) if row else None

    async def set_reply(self, msg_key: str, reply: str, now: float) -> str:
        """Store the reply unless one is stored already; return the one that stands."""
        def run(conn: sqlite3.Connection) -> str:
            conn.execute("UPDATE inbound SET reply = ?, replied_at = ? WHERE msg_key = ? AND reply IS NULL",
                         (reply, now, msg_key))
            return conn.execute("SELECT reply FROM inbound WHERE msg_key = ?", (msg_key,)).fetchone()["reply"]

        return await self.db.write(run)

    async def claim_deciding(self, msg_key: str, now: float, until: float) -> bool:
        """Take over deciding a message whose decider let its lease run out (it died deciding):
        True for exactly one caller, however many deliveries on however many hosts try at once (one
        conditional UPDATE; PostgreSQL re-checks it on the row a concurrent claim just changed)."""
        return bool(await self.db.write_one(
            f"UPDATE inbound SET deciding_until = ? WHERE {_UNDECIDED} AND deciding_until < ? RETURNING msg_key",
            (until, msg_key, now)))

    async def renew_deciding(self, msg_key: str, until: float) -> None:
        """The decider is still at it (hearing a voice, waiting for a picture's text): keep its lease."""
        await self.db.write_one(f"UPDATE inbound SET deciding_until = ? WHERE {_UNDECIDED}", (until, msg_key))

    async def set_target(self, msg_key: str, answer_id: int, note: str | None) -> None:
        await self.db.write_one("UPDATE inbound SET answer_id = ?, note = ? WHERE msg_key = ?",
                                (answer_id, note, msg_key))
