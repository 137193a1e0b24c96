"""[[channels]]: one provider endpoint each, with its models and its routing weights."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import Field, model_validator

from bot.config.base import Positive, PositiveInt, Section, Strs, http_url
from bot.config.errors import problem

Provider = Literal["openai", "zhipuai"]
PROVIDERS: tuple[str, ...] = typing.get_args(Provider)
# A channel without api_key takes MPGPT_CHANNEL_<NAME>_API_KEY, else its provider's usual variable.
PROVIDER_KEY_ENV = {"openai": "OPENAI_API_KEY", "zhipuai": "ZHIPUAI_API_KEY"}


class ChannelConfig(Section):
    name: str
    provider: Provider
    api_key: str = ""
    base_url: str = ""
    models: Annotated[Strs, Field(min_length=1)]
    # Routing: the highest priority tier with a usable channel serves; weights share a tier.
    priority: int = 0
    weight: int = Field(1, ge=1)
    enabled: bool = True
    connect_timeout: Positive = 5.0
    # No first token within this long: the channel failed (before the first token we fail over).
    first_token_timeout: Positive = 30.0
    total_timeout: Positive = 120.0
    # Concurrent streams this channel opens at most; a full channel is skipped by the router.
    max_streams: PositiveInt = 64

    @model_validator(mode="after")
    def _usable(self) -> ChannelConfig:
        if not self.api_key:
            raise problem("api_key", f"is required (or set {PROVIDER_KEY_ENV[self.provider]})")
        if self.first_token_timeout > self.total_timeout:
            raise problem("first_token_timeout", "must not exceed total_timeout")
        if self.base_url:
            try:
                http_url(self.base_url)
            except ValueError as e:
                raise problem("base_url", str(e)) from None
        return self
