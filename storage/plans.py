"""Membership plans: the tier a follower holds until a date (migration 0019).

A plan is granted by a paid order, inside the transaction that marks the order paid (OrderRepo
.settle), and taken back by its refund, inside the transaction that begins it. Both are guarded in
SQL: `plan_grants` has one row per order (a repeated notify or the query job racing it grants
nothing twice), and its `revoked_at` moves once. Extending is computed inside the upsert from the
row as it is when the statement runs, so two grants at once both count, on any engine.

Nothing runs when a plan ends: `active()` compares `ends_at` with now, and the rules read it at
every question.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite

from storage.db import Database


@dataclass(frozen=True, slots=True)
class Plan:
    openid: str
    tier: str
    ends_at: float


async def grant_plan(conn: aiosqlite.Connection, ref: str, openid: str, tier: str, days: int, day_seconds: float,
                     now: float) -> Plan | None:
    """Grant `days` of `tier` for `ref` (an order) inside the caller's transaction; the plan after it,
    or None when `ref` granted it already. The same tier still running is extended from its end;
    another tier (or an ended plan) starts now."""
    rows = list(await conn.execute_fetchall(
        "INSERT INTO plan_grants (ref, openid, tier, days, granted_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (ref) DO NOTHING RETURNING ref", (ref, openid, tier, days, now)))
    if not rows:
        return None
    # a plan-only purchase opens the account as a top-up does (the owner's commands find the follower)
    await conn.execute("INSERT INTO accounts (openid, created_at) VALUES (?, ?) ON CONFLICT (openid) DO NOTHING",
                       (openid, now))
    length = days * day_seconds
    rows = list(await conn.execute_fetchall(
        "INSERT INTO plans (openid, tier, ends_at, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (openid) DO UPDATE SET"
        " ends_at = CASE WHEN plans.tier = excluded.tier AND plans.ends_at > ? THEN plans.ends_at + ?"
        " ELSE excluded.ends_at END, tier = excluded.tier, updated_at = excluded.updated_at"
        " RETURNING openid, tier, ends_at", (openid, tier, now + length, now, now, length)))
    r = rows[0]
    return Plan(r["openid"], r["tier"], r["ends_at"])


async def revoke_plan(conn: aiosqlite.Connection, ref: str, day_seconds: float, now: float) -> Plan | None:
    """A refund of `ref`: take back the days it granted (the plan ends no later than now, and never
    earlier than now either: the time used is not reclaimed). The plan after it, or None when `ref`
    granted none or was revoked already."""
    rows = list(await conn.execute_fetchall(
        "UPDATE plan_grants SET revoked_at = ? WHERE ref = ? AND revoked_at IS NULL RETURNING openid, tier, days",
        (now, ref)))
    if not rows:
        return None
    g = rows[0]
    length = g["days"] * day_seconds
    rows = list(await conn.execute_fetchall(
        "UPDATE plans SET ends_at = CASE WHEN ends_at - ? > ? THEN ends_at - ? ELSE ? END, updated_at = ?"
        " WHERE openid = ? AND tier = ? AND ends_at > ? RETURNING openid, tier, ends_at",
        (length, now, length, now, now, g["openid"], g["tier"], now)))
    if not rows:
        return Plan(g["openid"], g["tier"], now)
    r = rows[0]
    return Plan(r["openid"], r["tier"], r["ends_at"])


class PlanRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def get(self, openid: str) -> Plan | None:
        """The follower's plan row, ended or not."""
        row = await self.db.lookup("SELECT openid, tier, ends_at FROM plans WHERE openid = ?", (openid,))
        return Plan(row["openid"], row["tier"], row["ends_at"]) if row else None

    async def active(self, openid: str) -> Plan | None:
        plan = await self.get(openid)
        return plan if plan is not None and plan.ends_at > self.clock() else None
