"""What a question's rules need to know about its sender, read in one statement: the account (if
it has had its trial), the membership plan, and whether the owner whitelisted them. Three reads
per question before (the ledger's, the plan's, the whitelist's); on PostgreSQL each is a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.db import Database
from storage.ledger import ACCOUNT_COLS, Account, account_from_row
from storage.plans import Plan

# One row for any openid (k), joined or not; storage.inbound reads it with a delivery on PostgreSQL.
STANDING_READ = (
    "SELECT " + ", ".join(f"a.{c}" for c in ACCOUNT_COLS.split(", ")) + ","
    " EXISTS (SELECT 1 FROM ledger l WHERE l.openid = k.openid AND l.kind = 'trial') AS has_trial,"
    " p.tier AS plan_tier, p.ends_at AS plan_ends_at,"
    " EXISTS (SELECT 1 FROM whitelist w WHERE w.openid = k.openid) AS whitelisted"
    " FROM (SELECT CAST(? AS TEXT) AS openid) k"
    " LEFT JOIN accounts a ON a.openid = k.openid LEFT JOIN plans p ON p.openid = k.openid"
)


@dataclass(frozen=True, slots=True)
class Standing:
    # None: no account yet, or one opened without its trial (Ledger.ensure_account completes it)
    account: Account | None
    # the plan row, ended or not
    plan: Plan | None
    whitelisted: bool


def standing_from_row(openid: str, row: Mapping[str, Any]) -> Standing:
    """`openid`'s standing in its row of STANDING_READ."""
    account = None
    if row["openid"] is not None and row["has_trial"]:
        account = account_from_row(row)
    plan = Plan(openid, row["plan_tier"], row["plan_ends_at"]) if row["plan_tier"] is not None else None
    return Standing(account, plan, bool(row["whitelisted"]))


class StandingRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def of(self, openid: str) -> Standing:
        row = await self.db.lookup(STANDING_READ, (openid,))
        assert row is not None  # the FROM is one row, joined or not
        return standing_from_row(openid, row)
