"""Membership plans end to end: bought on the page through the fake WeChat Pay (its notify reaches the app over
HTTP), the tier's models in WeChat until the plan's end date, then not."""

from __future__ import annotations

import asyncio

import pytest

from tests.companionkit import OPENID, browser_session, serving, token_in
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import APP_ID, TOKEN
from web_companion.routes import COMPANION

DAY = 1.0


@pytest.fixture
async def fake_pay():
    async with FakeWeChatPay(make_keys()) as fake:
        yield fake


def plan_config(llm_base_url: str) -> dict:
    return {
        "channels": [{"name": "fake", "provider": "openai", "base_url": llm_base_url, "api_key": "sk-test",
                      "models": ["gpt-4o-mini", "gpt-4o"]}],
        "products": [{"id": "vip1", "name": "VIP 会员", "credits": 0, "price_fen": 990, "tier": "vip", "days": 1}],
        "rules": {"tier_models": {"free": ["gpt-4o-mini"], "vip": ["gpt-4o-mini", "gpt-4o"]}},
        "tiers": {"vip": {"daily_free": 50}},
        "plans": {"day_seconds": DAY},
        "quota": {"trial_credits": 5, "daily_free": 0},
    }


async def test_a_plan_bought_twice_runs_twice_as_long_and_its_models_go_when_it_ends(tmp_path, llm, fake_pay):
    llm.default = Script(text="会员的回答。")
    async with serving(tmp_path, llm.base_url, fake_pay, **plan_config(llm.base_url)) as (base, app), \
            browser_session() as http, FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        await wx.send_text(OPENID, "模型 gpt-4o")
        assert "不能使用模型" in (await wx.send_text(OPENID, "问题一")).content
        token = token_in(await app[COMPANION].login.issue(OPENID))
        async with http.post(f"{base}/api/login", json={"token": token}) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/api/products") as resp:
            [product] = (await resp.json())["products"]
            assert (product["tier"], product["days"], product["credits"]) == ("vip", 1, 0)
            assert product["gives"] == "VIP 会员 1 天"
        paid_at = []
        for _ in range(2):
            async with http.post(f"{base}/api/orders", json={"product_id": "vip1"}) as resp:
                order = await resp.json()
            loop = asyncio.get_running_loop()
            paid_at.append(loop.time())
            assert await fake_pay.pay(order["out_trade_no"]) == 204
            assert await fake_pay.notify(order["out_trade_no"]) == 204  # WeChat Pay repeats a notify
        async with http.get(f"{base}/api/me") as resp:
            me = await resp.json()
        assert me["plan"]["tier"] == "vip"
        assert me["daily_free"] == 50 and me["balance"] == 5 + 50
        assert "会员的回答" in (await wx.send_text(OPENID, "问题二")).content
        reply = (await wx.send_text(OPENID, "余额")).content
        assert "会员：VIP" in reply
        # bought twice: two days from the first payment, not one from the second
        await asyncio.sleep(max(0.0, paid_at[0] + 1.3 * DAY - asyncio.get_running_loop().time()))
        assert "会员的回答" in (await wx.send_text(OPENID, "问题三")).content
        await asyncio.sleep(max(0.0, paid_at[0] + 2.1 * DAY - asyncio.get_running_loop().time()))
        assert "不能使用模型" in (await wx.send_text(OPENID, "问题四")).content
        assert "会员" not in (await wx.send_text(OPENID, "余额")).content
