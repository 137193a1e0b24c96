"""A channel's health: a circuit breaker, a rate-limit rest, and the owner's off switch.

- `failures` retryable failures (connect, timeout, 5xx, protocol) within `window` seconds open the
  breaker for `cooldown` seconds; then exactly one request is let through as a probe: its success
  closes the breaker, its failure opens it again. One error never opens it (one-api's mistake).
- A 429 rests the channel for `rate_limit_cooldown` seconds; it is not a failure and never disables.
- A rejected key or an exhausted balance disables the channel until the owner re-enables it.
- Answers that say nothing about the channel's health (bad request, refused content) are neutral,
  except that they end a probe successfully: the channel did answer.

Pure logic with the clock passed in, so tests drive it in microseconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open", "resting", "disabled"]

_FAILURES = frozenset({"connect", "timeout", "server", "protocol"})


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 3
    window: float = 60.0
    cooldown: float = 30.0
    rate_limit_cooldown: float = 10.0


class Breaker:
    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._failures: deque[float] = deque()
        self._open_until: float | None = None
        self._rest_until = 0.0
        self._probing = False
        self.disabled_reason: str | None = None

    def state(self, now: float) -> State:
        if self.disabled_reason is not None:
            return "disabled"
        if self._open_until is not None:
            return "open" if now < self._open_until else "half_open"
        if now < self._rest_until:
            return "resting"
        return "closed"

    def allows(self, now: float) -> bool:
        """May a new request use this channel now? (Does not take the half-open probe.)"""
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self._probing)

    def begin(self, now: float) -> bool:
        """A request starts on this channel; True if it is the half-open probe."""
        if self.state(now) == "half_open":
            self._probing = True
            return True
        return False

    def succeeded(self, now: float) -> None:
        self._failures.clear()
        self._open_until = None
        self._probing = False

    def abandoned(self) -> None:
        """The request ended without a verdict (the user's deadline, a cancellation)."""
        self._probing = False

    def failed(self, kind: str, now: float, reason: str = "") -> None:
        if kind == "auth":
            self.disabled_reason = reason or "key rejected"
            self._probing = False
        elif kind == "rate_limited":
            self._rest_until = now + self.settings.rate_limit_cooldown
            if self._probing:
                # The probe met a 429: the channel is up but busy; rest, then probe again.
                self._open_until = now + self.settings.rate_limit_cooldown
                self._probing = False
        elif kind in _FAILURES:
            self._record_failure(now)
        elif self._probing:
            self.succeeded(now)

    def _record_failure(self, now: float) -> None:
        if self._probing or self.state(now) == "half_open":
            self._trip(now)
            return
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.settings.window:
            self._failures.popleft()
        if len(self._failures) >= self.settings.failures:
            self._trip(now)

    def _trip(self, now: float) -> None:
        self._open_until = now + self.settings.cooldown
        self._failures.clear()
        self._probing = False

    def disable(self, reason: str) -> None:
        self.disabled_reason = reason

    def enable(self) -> None:
        self.disabled_reason = None
        self._failures.clear()
        self._open_until = None
        self._rest_until = 0.0
        self._probing = False

    def recent_failures(self, now: float) -> int:
        return sum(1 for t in self._failures if t > now - self.settings.window)
