"""[ai_label], [answer_page] and the typing keys: defaults, and every mistake names its key."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, config_from_dict
from tests.harness import config_data


def _data(tmp_path, **overrides):
    data = config_data(tmp_path, "http://127.0.0.1:9")
    data.pop("ai_label")  # the harness turns the label off for word-for-word tests
    for key in ("typing_lasts", "typing_after"):  # and scales WeChat's timing down
        data["wechat"].pop(key)
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return data


def test_the_label_is_on_by_default_under_the_answer(tmp_path):
    cfg = config_from_dict(_data(tmp_path))
    assert (cfg.ai_label.text, cfg.ai_label.position) == ("内容由 AI 生成", "end")
    assert cfg.answer_page.poll_interval == 0.25 and "{link}" in cfg.answer_page.link_text
    assert (cfg.wechat.typing, cfg.wechat.typing_lasts, cfg.wechat.typing_after) == (True, 15.0, 30.0)


def test_only_an_explicit_false_turns_the_label_off_and_the_owner_may_reword_it(tmp_path):
    assert config_from_dict(_data(tmp_path, ai_label={"text": False})).ai_label.text is False
    assert config_from_dict(_data(tmp_path, ai_label={"text": "本回答由人工智能生成"})).ai_label.text == "本回答由人工智能生成"


@pytest.mark.parametrize(("overrides", "key"), [
    ({"ai_label": {"text": ""}}, "ai_label.text"),
    ({"ai_label": {"text": "   "}}, "ai_label.text"),
    ({"ai_label": {"text": True}}, "ai_label.text"),
    ({"ai_label": {"text": "长" * 61}}, "ai_label.text"),
    ({"ai_label": {"position": "middle"}}, "ai_label.position"),
    ({"answer_page": {"link_text": "没有链接"}}, "answer_page.link_text"),
    ({"answer_page": {"thinking_text": "{link} {when}"}}, "answer_page.thinking_text"),
    ({"answer_page": {"poll_interval": 0}}, "answer_page.poll_interval"),
    ({"wechat": {"typing_lasts": 0}}, "wechat.typing_lasts"),
    ({"wechat": {"typing": "yes"}}, "wechat.typing"),
    ({"server": {"public_url": "https://mp.example.com"}, "answer_page": {"link_text": "很长的说明" * 80 + "{link}"}},
     "answer_page.link_text"),
])
def test_a_bad_value_names_its_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError) as e:
        config_from_dict(_data(tmp_path, **overrides))
    assert e.value.key == key


def test_the_default_link_fits_the_smallest_reply(tmp_path):
    cfg = config_from_dict(_data(tmp_path, server={"public_url": "https://mp.example.com/"},
                                 wechat={"max_reply_bytes": 600}))
    assert cfg.answer_page.link_text.startswith("（未完）")
