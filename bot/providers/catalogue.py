"""The model catalogue: names, aliases, credit cost or token price and limits, from [models.NAME] and the channels.

A model the channels serve but [models] does not describe gets plain defaults (its own name shown,
cost 1). A name that is neither a model nor an alias resolves to nothing: the router refuses it
rather than map it to some other model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.config import ModelConfig
from bot.economics.pricing import TokenPrice


@dataclass(frozen=True)
class ModelInfo:
    name: str
    display_name: str
    aliases: tuple[str, ...]
    cost: int
    context_tokens: int
    max_output_tokens: int
    vision: bool = False
    image_cost: int = 0
    # Token pricing: set, the answer is charged from the provider's usage instead of `cost`.
    price: TokenPrice | None = None


class Catalogue:
    def __init__(self, models: Mapping[str, ModelConfig], served: Iterable[str]) -> None:
        self._info: dict[str, ModelInfo] = {}
        for name in [*models, *served]:
            if name in self._info:
                continue
            m = models.get(name, ModelConfig())
            price = TokenPrice.of(m)
            self._info[name] = ModelInfo(name, m.display_name or name, m.aliases, m.cost, m.context_tokens,
                                         m.max_output_tokens, m.vision, m.image_cost, price)
        self._names: dict[str, str] = {}
        for info in self._info.values():
            for alias in (info.name, *info.aliases):
                self._names.setdefault(alias.casefold(), info.name)
        self._served = frozenset(served)

    def resolve(self, name: str) -> str | None:
        """The model a name or alias means (case-insensitive), or None."""
        key = name.strip()
        if key in self._info:
            return key
        return self._names.get(key.casefold())

    def info(self, name: str) -> ModelInfo | None:
        resolved = self.resolve(name)
        return self._info.get(resolved) if resolved is not None else None

    def served(self) -> list[ModelInfo]:
        """Models some enabled channel serves, in configuration order (for the 模型 command)."""
        return [info for info in self._info.values() if info.name in self._served]
