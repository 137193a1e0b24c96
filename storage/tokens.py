"""The WeChat access_token, shared by every process through the database."""

from __future__ import annotations

from storage.db import Database


class TokenRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, app_id: str) -> tuple[str, float] | None:
        row = await self.db.fetchone(
            "SELECT access_token, expires_at FROM wechat_tokens WHERE app_id = ?", (app_id,)
        )
        return (row["access_token"], row["expires_at"]) if row else None

    async def put(self, app_id: str, token: str, expires_at: float, now: float) -> None:
        await self.db.write_one(
            "INSERT INTO wechat_tokens (app_id, access_token, expires_at, fetched_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (app_id) DO UPDATE SET access_token = excluded.access_token,"
            " expires_at = excluded.expires_at, fetched_at = excluded.fetched_at",
            (app_id, token, expires_at, now))

    async def claim_refresh(self, app_id: str, stale: str) -> bool:
        """Mark `stale` (which WeChat refused) expired; True for the one caller, on any host, that did:
        it fetches the new token while the others wait for it to be stored."""
        rows = await self.db.write_one(
            "UPDATE wechat_tokens SET expires_at = 0 WHERE app_id = ? AND access_token = ? AND expires_at > 0"
            " RETURNING app_id", (app_id, stale))
        return bool(rows)
