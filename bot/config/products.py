"""[[products]]: what the companion page sells."""

from __future__ import annotations

import re

from pydantic import field_validator

from bot.config.base import PositiveInt, Section

_PRODUCT_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class ProductConfig(Section):
    id: str
    name: str
    credits: PositiveInt
    price_fen: PositiveInt
    enabled: bool = True

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
