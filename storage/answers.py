"""Answers: one generation per question (msg_key is unique), its text and its delivery state.

The process that inserts an answer owns its generation under a lease it keeps renewing; a lease
left to expire means that process died, and another one takes the answer over. What the user has
been given is `delivered_upto` characters of `text`; moving it is one transaction together with the
reply it went into, so no part is given twice or skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage.db import Database

FINAL = ("done", "failed", "timed_out", "cut")


@dataclass(frozen=True, slots=True)
class Answer:
    id: int
    openid: str
    msg_key: str
    conversation_id: int | None
    question: str
    model: str
    status: str
    text: str
    delivered_upto: int
    awaiting_fetch: bool
    route: str
    lease_owner: str | None
    lease_until: float | None
    created_at: float
    deadline_at: float
    attempts: int

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def owed(self) -> bool:
        return not self.finished or self.delivered_upto < len(self.text)


def _answer(row) -> Answer:
    return Answer(row["id"], row["openid"], row["msg_key"], row["conversation_id"], row["question"], row["model"],
                  row["status"], row["text"], row["delivered_upto"], bool(row["awaiting_fetch"]), row["route"],
                  row["lease_owner"], row["lease_until"], row["created_at"], row["deadline_at"], row["attempts"])


# (answer, stored reply or None) -> (reply text, new delivered_upto, still owed to the user)
ReplyPlanner = Callable[[Answer], tuple[str, int, bool]]


class AnswerRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, *, openid: str, msg_key: str, question: str, model: str, route: str,
                     conversation_id: int, now: float, deadline_at: float, owner: str, lease_until: float,
                     awaiting_fetch: bool) -> tuple[int, bool]:
        """Insert the answer for a question; (id, True) only for the one caller that created it."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO answers (openid, msg_key, conversation_id, question, model, route, lease_owner,"
                " lease_until, created_at, deadline_at, awaiting_fetch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (msg_key) DO NOTHING",
                (openid, msg_key, conversation_id, question, model, route, owner, lease_until, now, deadline_at,
                 int(awaiting_fetch)),
            )
            if cur.rowcount == 1:
                return int(cur.lastrowid), True
            async with conn.execute("SELECT id FROM answers WHERE msg_key = ?", (msg_key,)) as c:
                row = await c.fetchone()
            return int(row["id"]), False

    async def get(self, answer_id: int) -> Answer | None:
        row = await self.db.fetchone("SELECT * FROM answers WHERE id = ?", (answer_id,))
        return _answer(row) if row else None

    async def get_by_key(self, msg_key: str) -> Answer | None:
        row = await self.db.fetchone("SELECT * FROM answers WHERE msg_key = ?", (msg_key,))
        return _answer(row) if row else None

    async def save_progress(self, answer_id: int, owner: str, text: str, lease_until: float,
                            first_token_at: float | None) -> bool:
        """Write the growing text and renew the lease; False when the lease was lost."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE answers SET text = ?, lease_until = ?, first_token_at = COALESCE(first_token_at, ?)"
                " WHERE id = ? AND status = 'generating' AND lease_owner = ?",
                (text, lease_until, first_token_at, answer_id, owner),
            )
            return cur.rowcount == 1

    async def finish(self, answer_id: int, owner: str, status: str, text: str, now: float,
                     turns: tuple[str, str] | None) -> bool:
        """Close the generation; with `turns` (question, answer) the conversation gets both in the same step."""
        assert status in FINAL
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE answers SET status = ?, text = ?, finished_at = ?, lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND status = 'generating' AND lease_owner = ?",
                (status, text, now, answer_id, owner),
            )
            if cur.rowcount != 1:
                return False
            if turns is not None:
                async with conn.execute("SELECT conversation_id FROM answers WHERE id = ?", (answer_id,)) as c:
                    conv = (await c.fetchone())["conversation_id"]
                if conv is not None:
                    await conn.executemany(
                        "INSERT INTO turns (conversation_id, role, content, created_at) VALUES (?, ?, ?, ?)",
                        [(conv, "user", turns[0], now), (conv, "assistant", turns[1], now)],
                    )
                    await conn.execute("UPDATE conversations SET last_at = ? WHERE id = ?", (now, conv))
            return True

    async def claim_stale(self, now: float, owner: str, lease_until: float) -> list[Answer]:
        """Take over generations whose owner stopped renewing its lease (it crashed or was killed)."""
        rows = await self.db.fetchall(
            "SELECT id FROM answers WHERE status = 'generating' AND lease_until < ?", (now,)
        )
        claimed = []
        for row in rows:
            async with self.db.transaction() as conn:
                cur = await conn.execute(
                    "UPDATE answers SET lease_owner = ?, lease_until = ?, attempts = attempts + 1"
                    " WHERE id = ? AND status = 'generating' AND lease_until < ?",
                    (owner, lease_until, row["id"], now),
                )
                if cur.rowcount != 1:
                    continue
            answer = await self.get(row["id"])
            if answer is not None:
                claimed.append(answer)
        return claimed

    async def reset_text(self, answer_id: int, owner: str) -> bool:
        """Start a taken-over generation afresh; only while the user has been given nothing of it."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE answers SET text = '', first_token_at = NULL"
                " WHERE id = ? AND lease_owner = ? AND delivered_upto = 0",
                (answer_id, owner),
            )
            return cur.rowcount == 1

    async def oldest_owed(self, openid: str, asked_before: float) -> Answer | None:
        """The oldest answer the user is still owed whose own question's deliveries are over."""
        row = await self.db.fetchone(
            "SELECT * FROM answers WHERE openid = ?"
            " AND (awaiting_fetch = 1 OR (route = 'reply' AND created_at < ?))"
            " AND (status = 'generating' OR delivered_upto < length(text))"
            " ORDER BY id LIMIT 1",
            (openid, asked_before),
        )
        return _answer(row) if row else None

    async def take_reply(self, msg_key: str, answer_id: int, plan: ReplyPlanner, now: float,
                         live_text: str | None = None) -> str:
        """Decide the reply for one inbound message from one answer, exactly once.

        In one transaction: if the message already has its reply (another delivery decided it), that
        reply stands; otherwise `plan` picks the next part, the answer's delivery offset moves and the
        reply is stored. `live_text` is the generating process's newer text, written first.
        """
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT reply FROM inbound WHERE msg_key = ?", (msg_key,)) as c:
                row = await c.fetchone()
            if row is not None and row["reply"] is not None:
                return row["reply"]
            if live_text is not None:
                await conn.execute(
                    "UPDATE answers SET text = ? WHERE id = ? AND status = 'generating' AND length(text) < ?",
                    (live_text, answer_id, len(live_text)),
                )
            async with conn.execute("SELECT * FROM answers WHERE id = ?", (answer_id,)) as c:
                answer = _answer(await c.fetchone())
            reply, upto, owed = plan(answer)
            await conn.execute(
                "UPDATE answers SET delivered_upto = ?, awaiting_fetch = ? WHERE id = ?",
                (max(upto, answer.delivered_upto), int(owed), answer_id),
            )
            await conn.execute(
                "UPDATE inbound SET reply = ?, replied_at = ? WHERE msg_key = ?", (reply, now, msg_key)
            )
            return reply

    async def claim_push(self, now: float, owner: str, lease_until: float,
                         answer_id: int | None = None) -> list[Answer]:
        """Finished answers in active mode with parts not yet pushed, claimed by one process at a time."""
        rows = await self.db.fetchall(
            "SELECT id FROM answers WHERE route = 'push' AND status != 'generating' AND awaiting_fetch = 0"
            " AND delivered_upto < length(text) AND (lease_until IS NULL OR lease_until < ?)"
            " AND (? IS NULL OR id = ?)",
            (now, answer_id, answer_id),
        )
        claimed = []
        for row in rows:
            async with self.db.transaction() as conn:
                cur = await conn.execute(
                    "UPDATE answers SET lease_owner = ?, lease_until = ? WHERE id = ? AND status != 'generating'"
                    " AND awaiting_fetch = 0 AND (lease_until IS NULL OR lease_until < ?)",
                    (owner, lease_until, row["id"], now),
                )
            if cur.rowcount == 1:
                answer = await self.get(row["id"])
                if answer is not None:
                    claimed.append(answer)
        return claimed

    async def record_push(self, answer_id: int, owner: str, upto: int, owed: bool, done: bool) -> None:
        """After a push: move the offset; `owed` hands the rest to fetch; `done` releases the claim."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE answers SET delivered_upto = MAX(delivered_upto, ?), awaiting_fetch = ?,"
                " lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END,"
                " lease_until = CASE WHEN ? THEN NULL ELSE lease_until END"
                " WHERE id = ? AND lease_owner = ?",
                (upto, int(owed), int(done), int(done), answer_id, owner),
            )
