"""Rule: users on the owner's whitelist skip the rate limit and credits (other rules still apply).

It only notes the fact (in its verdict), so it must come before the rules it exempts from (it does by default)."""

from __future__ import annotations

from bot.rules.base import Go, Question, Refusal
from storage.accounts import Accounts


class WhitelistRule:
    name = "whitelist"

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def check(self, q: Question) -> Go | Refusal:
        return Go(whitelisted=await self.accounts.whitelisted(q.openid))
