"""Rule: at most `limit` questions per user per `window` seconds, counted in storage so every
process shares one count. Whitelisted users are not counted."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.rules.base import GO, RATE_LIMITED, Go, Question, Refusal
from storage.rate_events import RateEvents


class RateLimitRule:
    name = "ratelimit"

    def __init__(self, events: RateEvents, limit: int, window: float, text: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.events = events
        self.limit = limit
        self.window = window
        self.text = text
        self.clock = clock

    async def check(self, q: Question) -> Go | Refusal:
        if q.whitelisted or await self.events.admit(q.openid, self.limit, self.window, self.clock()):
            return GO
        return Refusal(RATE_LIMITED, self.text)
