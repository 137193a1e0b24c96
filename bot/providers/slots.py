"""What every channel shares: its name and models, its three deadlines, and a cap on open streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.providers.base import ProviderError


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Loop times: the first token must come by `first_at`, the whole answer by `total_at`."""

    first_at: float
    total_at: float

    def timed_out(self, name: str, now: float) -> ProviderError:
        waited = "first token" if now < self.total_at else "whole answer"
        return ProviderError("timeout", f"{name}: no {waited} in time")


class StreamSlots:
    def __init__(self, name: str, models: Sequence[str], *, connect_timeout: float, first_token_timeout: float,
                 total_timeout: float, max_streams: int) -> None:
        self.name = name
        self.models = tuple(models)
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.total_timeout = total_timeout
        self.max_streams = max_streams
        self.in_flight = 0
        self._slots = asyncio.Semaphore(max_streams)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Deadlines]:
        """Hold one of `max_streams` slots for a stream; a full channel answers rate_limited in time."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        total_at = start + self.total_timeout
        deadlines = Deadlines(min(total_at, start + self.first_token_timeout), total_at)
        try:
            async with asyncio.timeout_at(min(deadlines.first_at, start + self.connect_timeout)):
                await self._slots.acquire()
        except TimeoutError:
            raise ProviderError("rate_limited", f"{self.name}: all {self.max_streams} streams busy") from None
        self.in_flight += 1
        try:
            yield deadlines
        finally:
            self.in_flight -= 1
            self._slots.release()
