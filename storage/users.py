"""Followers of the official account: first seen, last seen, subscription state."""

from __future__ import annotations

from storage.db import Database


class UserRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def set_subscribed(self, openid: str, subscribed: bool, now: float) -> None:
        column = "subscribed_at" if subscribed else "unsubscribed_at"
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO users (openid, first_seen, last_seen, subscribed, {column}) VALUES (?, ?, ?, ?, ?)"
                f" ON CONFLICT (openid) DO UPDATE SET last_seen = excluded.last_seen,"
                f" subscribed = excluded.subscribed, {column} = excluded.{column}",
                (openid, now, now, int(subscribed), now),
            )

    async def get(self, openid: str) -> dict | None:
        row = await self.db.lookup("SELECT * FROM users WHERE openid = ?", (openid,))
        return dict(row) if row else None
