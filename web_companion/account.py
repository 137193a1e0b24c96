"""What the page shows a logged-in follower: balance, today's free credits, history, recent usage."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bot.config import Config
from bot.economics.pricing import milli_text
from bot.rules.wallet import Wallet
from storage.db import Database
from storage.ledger import Ledger
from storage.redact import short_user
from storage.usage import UsageRepo

HISTORY_PAGE = 20
MAX_HISTORY_PAGE = 50
RECENT_USES = 10


def _signed(milli: int) -> str:
    """A history line's amount as the page shows it: "+5", "-0.731"."""
    return ("+" if milli > 0 else "") + milli_text(milli)


def _credits(milli: int) -> int | str:
    """Credits for the page's JSON: a number when whole (as always), else the exact decimal as a string
    ("9.985"; a float would not be exact)."""
    return milli // 1000 if milli % 1000 == 0 else milli_text(milli)


class AccountView:
    def __init__(self, cfg: Config, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.ledger = Ledger(db, clock)
        self.wallet = Wallet(self.ledger, cfg.quota, cfg.rules.texts, cfg.server.public_url, clock, cfg.tiers)
        self.usage = UsageRepo(db)

    async def exact_balance(self, openid: str) -> int | str:
        """What the follower can spend, as /api/me's "balance" shows it (a number when whole, else "9.985")."""
        return _credits(await self.ledger.balance_milli(openid))

    async def _plan(self, openid: str) -> dict[str, Any] | None:
        plan = await self.wallet.plan(openid)
        return {"tier": plan.tier, "ends_at": plan.ends_at} if plan is not None else None

    async def me(self, openid: str, offset: int = 0, limit: int = HISTORY_PAGE) -> dict[str, Any]:
        """The page's account data. An existing account has today opened first (as 余额 does), so the
        free credits shown are today's; a follower without one (web OAuth before any message) sees zeros."""
        limit = max(1, min(limit, MAX_HISTORY_PAGE))
        account = await self.ledger.account(openid)
        paid = daily = 0
        frozen = False
        if account is not None:
            account = await self.wallet.open_day(openid)
            paid = account.balance_exact
            daily = account.daily_exact if account.daily_day == self.wallet.today() else 0
            frozen = account.frozen
        rows = await self.usage.movements(openid, limit + 1, offset)
        return {
            "user": short_user(openid),
            # whole credits where they are whole (as before token pricing), else e.g. 9.985
            "balance": _credits(paid + daily),
            "paid": _credits(paid),
            "daily": _credits(daily),
            "daily_free": self.wallet.daily_free(account.tier) if account is not None else self.cfg.quota.daily_free,
            "plan": await self._plan(openid),
            "frozen": frozen,
            "history": {
                "offset": offset, "limit": limit, "more": len(rows) > limit,
                "items": [{"kind": m.entry.kind, "amount": m.entry.amount, "daily_amount": m.entry.daily_amount,
                           "at": m.entry.created_at, "credits": _signed(m.entry.total_milli), "model": m.model,
                           "estimated": m.estimated}
                          for m in rows[:limit]],
            },
            "usage": [{"model": u.model, "at": u.started_at, "outcome": u.outcome,
                       "tokens": u.prompt_tokens + u.completion_tokens}
                      for u in await self.usage.recent(openid, RECENT_USES)],
        }
