"""Rule: a frozen account is refused (the owner froze it); nothing else is looked at."""

from __future__ import annotations

from bot.rules.base import FROZEN, GO, Go, Question, Refusal


class StatusRule:
    name = "status"

    def __init__(self, text: str) -> None:
        self.text = text

    async def check(self, q: Question) -> Go | Refusal:
        return Refusal(FROZEN, self.text) if q.account.frozen else GO
