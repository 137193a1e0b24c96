"""What a user has: the day in the quota's time zone, opening that day's free credits, the tier a
membership plan gives, and the 余额 reply, which the credits refusal repeats (balance, today's free
credits, where to top up)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.config import QuotaConfig, RefusalTextsConfig, TierConfig
from bot.economics.pricing import milli_text
from storage.ledger import Account, Ledger
from storage.plans import Plan, PlanRepo
from storage.standing import Standing, StandingRepo
from storage.usage import UsageRepo

# The latest answers whose cost the 余额 reply lists.
RECENT_CHARGES = 3


def day_of(ts: float, tz: ZoneInfo) -> str:
    """The calendar day (YYYY-MM-DD) a UTC timestamp falls on in `tz`."""
    return datetime.fromtimestamp(ts, tz).date().isoformat()


class Wallet:
    def __init__(self, ledger: Ledger, quota: QuotaConfig, texts: RefusalTextsConfig, public_url: str = "",
                 clock: Callable[[], float] = time.time, tiers: Mapping[str, TierConfig] | None = None) -> None:
        self.ledger = ledger
        self.quota = quota
        self.texts = texts
        self.public_url = public_url
        self.clock = clock
        self.tz = ZoneInfo(quota.timezone)
        self.tiers = tiers or {}
        self.plans = PlanRepo(ledger.db, clock)
        self.standing = StandingRepo(ledger.db)
        self.usage = UsageRepo(ledger.db)

    def today(self) -> str:
        return day_of(self.clock(), self.tz)

    def daily_free(self, tier: str) -> int:
        """The free credits a day brings for `tier` ([tiers.NAME] daily_free, else quota.daily_free)."""
        t = self.tiers.get(tier)
        return t.daily_free if t is not None and t.daily_free >= 0 else self.quota.daily_free

    async def open_day(self, openid: str, standing: Standing | None = None) -> Account:
        """The account (created with its trial on first contact) with today's free credits granted,
        its tier the one a running plan gives (read from the plan's end date: an ended plan is simply
        not running, no job has to end it). `standing`: the sender as just read (else read here)."""
        standing = standing or await self.standing.of(openid)
        account = standing.account or await self.ledger.ensure_account(openid, self.quota.trial_credits)
        plan = standing.plan if standing.plan is not None and standing.plan.ends_at > self.clock() else None
        tier = plan.tier if plan is not None else account.tier
        allowance, today = self.daily_free(tier), self.today()
        if account.daily_day != today:
            if await self.ledger.grant_daily(openid, allowance, today):
                account = await self.ledger.account(openid) or account
        elif plan is not None and allowance > self.quota.daily_free:
            # a plan bought after today's grant: today brings the tier's allowance too (once per tier)
            if await self.ledger.raise_daily(openid, today, allowance, tier):
                account = await self.ledger.account(openid) or account
        return dataclasses.replace(account, tier=tier) if tier != account.tier else account

    async def plan(self, openid: str) -> Plan | None:
        return await self.plans.active(openid)

    def describe(self, template: str, account: Account, **extra: object) -> str:
        """Fill a balance template. Lines about daily credits are left out when there are none to give,
        and the top-up line says what to do without a link when there is no public address."""
        # milli-credits: a token-priced answer leaves fractions (shown as 9.985; whole numbers as before)
        daily = account.daily_exact if account.daily_day == self.today() else 0
        paid = account.balance_exact
        topup = self.texts.topup.format(url=self.public_url) if self.public_url else self.texts.topup_elsewhere
        daily_free = self.daily_free(account.tier)
        lines = template.split("\n")
        if daily_free == 0:
            lines = [ln for ln in lines if "{daily" not in ln]
        text = "\n".join(lines).format(balance=milli_text(paid + daily), paid=milli_text(paid), daily=milli_text(daily),
                                       daily_free=daily_free, topup=topup, **extra)
        return "\n".join(ln for ln in text.split("\n") if ln.strip()).strip()

    async def balance_text(self, openid: str) -> str:
        """The reply to 余额."""
        account = await self.open_day(openid)
        text = self.describe(self.texts.balance, account)
        plan = await self.plans.active(openid)
        if plan is not None:
            until = datetime.fromtimestamp(plan.ends_at, self.tz).strftime("%Y-%m-%d %H:%M")
            text += "\n" + self.texts.plan_line.format(tier=plan.tier.upper(), until=until)
        charges = await self.usage.charges(openid, RECENT_CHARGES)
        if charges:
            text += "\n" + self.texts.answer_costs
            for c in charges:
                when = datetime.fromtimestamp(c.at, self.tz).strftime("%m-%d %H:%M")
                text += "\n" + self.texts.answer_cost.format(
                    when=when, model=c.model or "", cost=milli_text(c.milli),
                    estimated=self.texts.estimated_mark if c.estimated else "")
        return text
