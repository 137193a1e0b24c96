"""[[products]]: what the companion page sells."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from bot.config.base import PositiveInt, Section
from bot.config.errors import problem

_PRODUCT_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class ProductConfig(Section):
    id: str
    name: str
    # Credits granted (0 for a plan-only product).
    credits: int = Field(ge=0)
    price_fen: PositiveInt
    enabled: bool = True
    # A membership plan: the tier held for `days` days (buying again extends it). "" and 0: none.
    tier: str = ""
    days: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _grants_something(self) -> ProductConfig:
        if bool(self.tier) != bool(self.days):
            raise problem("days" if self.tier else "tier", "tier and days go together: a plan needs both")
        if self.tier == "free":
            raise problem("tier", "'free' is what every follower has; a plan grants another tier")
        if not self.credits and not self.days:
            raise problem("credits", "must be greater than 0 unless the product grants a plan (tier, days)")
        return self

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _PRODUCT_ID.fullmatch(value):
            raise ValueError("must be 1-32 letters, digits, _ or -")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # The name is WeChat Pay's order description: at most 127 characters.
        if not value.strip() or len(value) > 127:
            raise ValueError("must be 1-127 characters")
        return value
