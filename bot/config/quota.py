"""[quota]: the trial and the daily free credits."""

from __future__ import annotations

from pydantic import Field, field_validator

from bot.config.base import Section

class QuotaConfig(Section):
    # Credits granted once, on a follower's first message (0: none).
    trial_credits: int = Field(10, ge=0)
    # Free credits per calendar day in `timezone`; they do not accumulate (0: none).
    daily_free: int = Field(3, ge=0)
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value
