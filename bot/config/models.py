"""[models.NAME]: what followers see of a model and what a question costs."""

from __future__ import annotations

from pydantic import Field, model_validator

from bot.config.base import PositiveInt, Section, Strs
from bot.config.errors import problem


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

    @model_validator(mode="after")
    def _fits(self) -> ModelConfig:
        if self.max_output_tokens >= self.context_tokens:
            raise problem("max_output_tokens", "must be smaller than context_tokens")
        for i, alias in enumerate(self.aliases):
            if not alias.strip():
                raise problem(f"aliases[{i}]", "must not be empty")
        return self
