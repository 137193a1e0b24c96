"""[companion] and [commands] login: defaults, and every mistake names its key."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, config_from_dict
from tests.harness import config_data, make_config


def test_the_defaults_are_a_week_long_session_five_minute_links_and_oauth_off(tmp_path):
    cfg = make_config(tmp_path, "http://127.0.0.1:9")
    c = cfg.companion
    assert (c.session_days, c.login_code_ttl, c.oauth, c.session_secret) == (7.0, 300.0, False, "")
    assert (c.code_attempts, c.ip_waits, c.failure_window, c.client_ip_header) == (5, 20, 600.0, "")
    assert (c.order_limit, c.order_window) == (10, 600.0)
    assert cfg.commands.login == ("登录",)


def test_the_session_secret_may_come_from_the_environment(tmp_path):
    data = config_data(tmp_path, "http://127.0.0.1:9")
    cfg = config_from_dict(data, env={"MPGPT_COMPANION_SESSION_SECRET": "s" * 40})
    assert cfg.companion.session_secret == "s" * 40


@pytest.mark.parametrize(("overrides", "key"), [
    ({"companion": {"session_secret": "too-short"}}, "companion.session_secret"),
    ({"companion": {"session_days": 0}}, "companion.session_days"),
    ({"companion": {"login_code_ttl": -1}}, "companion.login_code_ttl"),
    ({"companion": {"code_attempts": 0}}, "companion.code_attempts"),
    ({"companion": {"ip_waits": 0}}, "companion.ip_waits"),
    ({"companion": {"order_limit": 0}}, "companion.order_limit"),
    ({"server": {"trusted_proxies": ["10.0.0.0/8", "not-a-network"]}}, "server.trusted_proxies"),
    ({"companion": {"failure_window": 0}}, "companion.failure_window"),
    ({"companion": {"oauth": "yes"}}, "companion.oauth"),
    ({"companion": {"login_text": "链接：{link} {when}"}}, "companion.login_text"),
    ({"companion": {"login_text": "没有链接"}}, "companion.login_text"),
    ({"companion": {"login_code_limited_text": "{hours} 小时"}}, "companion.login_code_limited_text"),
    ({"companion": {"login_code_wrong_text": "{code}"}}, "companion.login_code_wrong_text"),
    ({"companion": {"nonsense": 1}}, "companion.nonsense"),
    ({"companion": {"oauth": True}}, "server.public_url"),
    ({"companion": {"oauth": True}, "wechat": {"app_secret": ""}, "server": {"public_url": "https://a.example/"}},
     "wechat.app_secret"),
    ({"commands": {"login": ["登录", " "]}}, "commands.login[1]"),
])
def test_a_companion_mistake_names_its_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError) as e:
        make_config(tmp_path, "http://127.0.0.1:9", **overrides)
    assert e.value.key == key


def test_oauth_with_a_public_url_and_the_app_secret_is_accepted(tmp_path):
    cfg = make_config(tmp_path, "http://127.0.0.1:9", companion={"oauth": True},
                      server={"public_url": "https://mp.example.com/"})
    assert cfg.companion.oauth
