"""Signed plaintext /wechat requests seen within the timestamp tolerance: (timestamp, nonce) -> body digest."""

from __future__ import annotations

import sqlite3

from storage.db import Database


class SignedRequests:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def admit(self, timestamp: str, nonce: str, digest: bytes, expires_at: float) -> bool:
        """Remember the pair with this body's digest; False when the pair came before with another body.

        One statement decides (the first writer's digest stands), so two processes agree."""
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "INSERT INTO wechat_requests (timestamp, nonce, digest, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (timestamp, nonce) DO UPDATE SET expires_at = wechat_requests.expires_at"
                " RETURNING digest", (timestamp, nonce, digest, expires_at)).fetchone()
            return bytes(row["digest"]) == digest

        return await self.db.write(run)

    async def prune(self, before: float) -> int:
        """Forget the pairs stale before `before` (check_url refuses them anyway)."""
        return await self.db.write(lambda conn: conn.execute(
            "DELETE FROM wechat_requests WHERE expires_at < ?", (before,)).rowcount)
