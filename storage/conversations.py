"""Conversations and their turns: the context a question is asked in."""

from __future__ import annotations

import sqlite3

from storage.db import Database
from storage.dialect import serialize


def current_conversation(conn: sqlite3.Connection, openid: str, now: float, idle: float) -> int:
    """Inside a write: the user's open conversation, or a new one when the last went idle.

    At most one is open (a unique index); on PostgreSQL the user's conversations are also changed by
    one host at a time, so two hosts asking at once share the conversation instead of failing."""
    serialize(conn, "conversation:" + openid)
    row = conn.execute(
        "SELECT id, last_at FROM conversations WHERE openid = ? AND closed = 0 ORDER BY id DESC LIMIT 1", (openid,)
    ).fetchone()
    if row and now - row["last_at"] <= idle:
        return int(row["id"])
    if row:
        conn.execute("UPDATE conversations SET closed = 1 WHERE id = ?", (row["id"],))
    return int(conn.execute("INSERT INTO conversations (openid, started_at, last_at) VALUES (?, ?, ?) RETURNING id",
                            (openid, now, now)).fetchone()[0])


_RECENT_TURNS = "SELECT role, content FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT ?"


def _oldest_first(rows: list) -> list[tuple[str, str]]:
    return [(r["role"], r["content"]) for r in reversed(rows)]


def recent_turns(conn: sqlite3.Connection, conversation_id: int, limit: int) -> list[tuple[str, str]]:
    """Inside a write: the last `limit` turns, oldest first."""
    return _oldest_first(conn.execute(_RECENT_TURNS, (conversation_id, limit)).fetchall())


class ConversationRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def close_all(self, openid: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            "UPDATE conversations SET closed = 1 WHERE openid = ? AND closed = 0", (openid,)))

    async def recent_turns(self, conversation_id: int, limit: int) -> list[tuple[str, str]]:
        return _oldest_first(await self.db.fetchall(_RECENT_TURNS, (conversation_id, limit)))

    async def reopen(self, openid: str, conversation_id: int, now: float) -> bool:
        """Make one of the user's conversations the current one (on every surface); False if not theirs."""
        def run(conn: sqlite3.Connection) -> bool:
            serialize(conn, "conversation:" + openid)
            owned = conn.execute("SELECT 1 FROM conversations WHERE id = ? AND openid = ?",
                                 (conversation_id, openid)).fetchone()
            if owned is None:
                return False
            conn.execute("UPDATE conversations SET closed = 1 WHERE openid = ? AND id != ? AND closed = 0",
                         (openid, conversation_id))
            conn.execute("UPDATE conversations SET closed = 0, last_at = ? WHERE id = ?", (now, conversation_id))
            return True

        return await self.db.write(run)

    async def list(self, openid: str, limit: int, offset: int) -> list[dict]:
        """The user's conversations, latest first, with their first question as a preview."""
        rows = await self.db.fetchall(
            "SELECT c.id, c.started_at, c.last_at, c.closed,"
            " (SELECT content FROM turns t WHERE t.conversation_id = c.id AND t.role = 'user' ORDER BY t.id LIMIT 1)"
            " AS preview, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS turns"
            " FROM conversations c WHERE c.openid = ? ORDER BY c.last_at DESC, c.id DESC LIMIT ? OFFSET ?",
            (openid, limit, offset))
        return [{"id": r["id"], "started_at": r["started_at"], "last_at": r["last_at"], "current": not r["closed"],
                 "preview": (r["preview"] or "")[:60], "turns": r["turns"]} for r in rows]

    async def turns(self, openid: str, conversation_id: int, limit: int, offset: int) -> list[dict] | None:
        """A conversation's turns in order (paged); None when it is not the user's."""
        owned = await self.db.fetchone("SELECT 1 FROM conversations WHERE id = ? AND openid = ?",
                                       (conversation_id, openid))
        if owned is None:
            return None
        rows = await self.db.fetchall(
            "SELECT role, content, created_at FROM turns WHERE conversation_id = ? ORDER BY id LIMIT ? OFFSET ?",
            (conversation_id, limit, offset))
        return [{"role": r["role"], "content": r["content"], "created_at": r["created_at"]} for r in rows]
