"""Whether a question may go to the model, shared by WeChat and the web chat.

The follower's model is resolved (a model no enabled channel serves is refused, never remapped),
their own key looked up (it costs no credits), and the rule chain run — which reserves the credits
last. A Refusal is what the follower reads; nothing was charged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.chat.commands import Commands
from bot.chat.own_keys import OwnKeys
from bot.config import Config
from bot.economics.pricing import prompt_bound
from bot.providers.base import estimate_tokens
from bot.providers.catalogue import ModelInfo
from bot.providers.router import ModelUnavailable, Router
from bot.rules.base import Refusal
from bot.rules.chain import Chain
from storage.answers import Draft, NewQuestion
from storage.standing import Standing

MODEL_UNAVAILABLE = "model_unavailable"


@dataclass(frozen=True, slots=True)
class Admitted:
    model: str
    # the question as the model sees it (mask-list words starred out)
    question: str
    own_key: str | None
    # the answer, when it was created with the admission (`then`)
    started: NewQuestion | None = None


class Admission:
    def __init__(self, cfg: Config, router: Router, chain: Chain, commands: Commands, own_keys: OwnKeys | None) -> None:
        self.cfg = cfg
        self.router = router
        self.chain = chain
        self.commands = commands
        self.own_keys = own_keys

    async def admit(self, openid: str, question: str, gen_key: str, model: str | None = None, *,
                    pictures: int = 0, heard_cost: int = 0, standing: Standing | None = None,
                    then: Callable[[str, str], Draft] | None = None) -> Admitted | Refusal:
        """`pictures` sent with the question add the model's image_cost each; `heard_cost` is what
        hearing a voice message costs ([speech] cost): both join the question's one reservation, so
        they are settled or refunded with it, exactly once. `then`: the answer to create with the
        reservation (Chain.check); Admitted.started is it, or None for the caller to create."""
        chosen = model or await self.commands.chosen_model(openid)
        try:
            resolved = self.router.resolve(chosen)
        except ModelUnavailable:
            return Refusal(MODEL_UNAVAILABLE, self.cfg.texts.model_unavailable.format(model=chosen[:40]))
        own_key = await self.own_keys.key_for(openid) if self.own_keys else None
        info = self.router.catalogue.info(resolved)
        # an unknown model has no cost: the chain refuses it, never free
        cost = 0 if own_key else (self._answer_cost(info, question) + pictures * info.image_cost if info else None)
        if cost is not None:
            cost += heard_cost
        verdict = await self.chain.check(openid, resolved, question, gen_key=gen_key, cost=cost, standing=standing,
                                        then=then)
        if isinstance(verdict, Refusal):
            return verdict
        return Admitted(resolved, verdict.text, own_key, verdict.started)

    def _answer_cost(self, info: ModelInfo, question: str) -> int:
        """Credits to hold for the answer: the fixed cost, or for a token-priced model an upper bound
        (the most prompt tokens the context may hold, and max_output_tokens, which the provider is
        told as max_tokens); the settle charges the real price and gives the rest back."""
        if info.price is None:
            return info.cost
        c = self.cfg.chat
        fixed = estimate_tokens(c.system_prompt) + estimate_tokens(question)
        return info.price.bound(prompt_bound(c.max_context_tokens, fixed, c.max_turns), info.max_output_tokens)
