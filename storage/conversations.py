"""Conversations and their turns: the context a question is asked in."""

from __future__ import annotations

import sqlite3

from storage.db import Database


def current_conversation(conn: sqlite3.Connection, openid: str, now: float, idle: float) -> int:
    """Inside a write: the user's open conversation, or a new one when the last went idle."""
    row = conn.execute(
        "SELECT id, last_at FROM conversations WHERE openid = ? AND closed = 0 ORDER BY id DESC LIMIT 1", (openid,)
    ).fetchone()
    if row and now - row["last_at"] <= idle:
        return int(row["id"])
    if row:
        conn.execute("UPDATE conversations SET closed = 1 WHERE id = ?", (row["id"],))
    cur = conn.execute("INSERT INTO conversations (openid, started_at, last_at) VALUES (?, ?, ?)", (openid, now, now))
    return int(cur.lastrowid)


def recent_turns(conn: sqlite3.Connection, conversation_id: int, limit: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT role, content FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT ?", (conversation_id, limit)
    ).fetchall()
    return [(r["role"], r["content"]) for r in reversed(rows)]


class ConversationRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def current(self, openid: str, now: float, idle: float) -> int:
        return await self.db.write(lambda conn: current_conversation(conn, openid, now, idle))

    async def close_all(self, openid: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            "UPDATE conversations SET closed = 1 WHERE openid = ? AND closed = 0", (openid,)))

    async def recent_turns(self, conversation_id: int, limit: int) -> list[tuple[str, str]]:
        rows = await self.db.fetchall(
            "SELECT role, content FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT ?",
            (conversation_id, limit),
        )
        return [(r["role"], r["content"]) for r in reversed(rows)]
