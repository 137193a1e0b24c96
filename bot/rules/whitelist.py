"""Rule: users on the owner's whitelist skip the rate limit and credits (other rules still apply).

It only notes the fact (in its verdict), so it must come before the rules it exempts from (it does by default)."""

from __future__ import annotations

from bot.rules.base import Go, Question, Refusal


class WhitelistRule:
    name = "whitelist"

    async def check(self, q: Question) -> Go | Refusal:
        # the whitelist was read with the rest of the sender's standing (storage.standing)
        return Go(whitelisted=q.on_whitelist)
