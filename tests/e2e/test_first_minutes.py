"""A follower's first minutes (issue 16), through /wechat and the page over HTTP: 帮助 lists what is
switched on, 登录 and 余额 say what to do without a public address, the credit unit has one name in
chat and on the page, the page wears the owner's brand and says 微信支付 only when pay is on."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.companionkit import OPENID, browser_session, serving
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import APP_ID, TOKEN


async def say(base: str, text: str) -> str:
    async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        delivery = await wx.send_text(OPENID, text)
    return delivery.content or ""


async def page(base: str) -> str:
    async with browser_session() as http, http.get(base + "/") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_help_lists_every_command_that_is_switched_on(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _):
        default = await say(base, "帮助")
    for word in ("继续", "新对话", "模型", "余额", "登录", "兑换 兑换码", "邀请", "帮助"):
        assert f"「{word}」" in default, (word, default)
    assert "「key" not in default  # followers' own keys are off by default


async def test_help_follows_the_owners_switches_and_words(tmp_path, llm):
    overrides = {"chat": {"allow_own_keys": True, "key_secret": "k" * 32}, "invites": {"enabled": False},
                 "commands": {"balance": ["查余额", "余额"]}, "texts": {"help_commands": {"reset": ""}}}
    async with serving(tmp_path, llm.base_url, **overrides) as (base, _):
        reply = await say(base, "帮助")
    assert "「key sk-…」" in reply and "「key 删除」" in reply
    assert "「查余额」" in reply
    assert "邀请" not in reply and "新对话" not in reply


async def test_without_a_public_address_login_and_balance_still_say_how_long_and_what_to_do(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, server={"public_url": ""},
                       companion={"login_code_ttl": 600}) as (base, _):
        login = await say(base, "登录")
        balance = await say(base, "余额")
    assert "10 分钟内有效" in login and "「登录 数字」发到这里" in login and "http" not in login
    assert re.search(r"余额：\d+ 积分", balance) and "兑换 兑换码" in balance and "网页" in balance


@pytest.mark.parametrize("unit", ["积分", "点"])
async def test_the_unit_has_one_name_in_chat_and_on_the_page(tmp_path, llm, unit):
    other = {"积分": "点", "点": "积分"}[unit]
    async with serving(tmp_path, llm.base_url, texts={"unit": unit}) as (base, _):
        balance, models, help_ = await say(base, "余额"), await say(base, "模型"), await say(base, "帮助")
        html = await page(base)
    assert f" {unit}" in balance and f"每次 1 {unit}" in models and f"剩余{unit}" in help_
    assert f"<title>我的{unit}</title>" in html and f"可用{unit}" in html and f"{unit}明细" in html
    assert f'data-unit="{unit}"' in html
    for text in (balance, models, help_, html):
        assert f"{other}明细" not in text and f"我的{other}" not in text and f" {other}" not in text.replace(" 点击", "")


async def test_products_on_the_page_name_the_unit_too(tmp_path, llm):
    async with FakeWeChatPay(make_keys()) as fake, serving(tmp_path, llm.base_url, fake, texts={"unit": "点"}) as (base, _):
        async with browser_session() as http, http.get(base + "/api/products") as resp:
            products = (await resp.json())["products"]
    assert products and all(p["gives"].endswith(" 点") for p in products if p["credits"]), products


async def test_the_page_wears_the_owners_title_name_and_colours_and_has_a_small_favicon(tmp_path, llm):
    brand = {"title": "小智 <助手>", "account_name": "小智AI", "color": "#AA3300", "background": "#fafafa"}
    async with serving(tmp_path, llm.base_url, companion=brand) as (base, _), browser_session() as http:
        html = await page(base)
        async with http.get(base + "/brand.css") as resp:
            css = await resp.text()
        icons = []
        for path in ("/favicon.svg", "/favicon.ico"):
            async with http.get(base + path) as resp:
                icons.append((resp.status, resp.content_type, resp.headers, await resp.read()))
    assert "<title>小智 &lt;助手&gt;</title>" in html and "<h1>小智 &lt;助手&gt;</h1>" in html  # escaped
    assert "在小智AI的对话框发送" in html and "仅用于小智AI AI 服务" in html
    assert "--brand: #aa3300" in css and "--page: #fafafa" in css
    assert '<link rel="icon" href="/favicon.svg"' in html
    for status, ctype, headers, body in icons:
        assert status == 200 and ctype == "image/svg+xml" and len(body) < 1024
        assert b'fill="#aa3300"' in body and b"<script" not in body
        assert headers["X-Content-Type-Options"] == "nosniff" and "default-src 'self'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("texts,key", [({"unit": "积 分"}, "texts.unit"), ({"unit": "{x}"}, "texts.unit"),
                                       ({"help": "{cmds}"}, "texts.help"),
                                       ({"help_commands": {"fly": "x"}}, "texts.help_commands"),
                                       ({"help_commands": {"more": "{nope}"}}, "texts.help_commands")])
def test_a_bad_unit_or_help_is_refused_naming_the_key(tmp_path, texts, key):
    from bot.config import ConfigError
    from tests.harness import make_config

    with pytest.raises(ConfigError) as e:
        make_config(tmp_path, "http://127.0.0.1:9/v1", texts=texts)
    assert key in str(e.value)


def test_a_product_name_in_the_config_may_say_unit(tmp_path):
    from tests.harness import make_config

    cfg = make_config(tmp_path, "http://127.0.0.1:9/v1", texts={"unit": "点"},
                      products=[{"id": "p1", "name": "100 {unit}（{{unit}} 不是占位符）", "credits": 100, "price_fen": 600}])
    assert cfg.products[0].name == "100 点（{{unit}} 不是占位符）"


@pytest.mark.parametrize("bad", [{"color": "red"}, {"color": "#12345"}, {"title": ""}, {"title": "a\nb"},
                                 {"account_name": "{x}"}])
def test_a_bad_brand_is_refused_naming_the_key(tmp_path, bad):
    from bot.config import ConfigError
    from tests.harness import make_config

    with pytest.raises(ConfigError) as e:
        make_config(tmp_path, "http://127.0.0.1:9/v1", companion=bad)
    assert f"companion.{next(iter(bad))}" in str(e.value)


async def test_the_pay_footer_shows_only_when_pay_is_on(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _):
        off = await page(base)
    async with FakeWeChatPay(make_keys()) as fake, serving(tmp_path / "on", llm.base_url, fake) as (base, _):
        on = await page(base)
    assert "支付由微信支付提供" not in off and "积分仅用于本公众号 AI 服务" in off
    assert "支付由微信支付提供" in on
