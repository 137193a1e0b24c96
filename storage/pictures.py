"""Pictures followers send, until a question takes them (see migration 0016)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from storage.db import Database


@dataclass(frozen=True, slots=True)
class Picture:
    id: int
    openid: str
    msg_key: str
    pic_url: str
    media_id: str
    data: bytes | None
    content_type: str | None
    created_at: float
    taken_by: str | None


def _picture(row: sqlite3.Row) -> Picture:
    return Picture(row["id"], row["openid"], row["msg_key"], row["pic_url"], row["media_id"], row["data"],
                   row["content_type"], row["created_at"], row["taken_by"])


class PictureRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, openid: str, msg_key: str, now: float, *, pic_url: str = "", media_id: str = "",
                  data: bytes | None = None, content_type: str | None = None, taken_by: str | None = None) -> int:
        """Record a picture (once per msg_key); its id."""
        def run(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO pictures (openid, msg_key, pic_url, media_id, data, content_type, created_at, taken_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (msg_key) DO NOTHING",
                (openid, msg_key, pic_url, media_id, data, content_type, now, taken_by))
            return int(conn.execute("SELECT id FROM pictures WHERE msg_key = ?", (msg_key,)).fetchone()[0])

        return await self.db.write(run)

    async def get(self, picture_id: int) -> Picture | None:
        row = await self.db.lookup("SELECT * FROM pictures WHERE id = ?", (picture_id,))
        return _picture(row) if row else None

    async def waiting(self, openid: str, since: float) -> Picture | None:
        """The follower's latest picture sent after `since` that no question has taken."""
        row = await self.db.lookup(
            "SELECT * FROM pictures WHERE openid = ? AND taken_by IS NULL AND created_at >= ?"
            " ORDER BY created_at DESC LIMIT 1", (openid, since))
        return _picture(row) if row else None

    async def take(self, picture_id: int, taker: str) -> bool:
        """Give the picture to one question; False when another one took it first."""
        return await self.db.write(lambda conn: conn.execute(
            "UPDATE pictures SET taken_by = ? WHERE id = ? AND taken_by IS NULL", (taker, picture_id)).rowcount == 1)

    async def forget_data(self, picture_id: int) -> None:
        """Drop an upload's bytes once its answer is final (the conversation keeps a placeholder)."""
        await self.db.write(lambda conn: conn.execute(
            "UPDATE pictures SET data = NULL WHERE id = ? AND data IS NOT NULL", (picture_id,)))
