"""[models.NAME]: what followers see of a model and what a question costs."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from bot.config.base import PositiveInt, Section, Strs
from bot.config.errors import problem


def _as_decimal(value: Any) -> Any:
    # TOML gives 0.0015 as a float: its shortest repr is what the owner wrote, so it becomes that
    # decimal exactly (never the float's binary approximation). Strings ("0.0015") are taken too.
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, str)):
        try:
            return Decimal(str(value).strip())
        except ArithmeticError:
            return value
    return value


# Credits, exact to the milli-credit per token: at most 6 decimal places, finite, not negative.
Price = Annotated[Decimal, BeforeValidator(_as_decimal), Field(ge=0, decimal_places=6, allow_inf_nan=False,
                                                                 le=1_000_000)]


class ModelConfig(Section):
    """One [models.NAME] table: what followers see and what a question costs."""

    display_name: str = ""
    aliases: Strs = ()
    # Credits per question (the credits issue charges it).
    cost: int = Field(1, ge=0)
    context_tokens: PositiveInt = 8192
    max_output_tokens: PositiveInt = 2048
    # This model is sent pictures (OpenAI-style image_url parts; GLM-4V takes the same).
    vision: bool = False
    # Credits per picture, on top of `cost`.
    image_cost: int = Field(0, ge=0)
    # Token pricing (both prices set, or neither): credits per 1,000 prompt / completion tokens, charged
    # from the provider's usage instead of `cost` (see bot.economics.pricing); fractions allowed.
    prompt_price: Price | None = None
    completion_price: Price | None = None
    # The least a token-priced answer costs, in credits (to the milli-credit).
    min_cost: Annotated[Decimal, BeforeValidator(_as_decimal), Field(ge=0, decimal_places=3, allow_inf_nan=False,
                                                                     le=1_000_000)] = Decimal(0)

    @property
    def token_priced(self) -> bool:
        return self.prompt_price is not None

    @model_validator(mode="after")
    def _fits(self) -> ModelConfig:
        if self.max_output_tokens >= self.context_tokens:
            raise problem("max_output_tokens", "must be smaller than context_tokens")
        if (self.prompt_price is None) != (self.completion_price is None):
            missing = "completion_price" if self.completion_price is None else "prompt_price"
            raise problem(missing, "must be set too: token pricing takes both prices")
        if self.prompt_price is None and self.min_cost:
            raise problem("min_cost", "applies to token pricing only (set prompt_price and completion_price)")
        for i, alias in enumerate(self.aliases):
            if not alias.strip():
                raise problem(f"aliases[{i}]", "must not be empty")
        return self
