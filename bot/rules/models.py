"""Rule: the model must be known (it has a cost) and allowed for the account's tier.

An empty tier table allows every known model to every tier; otherwise a tier the table does not
list may use nothing. Allow-lists may name aliases: they are resolved to model names up front."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.rules.base import GO, MODEL_NOT_ALLOWED, MODEL_UNKNOWN, Go, Question, Refusal


class ModelsRule:
    name = "models"

    def __init__(self, tier_models: Mapping[str, Sequence[str]], aliases: Mapping[str, str],
                 not_allowed: str, unknown: str) -> None:
        self.allowed = {tier: frozenset(aliases.get(m, m) for m in models) for tier, models in tier_models.items()}
        self.not_allowed = not_allowed
        self.unknown = unknown

    async def check(self, q: Question) -> Go | Refusal:
        if q.cost is None:
            return Refusal(MODEL_UNKNOWN, self.unknown.format(model=q.model))
        if self.allowed and q.model not in self.allowed.get(q.account.tier, frozenset()):
            return Refusal(MODEL_NOT_ALLOWED, self.not_allowed.format(model=q.model))
        return GO
