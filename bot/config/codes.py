"""[codes]: redemption codes (`mpgpt codes`, `兑换 CODE`)."""

from __future__ import annotations

from pydantic import Field

from bot.config.base import Positive, Section


class CodesConfig(Section):
    # Wrong codes a follower may send within `failure_window` seconds (counted in storage, so over
    # every process); past it 兑换 is refused until the window has passed.
    max_failures: int = Field(5, ge=1)
    failure_window: Positive = 3600.0
