"""Rule: a frozen account is refused (the owner froze it); nothing else is looked at."""

from __future__ import annotations

from bot.rules.base import FROZEN, Question, Refusal


class StatusRule:
    name = "status"

    def __init__(self, text: str) -> None:
        self.text = text

    async def check(self, q: Question) -> Refusal | None:
        return Refusal(FROZEN, self.text) if q.account.frozen else None
