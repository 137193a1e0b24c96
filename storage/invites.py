"""Invitations: a follower's invite code, recording who invited a new follower (once), and paying
the reward inside the transaction of the invitee's first paid top-up (migration 0020).

Refused in SQL, so it holds with any number of processes: inviting oneself (a CHECK), being recorded
twice (the primary key on invitee), circles (the INSERT only happens when the invitee is not among
the inviter's own inviters, walked with a recursive query in the same statement), a follower who is
not new (first seen longer ago than the window).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

import aiosqlite

from storage.db import Database
from storage.ledger import apply_entry

# Letters and digits that cannot be misread (no 0/O, 1/I/L).
_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8

Recorded = Literal["recorded", "unknown_code", "self", "already", "circle", "not_new"]


def _new_code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))


async def reward_invite(conn: aiosqlite.Connection, invitee: str, inviter_credits: int, invitee_credits: int,
                        now: float) -> str | None:
    """Inside the transaction crediting `invitee`'s paid top-up: pay the invitation's reward if it is
    still owed. The inviter's openid when this call paid it, else None."""
    rows = list(await conn.execute_fetchall(
        "UPDATE invites SET rewarded_at = ? WHERE invitee = ? AND rewarded_at IS NULL RETURNING inviter",
        (now, invitee)))
    if not rows:
        return None
    inviter = rows[0]["inviter"]
    if inviter_credits > 0:
        await apply_entry(conn, inviter, "invite", inviter_credits, f"invitee:{invitee}", now=now)
    if invitee_credits > 0:
        await apply_entry(conn, invitee, "invite", invitee_credits, f"invitee:{invitee}", now=now)
    return inviter


class InviteRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def code_for(self, openid: str) -> str:
        """The follower's invite code, made on first ask (a collision draws again)."""
        row = await self.db.lookup("SELECT code FROM invite_codes WHERE openid = ?", (openid,))
        if row is not None:
            return row["code"]
        for _ in range(10):
            async with self.db.transaction() as conn:
                await conn.execute("INSERT INTO invite_codes (openid, code, created_at) VALUES (?, ?, ?)"
                                   " ON CONFLICT DO NOTHING", (openid, _new_code(), self.clock()))
                rows = list(await conn.execute_fetchall("SELECT code FROM invite_codes WHERE openid = ?", (openid,)))
            if rows:
                return rows[0]["code"]
        msg = "no free invite code after 10 draws"
        raise RuntimeError(msg)

    async def inviter_of(self, code: str) -> str | None:
        row = await self.db.lookup("SELECT openid FROM invite_codes WHERE code = ?", (code.strip().upper(),))
        return row["openid"] if row else None

    async def record(self, invitee: str, code: str, via: str, window: float) -> Recorded:
        """Record that the owner of `code` invited `invitee`, if `invitee` is new (first seen within
        `window` seconds) and nothing refuses it."""
        inviter = await self.inviter_of(code)
        if inviter is None:
            return "unknown_code"
        if inviter == invitee:
            return "self"
        now = self.clock()
        async with self.db.transaction() as conn:
            rows = list(await conn.execute_fetchall(
                "WITH RECURSIVE above (openid) AS ("
                " SELECT inviter FROM invites WHERE invitee = ?"
                " UNION SELECT i.inviter FROM invites i JOIN above a ON i.invitee = a.openid)"
                " INSERT INTO invites (invitee, inviter, via, created_at)"
                " SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM above WHERE openid = ?)"
                " AND COALESCE((SELECT MIN(t) FROM (SELECT first_seen AS t FROM users WHERE openid = ?"
                " UNION ALL SELECT created_at FROM accounts WHERE openid = ?) AS seen), ?) > ?"
                " ON CONFLICT (invitee) DO NOTHING RETURNING invitee",
                (inviter, invitee, inviter, via, now, invitee, invitee, invitee, now, now - window)))
            if rows:
                return "recorded"
            if list(await conn.execute_fetchall("SELECT 1 FROM invites WHERE invitee = ?", (invitee,))):
                return "already"
            circle = list(await conn.execute_fetchall(
                "WITH RECURSIVE above (openid) AS (SELECT inviter FROM invites WHERE invitee = ?"
                " UNION SELECT i.inviter FROM invites i JOIN above a ON i.invitee = a.openid)"
                " SELECT 1 FROM above WHERE openid = ?", (inviter, invitee)))
            return "circle" if circle else "not_new"

    async def invited(self, inviter: str) -> tuple[int, int]:
        """(followers this one invited, of whom rewarded)."""
        row = await self.db.fetchone("SELECT COUNT(*) AS n, COUNT(rewarded_at) AS r FROM invites WHERE inviter = ?",
                                     (inviter,))
        return (row["n"], row["r"]) if row else (0, 0)

    async def listing(self, inviter: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Invitations for the owner, newest first (one inviter's, or everyone's)."""
        where, params = ("WHERE inviter = ?", [inviter]) if inviter is not None else ("", [])
        rows = await self.db.fetchall(
            f"SELECT invitee, inviter, via, created_at, rewarded_at FROM invites {where}"
            " ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [dict(r) for r in rows]
