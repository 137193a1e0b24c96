"""Answer pages: the token that opens one answer at `/a/<token>`, and what the page reads.

One row per answer (the answer's id is the key), so every process hands out the same link for it.
The page shows the answer as the model wrote it (`markdown`, checked like `text`) where known, else
`text`. It reads through `lookup` (an index answers every read here), and a growing answer is
followed with a cheap check (status and length) before the text itself is read again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from storage.answers import FINAL
from storage.db import Database


@dataclass(frozen=True, slots=True)
class PageAnswer:
    answer_id: int
    msg_key: str
    question: str
    text: str
    status: str
    expires_at: float

    @property
    def finished(self) -> bool:
        return self.status in FINAL


def ensure_page(conn: sqlite3.Connection, answer_id: int, candidate: str, now: float, expires_at: float) -> str:
    """The answer's page token: `candidate` if it had none yet (inside the caller's transaction;
    repeatable, as a group commit may re-run it)."""
    conn.execute("INSERT INTO answer_pages (answer_id, token, created_at, expires_at) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (answer_id) DO NOTHING", (answer_id, candidate, now, expires_at))
    return conn.execute("SELECT token FROM answer_pages WHERE answer_id = ?", (answer_id,)).fetchone()[0]


class AnswerPageRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure(self, answer_id: int, candidate: str, now: float, expires_at: float) -> str:
        return await self.db.write(lambda conn: ensure_page(conn, answer_id, candidate, now, expires_at))

    async def open(self, token: str, now: float) -> PageAnswer | None:
        """The answer a token opens, unless the token is unknown or expired."""
        row = await self.db.lookup(
            "SELECT p.answer_id, p.expires_at, a.msg_key, a.question, COALESCE(a.markdown, a.text) AS text, a.status"
            " FROM answer_pages p JOIN answers a ON a.id = p.answer_id WHERE p.token = ?", (token,))
        if row is None or row["expires_at"] <= now:
            return None
        return PageAnswer(row["answer_id"], row["msg_key"], row["question"], row["text"], row["status"],
                          row["expires_at"])

    async def progress(self, answer_id: int) -> tuple[str, int] | None:
        """(status, length of the text so far): the cheap check before reading the text again."""
        row = await self.db.lookup("SELECT status, length(COALESCE(markdown, text)) AS n FROM answers WHERE id = ?",
                                   (answer_id,))
        return (row["status"], row["n"]) if row else None

    async def text(self, answer_id: int) -> tuple[str, str] | None:
        """(status, text) as stored now."""
        row = await self.db.lookup("SELECT status, COALESCE(markdown, text) AS text FROM answers WHERE id = ?",
                                   (answer_id,))
        return (row["status"], row["text"]) if row else None

    async def mark_read(self, answer_id: int, shown: int) -> bool:
        """The page showed the whole, final answer (`shown` characters): chat owes nothing more of it.

        Conditional on the page's text being that final one, so a page never marks more than it showed."""
        final = ", ".join(f"'{s}'" for s in FINAL)
        return await self.db.write(lambda conn: conn.execute(
            "UPDATE answers SET delivered_upto = length(text), awaiting_fetch = 0"
            f" WHERE id = ? AND status IN ({final}) AND length(COALESCE(markdown, text)) = ?"
            " AND delivered_upto < length(text)",
            (answer_id, shown)).rowcount == 1)
