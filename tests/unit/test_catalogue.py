"""Model names and aliases."""

from __future__ import annotations

from bot.config import ModelConfig
from bot.providers.catalogue import Catalogue


def catalogue() -> Catalogue:
    return Catalogue({"gpt-4o": ModelConfig(display_name="GPT-4o", aliases=("4o", "旗舰"), cost=5),
                      "retired": ModelConfig()}, ["gpt-4o", "glm-4-flash"])


def test_aliases_and_case_resolve_to_the_model() -> None:
    c = catalogue()
    assert c.resolve("4o") == c.resolve("GPT-4O") == c.resolve(" 旗舰 ") == "gpt-4o"


def test_an_unknown_name_resolves_to_nothing() -> None:
    assert catalogue().resolve("gpt-5") is None


def test_a_served_model_without_a_table_gets_defaults() -> None:
    info = catalogue().info("glm-4-flash")
    assert info is not None and (info.display_name, info.cost) == ("glm-4-flash", 1)


def test_the_listing_holds_only_served_models() -> None:
    assert [m.name for m in catalogue().served()] == ["gpt-4o", "glm-4-flash"]
    assert catalogue().info("4o").cost == 5  # type: ignore[union-attr]
