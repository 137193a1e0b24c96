"""What a user has: the day in the quota's time zone, opening that day's free credits, and the 余额
reply, which the credits refusal repeats (balance, today's free credits, where to top up)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.config import QuotaConfig, RefusalTextsConfig
from storage.ledger import Account, Ledger


def day_of(ts: float, tz: ZoneInfo) -> str:
    """The calendar day (YYYY-MM-DD) a UTC timestamp falls on in `tz`."""
    return datetime.fromtimestamp(ts, tz).date().isoformat()


class Wallet:
    def __init__(self, ledger: Ledger, quota: QuotaConfig, texts: RefusalTextsConfig, public_url: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.quota = quota
        self.texts = texts
        self.public_url = public_url
        self.clock = clock
        self.tz = ZoneInfo(quota.timezone)

    def today(self) -> str:
        return day_of(self.clock(), self.tz)

    async def open_day(self, openid: str) -> Account:
        """The account (created with its trial on first contact) with today's free credits granted."""
        account = await self.ledger.ensure_account(openid, self.quota.trial_credits)
        if account.daily_day != self.today() and await self.ledger.grant_daily(
                openid, self.quota.daily_free, self.today()):
            account = await self.ledger.account(openid) or account
        return account

    def describe(self, template: str, account: Account, **extra: object) -> str:
        """Fill a balance template. Lines about daily credits are left out when there are none to give,
        and the top-up line when there is no public address to link to."""
        daily = account.daily if account.daily_day == self.today() else 0
        topup = self.texts.topup.format(url=self.public_url) if self.public_url else ""
        lines = template.split("\n")
        if self.quota.daily_free == 0:
            lines = [ln for ln in lines if "{daily" not in ln]
        text = "\n".join(lines).format(balance=account.balance + daily, paid=account.balance, daily=daily,
                                       daily_free=self.quota.daily_free, topup=topup, **extra)
        return "\n".join(ln for ln in text.split("\n") if ln.strip()).strip()

    async def balance_text(self, openid: str) -> str:
        """The reply to 余额."""
        return self.describe(self.texts.balance, await self.open_day(openid))
