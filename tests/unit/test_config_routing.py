"""Config keys of the model side: channel routing, [models.NAME], [router]."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import ConfigError, config_from_dict

CHANNEL = {"name": "main", "provider": "openai", "api_key": "sk-x", "models": ["gpt-4o-mini", "gpt-4o"]}


def build(**extra: Any) -> Any:
    data: dict[str, Any] = {"wechat": {"token": "t"}, "channels": [dict(CHANNEL)]}
    for k, v in extra.items():
        data[k] = v
    return config_from_dict(data)


def test_routing_keys_have_defaults() -> None:
    ch = build().channels[0]
    assert (ch.priority, ch.weight, ch.enabled, ch.max_streams) == (0, 1, True, 64)
    assert ch.first_token_timeout <= ch.total_timeout


def test_a_models_table_is_read_with_aliases() -> None:
    cfg = build(models={"gpt-4o": {"display_name": "GPT-4o", "aliases": ["4o"], "cost": 3}})
    assert cfg.models["gpt-4o"].aliases == ("4o",) and cfg.models["gpt-4o"].cost == 3


def test_the_default_model_may_be_an_alias() -> None:
    cfg = build(models={"gpt-4o": {"aliases": ["4o"]}}, chat={"default_model": "4o"})
    assert cfg.chat.default_model == "4o"


@pytest.mark.parametrize(("extra", "message"), [
    ({"models": {"gpt-4o": {"cost": -1}}}, "models.gpt-4o.cost: must be >= 0"),
    ({"models": {"gpt-4o": {"cost": 1.5}}}, "models.gpt-4o.cost: must be an integer"),
    ({"models": {"gpt-4o": {"price": 1}}}, "models.gpt-4o.price: unknown key"),
    ({"models": {"gpt-4o": {"aliases": ["gpt-4o-mini"]}}}, "models.gpt-4o.aliases[0]:"),
    ({"models": {"gpt-4o": {"max_output_tokens": 9000, "context_tokens": 8000}}},
     "models.gpt-4o.max_output_tokens: must be smaller"),
    ({"router": {"breaker_failures": 0}}, "router.breaker_failures: must be greater than 0"),
    ({"channels": [CHANNEL | {"weight": 0}]}, "channels[0].weight: must be >= 1"),
    ({"channels": [CHANNEL | {"first_token_timeout": 200.0}]}, "channels[0].first_token_timeout:"),
    ({"channels": [CHANNEL | {"enabled": False}]}, "chat.default_model:"),
])
def test_a_bad_value_names_its_key(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(**extra)
    assert str(info.value).startswith(message)
