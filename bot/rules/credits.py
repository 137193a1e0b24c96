"""Rule (always last): reserve the answer's credits under its generation key with one conditional
update, or refuse with the balance and where to top up. Whitelisted users are not charged; an
unknown model is refused, never free."""

from __future__ import annotations

from bot.rules.base import GO, MODEL_UNKNOWN, NO_CREDITS, Go, Question, Refusal
from bot.rules.wallet import Wallet


class CreditsRule:
    name = "credits"

    def __init__(self, wallet: Wallet) -> None:
        self.wallet = wallet

    def charges(self, q: Question) -> bool:
        """Whether `check` would reserve credits for `q` (else it decides without storage)."""
        return not q.whitelisted and q.cost is not None

    async def check(self, q: Question) -> Go | Refusal:
        if q.whitelisted:
            return GO
        if q.cost is None:
            return Refusal(MODEL_UNKNOWN, self.wallet.texts.model_unknown.format(model=q.model))
        if await self.wallet.ledger.reserve(q.openid, q.gen_key, q.cost):
            return Go(reserved=True)
        return await self.refusal(q)

    async def refusal(self, q: Question) -> Refusal:
        """The refusal of a question its account cannot pay for: the balance as it is now."""
        assert q.cost is not None
        account = await self.wallet.ledger.account(q.openid) or q.account
        return Refusal(NO_CREDITS, self.wallet.describe(self.wallet.texts.no_credits, account, cost=q.cost))
