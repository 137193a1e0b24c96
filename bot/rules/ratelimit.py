"""Rule: at most `limit` questions per user per `window` seconds, counted in storage so every
process shares one count. Whitelisted users are not counted."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.rules.base import GO, RATE_LIMITED, Go, Question, Refusal
from storage.rate_events import RateCount, RateEvents


class RateLimitRule:
    name = "ratelimit"

    def __init__(self, events: RateEvents, limit: int, window: float, text: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.events = events
        self.limit = limit
        self.window = window
        self.text = text
        self.clock = clock

    def counts(self, q: Question) -> bool:
        """Whether `check` would count `q` (whitelisted users are let on uncounted)."""
        return not q.whitelisted

    def count(self) -> RateCount:
        """A question to count now, for storage that counts it with another step (ledger.admit_and_reserve)."""
        now = self.clock()
        return RateCount(self.limit, now - self.window, now)

    async def check(self, q: Question) -> Go | Refusal:
        if not self.counts(q) or await self.events.admit(q.openid, self.limit, self.window, self.clock()):
            return GO
        return self.refusal()

    def refusal(self) -> Refusal:
        return Refusal(RATE_LIMITED, self.text)
