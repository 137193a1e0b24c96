"""Followers' own API keys, stored only as ciphertext."""

from __future__ import annotations

from storage.db import Database


class OwnKeyRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, openid: str, ciphertext: bytes, now: float) -> None:
        await self.db.write(lambda conn: conn.execute(
            "INSERT INTO own_keys (openid, ciphertext, set_at) VALUES (?, ?, ?)"
            " ON CONFLICT (openid) DO UPDATE SET ciphertext = excluded.ciphertext, set_at = excluded.set_at",
            (openid, ciphertext, now)))

    async def delete(self, openid: str) -> bool:
        return await self.db.write(
            lambda conn: conn.execute("DELETE FROM own_keys WHERE openid = ?", (openid,)).rowcount == 1)

    async def get(self, openid: str) -> bytes | None:
        row = await self.db.lookup("SELECT ciphertext FROM own_keys WHERE openid = ?", (openid,))
        return bytes(row["ciphertext"]) if row else None
