"""The [pay] table and [[products]]: pay is off without them, and every mistake names its key."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, config_from_dict
from tests.fakes.wechatpay import make_keys

BASE = {
    "wechat": {"token": "t"},
    "channels": [{"name": "a", "provider": "openai", "api_key": "k", "models": ["gpt-4o-mini"]}],
}


@pytest.fixture
def pay(tmp_path):
    files = make_keys().write(tmp_path)
    return {"mchid": "1900000109", "app_id": "wxd678efh567hg6787", "private_key_path": files["private_key_path"],
            "cert_serial_no": "ABC123", "apiv3_key": "k" * 32, "notify_url": "https://pay.example.com/api/pay/notify",
            "public_key_path": files["public_key_path"], "public_key_id": "PUB_KEY_ID_0114ABC"}


def load(tmp_path, env=None, **sections):
    return config_from_dict({**BASE, **sections}, env=env or {}, base_dir=str(tmp_path))


def test_without_a_pay_table_pay_is_off_even_with_pay_secrets_in_the_environment(tmp_path):
    cfg = load(tmp_path, env={"MPGPT_PAY_APIV3_KEY": "x" * 32, "MPGPT_PAY_MCHID": "1"})
    assert not cfg.pay.enabled and cfg.pay.apiv3_key == "" and cfg.products == ()


def test_a_complete_pay_table_switches_pay_on_with_defaults_for_the_timings(tmp_path, pay):
    cfg = load(tmp_path, pay=pay, products=[{"id": "p6", "name": "600 积分", "credits": 600, "price_fen": 600}])
    assert cfg.pay.enabled and cfg.pay.api_base == "https://api.mch.weixin.qq.com"
    assert (cfg.pay.order_expiry, cfg.pay.query_after, cfg.pay.notify_tolerance) == (1800.0, 60.0, 300.0)
    assert cfg.products[0].enabled and cfg.products[0].price_fen == 600


def test_pay_secrets_may_come_from_the_environment(tmp_path, pay):
    del pay["apiv3_key"]
    cfg = load(tmp_path, env={"MPGPT_PAY_APIV3_KEY": "e" * 32}, pay=pay)
    assert cfg.pay.apiv3_key == "e" * 32


def test_a_pay_table_switched_off_is_not_checked(tmp_path):
    assert not load(tmp_path, pay={"enabled": False, "mchid": "1"}).pay.enabled


@pytest.mark.parametrize(("change", "message"), [
    ({"mchid": ""}, "pay.mchid: is required"),
    ({"apiv3_key": "short"}, "pay.apiv3_key: must be the 32-character APIv3 key"),
    ({"private_key_path": "missing.pem"}, "pay.private_key_path: file not found"),
    ({"private_key_path": "PUBLIC"}, "pay.private_key_path:"),
    ({"public_key_id": ""}, "pay.public_key_id: is required with the other"),
    ({"public_key_id": "ABC"}, "pay.public_key_id: must start with PUB_KEY_ID_"),
    ({"notify_url": "http://pay.example.com/notify"}, "pay.notify_url: must be an https:// URL"),
    ({"notify_url": "https://pay.example.com/notify?a=1"}, "pay.notify_url: must be a full URL without a query"),
    ({"api_base": "ftp://x"}, "pay.api_base: must be an http(s) URL"),
    ({"order_expiry": 0}, "pay.order_expiry: must be greater than 0"),
    ({"job_interval": "fast"}, "pay.job_interval: must be a number"),
    ({"colour": "red"}, "pay.colour: unknown key"),
])
def test_each_pay_mistake_names_its_key(tmp_path, pay, change, message):
    if change.get("private_key_path") == "PUBLIC":
        change = {"private_key_path": pay["public_key_path"]}
    with pytest.raises(ConfigError) as e:
        load(tmp_path, pay={**pay, **change})
    assert str(e.value).startswith(message)


def test_a_loopback_http_notify_url_is_allowed_for_tests_and_local_proxies(tmp_path, pay):
    assert load(tmp_path, pay={**pay, "notify_url": "http://127.0.0.1:8080/api/pay/notify"}).pay.enabled


@pytest.mark.parametrize(("products", "message"), [
    ([{"id": "p 6", "name": "x", "credits": 1, "price_fen": 1}], "products[0].id: must be 1-32 letters"),
    ([{"id": "p6", "name": "x", "credits": 1, "price_fen": 1}] * 2, "products[1].id: duplicate product id"),
    ([{"id": "p6", "name": "", "credits": 1, "price_fen": 1}], "products[0].name: must be 1-127 characters"),
    ([{"id": "p6", "name": "x", "credits": 0, "price_fen": 1}], "products[0].credits: must be greater than 0"),
    ([{"id": "p6", "name": "x", "credits": 1, "price_fen": -5}], "products[0].price_fen: must be greater than 0"),
    ([{"id": "p6", "name": "x", "credits": 1}], "products[0].price_fen: is required"),
])
def test_each_product_mistake_names_its_key(tmp_path, products, message):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, products=products)
    assert str(e.value).startswith(message)
