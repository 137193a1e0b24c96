"""[quota], [rules] and [words]: defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, config_from_dict


def build(tmp_path: Path, **sections: Any):
    data: dict[str, Any] = {
        "wechat": {"token": "t"},
        "channels": [{"name": "c", "provider": "openai", "api_key": "k", "models": ["gpt-4o-mini"]}],
        "models": {"gpt-4o-mini": {"aliases": ["mini"]}},
        **sections,
    }
    return config_from_dict(data, base_dir=str(tmp_path))


def test_the_defaults_give_a_trial_daily_credits_and_every_rule_in_order(tmp_path):
    cfg = build(tmp_path)
    assert (cfg.quota.trial_credits, cfg.quota.daily_free, cfg.quota.timezone) == (10, 3, "Asia/Shanghai")
    assert cfg.rules.order == ("whitelist", "ratelimit", "status", "models", "words", "credits")
    assert (cfg.rules.rate_limit, cfg.rules.rate_window) == (6, 60.0)
    assert dict(cfg.rules.tier_models) == {} and cfg.words.dictionaries == ()


def test_a_full_credits_configuration_loads(tmp_path):
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "politics.txt").write_text("词\n", encoding="utf-8")
    (tmp_path / "exceptions.txt").write_text("", encoding="utf-8")
    cfg = build(tmp_path, quota={"trial_credits": 0, "daily_free": 5, "timezone": "UTC"},
                rules={"order": ["ratelimit", "credits"], "rate_limit": 2, "rate_window": 1.5,
                       "tier_models": {"free": ["mini"], "pro": ["gpt-4o-mini"]},
                       "texts": {"no_credits": "还差 {cost}，余 {balance}。{topup}"}},
                words={"dictionaries": [{"path": "words/politics.txt", "action": "mask"}],
                       "exceptions_file": "exceptions.txt", "answer_action": "withhold", "reload_interval": 0})
    assert cfg.rules.tier_models["free"] == ("mini",)
    assert cfg.words.dictionaries[0].action == "mask" and cfg.words.answer_action == "withhold"


@pytest.mark.parametrize(("sections", "message"), [
    ({"quota": {"trial_credits": -1}}, "quota.trial_credits: must be >= 0"),
    ({"quota": {"daily_free": "3"}}, "quota.daily_free: must be an integer"),
    ({"quota": {"timezone": "Mars/Olympus"}}, "quota.timezone: unknown time zone"),
    ({"rules": {"order": ["status", "karma"]}}, "rules.order[1]: unknown rule 'karma'"),
    ({"rules": {"order": ["status", "status"]}}, "rules.order[1]: 'status' is listed twice"),
    ({"rules": {"order": ["credits", "words"]}}, "rules.order: 'credits' must come last"),
    ({"rules": {"rate_limit": 0}}, "rules.rate_limit: must be greater than 0"),
    ({"rules": {"rate_window": -1}}, "rules.rate_window: must be greater than 0"),
    ({"rules": {"tier_models": {"free": ["gpt-5"]}}}, "rules.tier_models.free[0]: unknown model 'gpt-5'"),
    ({"rules": {"tier_models": {"pro": ["mini"]}}}, "rules.tier_models: must list the 'free' tier"),
    ({"rules": {"texts": {"frozen": "账号 {openid} 已冻结"}}}, "rules.texts.frozen: unknown placeholder 'openid'"),
    ({"rules": {"texts": {"no_credits": "余额 {balance"}}}, "rules.texts.no_credits: bad braces"),
    ({"rules": {"refusal": 1}}, "rules.refusal: unknown key"),
    ({"words": {"dictionaries": [{"path": "missing.txt"}]}}, "words.dictionaries[0].path: file not found"),
    ({"words": {"dictionaries": [{"action": "block"}]}}, "words.dictionaries[0].path: is required"),
    ({"words": {"exceptions_file": "nope.txt"}}, "words.exceptions_file: file not found"),
    ({"words": {"answer_action": "drop"}}, "words.answer_action: must be 'mask' or 'withhold'"),
    ({"words": {"mask_char": "**"}}, "words.mask_char: must be one character"),
    ({"words": {"reload_interval": -1}}, "words.reload_interval: must be >= 0"),
])
def test_a_bad_value_is_one_error_naming_its_key(tmp_path, sections, message):
    with pytest.raises(ConfigError) as err:
        build(tmp_path, **sections)
    assert str(err.value).startswith(message)


def test_a_dictionary_with_a_bad_action_or_a_duplicate_name_names_its_key(tmp_path):
    (tmp_path / "a.txt").write_text("x\n", encoding="utf-8")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "a.txt").write_text("y\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^words\.dictionaries\[0\]\.action: must be 'block' or 'mask'"):
        build(tmp_path, words={"dictionaries": [{"path": "a.txt", "action": "ban"}]})
    with pytest.raises(ConfigError, match=r"^words\.dictionaries\[1\]\.name: two dictionaries are called 'a'"):
        build(tmp_path, words={"dictionaries": [{"path": "a.txt"}, {"path": "b/a.txt"}]})
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"^words\.dictionaries\[0\]\.path: .* is not UTF-8 text"):
        build(tmp_path, words={"dictionaries": [{"path": "latin1.txt"}]})
