"""Followers' own API keys, stored only as ciphertext (scheme 2: AES-GCM bound to the openid;
scheme 1: the older Fernet rows, re-encrypted at start-up)."""

from __future__ import annotations

from storage.db import Database

CURRENT = 2


class OwnKeyRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, openid: str, ciphertext: bytes, now: float) -> None:
        await self.db.write(lambda conn: conn.execute(
            "INSERT INTO own_keys (openid, ciphertext, set_at, scheme) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (openid) DO UPDATE SET ciphertext = excluded.ciphertext, set_at = excluded.set_at,"
            " scheme = excluded.scheme", (openid, ciphertext, now, CURRENT)))

    async def delete(self, openid: str) -> bool:
        return await self.db.write(
            lambda conn: conn.execute("DELETE FROM own_keys WHERE openid = ?", (openid,)).rowcount == 1)

    async def get(self, openid: str) -> bytes | None:
        """The current-scheme ciphertext (an old row not yet re-encrypted reads as no key)."""
        row = await self.db.lookup("SELECT ciphertext FROM own_keys WHERE openid = ? AND scheme = ?",
                                   (openid, CURRENT))
        return bytes(row["ciphertext"]) if row else None

    async def old_rows(self) -> list[tuple[str, bytes]]:
        rows = await self.db.fetchall("SELECT openid, ciphertext FROM own_keys WHERE scheme < ?", (CURRENT,))
        return [(r["openid"], bytes(r["ciphertext"])) for r in rows]

    async def upgrade(self, openid: str, old: bytes, new: bytes) -> bool:
        """Replace `old` by `new` unless the row changed meanwhile (another process, a new key)."""
        return await self.db.write(lambda conn: conn.execute(
            "UPDATE own_keys SET ciphertext = ?, scheme = ? WHERE openid = ? AND scheme < ? AND ciphertext = ?",
            (new, CURRENT, openid, CURRENT, old)).rowcount == 1)
