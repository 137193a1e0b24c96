"""Account standing the owner manages: frozen or active, tier, and the whitelist.

Credits live in storage.ledger; these change who may ask, never a balance. Freezing or setting the
tier of someone who has not written yet creates the account (without the trial, which
Ledger.ensure_account grants on first contact).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from storage.db import Database


@dataclass(frozen=True, slots=True)
class Listed:
    openid: str
    note: str
    added_at: float


class Accounts:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def _upsert(self, openid: str, column: str, value: str) -> bool:
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall(
                f"INSERT INTO accounts (openid, {column}, created_at) VALUES (?, ?, ?)"
                f" ON CONFLICT (openid) DO UPDATE SET {column} = excluded.{column}"
                f" WHERE accounts.{column} IS DISTINCT FROM excluded.{column} RETURNING openid",
                (openid, value, self.clock()))
            return bool(list(rows))

    async def freeze(self, openid: str) -> bool:
        """Refuse the user's questions from now on. True if this changed anything."""
        return await self._upsert(openid, "status", "frozen")

    async def unfreeze(self, openid: str) -> bool:
        return await self._upsert(openid, "status", "active")

    async def set_tier(self, openid: str, tier: str) -> bool:
        if not tier.strip():
            msg = "a tier name cannot be empty"
            raise ValueError(msg)
        return await self._upsert(openid, "tier", tier)

    async def whitelist_add(self, openid: str, note: str = "") -> bool:
        """True if the user was not listed before (a second add keeps the first note)."""
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall(
                "INSERT INTO whitelist (openid, note, added_at) VALUES (?, ?, ?)"
                " ON CONFLICT (openid) DO NOTHING RETURNING openid", (openid, note, self.clock()))
            return bool(list(rows))

    async def whitelist_remove(self, openid: str) -> bool:
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall("DELETE FROM whitelist WHERE openid = ? RETURNING openid", (openid,))
            return bool(list(rows))

    async def whitelist(self) -> list[Listed]:
        rows = await self.db.fetchall("SELECT openid, note, added_at FROM whitelist ORDER BY added_at, openid")
        return [Listed(r["openid"], r["note"], r["added_at"]) for r in rows]
