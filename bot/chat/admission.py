"""Whether a question may go to the model, shared by WeChat and the web chat.

The follower's model is resolved (a model no enabled channel serves is refused, never remapped),
their own key looked up (it costs no credits), and the rule chain run — which reserves the credits
last. A Refusal is what the follower reads; nothing was charged.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.commands import Commands
from bot.chat.own_keys import OwnKeys
from bot.config import Config
from bot.providers.router import ModelUnavailable, Router
from bot.rules.base import Refusal
from bot.rules.chain import Chain

MODEL_UNAVAILABLE = "model_unavailable"


@dataclass(frozen=True, slots=True)
class Admitted:
    model: str
    # the question as the model sees it (mask-list words starred out)
    question: str
    own_key: str | None


class Admission:
    def __init__(self, cfg: Config, router: Router, chain: Chain, commands: Commands, own_keys: OwnKeys | None) -> None:
        self.cfg = cfg
        self.router = router
        self.chain = chain
        self.commands = commands
        self.own_keys = own_keys

    async def admit(self, openid: str, question: str, gen_key: str, model: str | None = None, *,
                    pictures: int = 0, heard_cost: int = 0) -> Admitted | Refusal:
        """`pictures` sent with the question add the model's image_cost each; `heard_cost` is what
        hearing a voice message costs ([speech] cost): both join the question's one reservation, so
        they are settled or refunded with it, exactly once."""
        chosen = model or await self.commands.chosen_model(openid)
        try:
            resolved = self.router.resolve(chosen)
        except ModelUnavailable:
            return Refusal(MODEL_UNAVAILABLE, self.cfg.texts.model_unavailable.format(model=chosen[:40]))
        own_key = await self.own_keys.key_for(openid) if self.own_keys else None
        info = self.router.catalogue.info(resolved)
        # an unknown model has no cost: the chain refuses it, never free
        cost = 0 if own_key else (info.cost + pictures * info.image_cost if info else None)
        if cost is not None:
            cost += heard_cost
        verdict = await self.chain.check(openid, resolved, question, gen_key=gen_key, cost=cost)
        if isinstance(verdict, Refusal):
            return verdict
        return Admitted(resolved, verdict.text, own_key)
