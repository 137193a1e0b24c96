"""[models.NAME] token prices: exact decimals from TOML floats, and errors that name the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config


def load(tmp_path: Path, model_table: str):
    path = tmp_path / "config.toml"
    path.write_text(
        '[wechat]\ntoken = "t"\n[chat]\ndefault_model = "m"\n[[channels]]\nname = "c"\nprovider = "openai"\napi_key = "k"\nmodels = ["m"]\n'
        f"[models.m]\n{model_table}\n", encoding="utf-8")
    return load_config(path)


def test_prices_written_as_toml_floats_are_the_decimals_written(tmp_path):
    m = load(tmp_path, "prompt_price = 0.0015\ncompletion_price = 0.1\nmin_cost = 0.01").models["m"]
    assert (m.prompt_price, m.completion_price, m.min_cost) == (Decimal("0.0015"), Decimal("0.1"), Decimal("0.01"))
    assert load(tmp_path, "prompt_price = 2\ncompletion_price = \"3.5\"").models["m"].completion_price == Decimal("3.5")
    assert load(tmp_path, "cost = 2").models["m"].prompt_price is None


@pytest.mark.parametrize(("table", "message"), [
    ("prompt_price = 0.1", "models.m.completion_price: must be set too"),
    ("completion_price = 0.1", "models.m.prompt_price: must be set too"),
    ("min_cost = 1", "models.m.min_cost: applies to token pricing only"),
    ("prompt_price = -0.1\ncompletion_price = 1", "models.m.prompt_price"),
    ("prompt_price = 0.0000001\ncompletion_price = 1", "models.m.prompt_price"),
    ("prompt_price = nan\ncompletion_price = 1", "models.m.prompt_price"),
    ("prompt_price = true\ncompletion_price = 1", "models.m.prompt_price"),
    ("prompt_price = \"cheap\"\ncompletion_price = 1", "models.m.prompt_price"),
    ("prompt_price = 1\ncompletion_price = 1\nmin_cost = 0.0001", "models.m.min_cost"),
])
def test_a_bad_price_is_one_error_naming_its_key(tmp_path, table, message):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, table)
    assert message in str(e.value)
