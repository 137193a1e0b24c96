"""[plans] and [tiers.NAME]: membership plans (a product with tier and days) and what a tier gives."""

from __future__ import annotations

from pydantic import Field

from bot.config.base import Positive, Section


class PlansConfig(Section):
    # How long one day of a plan lasts, in seconds (tests shorten it; an owner has no reason to).
    day_seconds: Positive = 86400.0


class TierConfig(Section):
    """One [tiers.NAME] table."""

    # Free credits each day while the tier is held, instead of quota.daily_free (-1: quota.daily_free).
    daily_free: int = Field(-1, ge=-1)
