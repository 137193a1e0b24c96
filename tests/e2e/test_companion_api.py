"""The companion page's JSON API on the real app: account data, products, and orders paid through the fake
WeChat Pay, whose notify reaches the app over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import pytest
import segno
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from bot.keys import DB
from storage.ledger import Ledger
from tests import paykit
from tests.companionkit import OPENID, browser_session, token_in, serving
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import APP_ID, TOKEN
from web_companion.routes import COMPANION, STATIC

WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
             " Mobile/15E148 MicroMessenger/8.0.50(0x1800323c) NetType/WIFI Language/zh_CN")


@pytest.fixture
async def fake_pay():
    async with FakeWeChatPay(make_keys()) as fake:
        yield fake


async def logged_in(base: str, app, http, openid: str = OPENID) -> None:
    """Log in as `openid` with a code issued the way the chat command issues it."""
    code = token_in(await app[COMPANION].login.issue(openid))
    async with http.post(f"{base}/api/login", json={"token": code}) as resp:
        assert resp.status == 200


async def get(http, url: str, **kw):
    async with http.get(url, **kw) as resp:
        return resp.status, await resp.json()


async def post(http, url: str, body, **kw):
    async with http.post(url, json=body, **kw) as resp:
        return resp.status, await resp.json()


async def test_me_shows_balance_todays_free_credits_history_and_usage_after_a_question(tmp_path, llm):
    quota = {"trial_credits": 10, "daily_free": 3}
    async with serving(tmp_path, llm.base_url, quota=quota) as (base, app), browser_session() as http:
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            assert (await wx.send_text(OPENID, "你好")).content
        await logged_in(base, app, http)
        status, me = await get(http, f"{base}/api/me")
    assert status == 200
    # 10 trial + 3 free today, one question (cost 1) taken from the free credits first.
    assert (me["balance"], me["paid"], me["daily"], me["daily_free"]) == (12, 10, 2, 3)
    kinds = [item["kind"] for item in me["history"]["items"]]
    assert kinds == ["reserve", "daily", "trial"]  # newest first; the zero-amount settle row left out
    assert me["history"]["items"][0]["daily_amount"] == -1
    assert [(u["model"], u["outcome"]) for u in me["usage"]] == [("gpt-4o-mini", "ok")]
    assert me["usage"][0]["tokens"] > 0


async def test_the_history_is_paged_with_offset(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, quota={"daily_free": 0}) as (base, app), browser_session() as http:
        ledger = Ledger(app[DB])
        await ledger.ensure_account(OPENID, 0)
        for i in range(5):
            await ledger.apply(OPENID, "admin", i + 1, f"grant-{i}")
        await logged_in(base, app, http)
        _, first = await get(http, f"{base}/api/me", params={"limit": "2"})
        _, last = await get(http, f"{base}/api/me", params={"limit": "2", "offset": "4"})
    assert [i["amount"] for i in first["history"]["items"]] == [5, 4] and first["history"]["more"]
    assert [i["amount"] for i in last["history"]["items"]] == [1] and not last["history"]["more"]


@pytest.mark.parametrize("params", [{"offset": "-1"}, {"offset": "x"}, {"limit": "0"}, {"limit": "500"}])
async def test_a_bad_paging_parameter_gets_a_400_naming_it(tmp_path, llm, params):
    async with serving(tmp_path, llm.base_url) as (base, app), browser_session() as http:
        await logged_in(base, app, http)
        status, body = await get(http, f"{base}/api/me", params=params)
    assert status == 400 and body["reason"] == "bad_param" and next(iter(params)) in body["error"]


async def test_a_follower_who_never_wrote_sees_zeros_and_gets_no_account_from_looking(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, app), browser_session() as http:
        await logged_in(base, app, http, "o_never_wrote_000000000000000")
        status, me = await get(http, f"{base}/api/me")
        assert await Ledger(app[DB]).account("o_never_wrote_000000000000000") is None
    assert status == 200 and me["balance"] == 0 and me["history"]["items"] == [] and me["usage"] == []


async def test_without_pay_the_products_say_top_ups_are_not_open_and_orders_are_refused(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, app), browser_session() as http:
        status, products = await get(http, f"{base}/api/products")
        await logged_in(base, app, http)
        order_status, body = await post(http, f"{base}/api/orders", {"product_id": "p6"})
    assert status == 200 and products == {"open": False, "message": "充值暂未开放，敬请期待。", "products": []}
    assert order_status == 503 and body["reason"] == "topups_closed"


async def test_products_list_only_enabled_ones_with_prices_in_yuan(tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, _), browser_session() as http:
        status, products = await get(http, f"{base}/api/products")
    assert status == 200 and products["open"]
    assert [(p["id"], p["credits"], p["price"]) for p in products["products"]] == [("p6", 600, "6.00"),
                                                                                   ("p30", 3500, "30.00")]


async def test_a_native_order_shows_a_qr_code_and_the_notify_makes_the_poll_report_the_new_balance(
        tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as http:
        await logged_in(base, app, http)
        status, order = await post(http, f"{base}/api/orders", {"product_id": "p6"})
        assert status == 200 and order["kind"] == "native" and order["state"] == "pending"
        assert order["qr_svg"].startswith("data:image/svg+xml")
        code_url = fake_pay.orders[order["out_trade_no"]].code_url
        assert order["qr_svg"] == segno.make(code_url, error="m").svg_data_uri(scale=6, border=2)
        no = order["out_trade_no"]
        status, polled = await get(http, f"{base}/api/orders/{no}")
        assert status == 200 and not polled["paid"] and polled["balance"] == 0
        assert await fake_pay.pay(no) == 204  # WeChat Pay's notify, over HTTP, to the app
        status, polled = await get(http, f"{base}/api/orders/{no}")
        assert await paykit.books_balance(app[DB])
    assert status == 200 and polled["paid"] and polled["state"] == "paid" and polled["balance"] == 600


async def test_asking_again_for_the_same_product_hands_out_the_same_open_order(tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as http:
        await logged_in(base, app, http)
        _, first = await post(http, f"{base}/api/orders", {"product_id": "p6"})
        _, again = await post(http, f"{base}/api/orders", {"product_id": "p6"})
    assert again["out_trade_no"] == first["out_trade_no"] and again["reused"] and again["qr_svg"]
    assert fake_pay.count("/v3/pay/transactions/native") == 1


async def test_inside_wechats_browser_an_order_carries_signed_jsapi_parameters(tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as http:
        await logged_in(base, app, http)
        status, order = await post(http, f"{base}/api/orders", {"product_id": "p30"},
                                   headers={"User-Agent": WECHAT_UA})
    assert status == 200 and order["kind"] == "jsapi" and "qr_svg" not in order
    js = order["jsapi"]
    assert js["appId"] == fake_pay.appid and js["signType"] == "RSA"
    assert js["package"] == f"prepay_id={fake_pay.orders[order['out_trade_no']].prepay_id}"
    assert fake_pay.orders[order["out_trade_no"]].openid == OPENID
    message = f"{js['appId']}\n{js['timeStamp']}\n{js['nonceStr']}\n{js['package']}\n".encode()
    fake_pay.keys.merchant_key.public_key().verify(base64.b64decode(js["paySign"]), message, padding.PKCS1v15(),
                                                   hashes.SHA256())


async def test_a_page_that_cannot_use_the_bridge_may_ask_for_native_explicitly(tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as http:
        await logged_in(base, app, http)
        status, order = await post(http, f"{base}/api/orders", {"product_id": "p6", "kind": "native"},
                                   headers={"User-Agent": WECHAT_UA})
    assert status == 200 and order["kind"] == "native" and order["qr_svg"]


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({"product_id": "nope"}, 404, "no_such_product"),
    ({"product_id": "old"}, 404, "no_such_product"),  # disabled
    ({}, 400, "product_required"),
    ({"product_id": 6}, 400, "product_required"),
    ({"product_id": "p6", "kind": "h5"}, 400, "bad_kind"),
])
async def test_a_bad_order_request_gets_a_clear_4xx(tmp_path, llm, fake_pay, body, status, reason):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as http:
        await logged_in(base, app, http)
        got_status, got = await post(http, f"{base}/api/orders", body)
    assert (got_status, got["reason"]) == (status, reason) and got["error"]


async def test_orders_need_a_session_and_one_users_order_is_invisible_to_another(tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as alice, \
            browser_session() as bob:
        assert (await post(alice, f"{base}/api/orders", {"product_id": "p6"}))[0] == 401
        await logged_in(base, app, alice)
        _, order = await post(alice, f"{base}/api/orders", {"product_id": "p6"})
        await logged_in(base, app, bob, "o_bob_companion_00000000000000")
        status, body = await get(bob, f"{base}/api/orders/{order['out_trade_no']}")
        unknown, _ = await get(alice, f"{base}/api/orders/MP0000000000")
    assert status == 404 and body["reason"] == "no_such_order" and unknown == 404


async def test_when_wechat_pay_fails_to_create_the_order_the_page_gets_a_clear_error(tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as http:
        await logged_in(base, app, http)
        fake_pay.fail_next("/v3/pay/transactions/native", 500, "SYSTEM_ERROR")
        status, body = await post(http, f"{base}/api/orders", {"product_id": "p6"})
    assert status in (502, 503) and body["reason"] == "pay_unavailable" and "Traceback" not in json.dumps(body)


async def test_many_polls_while_the_notify_arrives_credit_once(tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as http:
        await logged_in(base, app, http)
        _, order = await post(http, f"{base}/api/orders", {"product_id": "p6"})
        no = order["out_trade_no"]
        polls = [get(http, f"{base}/api/orders/{no}") for _ in range(10)]
        await asyncio.gather(fake_pay.pay(no), *polls)
        _, final = await get(http, f"{base}/api/orders/{no}")
        assert len(await paykit.topups(app[DB])) == 1
    assert final["balance"] == 600


async def test_a_product_the_owner_takes_off_sale_disappears_from_the_page_at_once(tmp_path, llm, fake_pay):
    from storage.products import ProductRepo

    async with serving(tmp_path, llm.base_url, fake_pay) as (base, app), browser_session() as http:
        await get(http, f"{base}/api/products")  # the config's products are in storage now
        await ProductRepo(app[DB]).update("p30", enabled=False)
        _, products = await get(http, f"{base}/api/products")
    assert [p["id"] for p in products["products"]] == ["p6"]


async def test_the_page_and_everything_it_loads_stay_under_25_kb_on_the_wire(tmp_path, llm):
    """What a phone downloads (gzipped, as every browser asks): under 25 KB; unpacked under 70 KB."""
    import gzip
    import re

    async with serving(tmp_path, llm.base_url) as (base, _), \
            aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        gz = {"Accept-Encoding": "gzip, deflate"}
        async with http.get(f"{base}/", headers=gz) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["Content-Encoding"] == "gzip" and resp.headers["Vary"] == "Accept-Encoding"
            wire = await resp.read()
        html = gzip.decompress(wire)
        assets = re.findall(rb'(?:src|href)="(/[^"]+)"', html)
        assert b"/static/app.js" in assets and b"/static/app.css" in assets and b"/favicon.svg" in assets
        total, unpacked = len(wire), len(html)
        for path in assets:
            async with http.get(base + path.decode(), headers=gz) as resp:
                if resp.status == 404 and path == b"/track.js":  # the tracker's route, when it is not mounted
                    total += len((STATIC / "track.js").read_bytes())
                    continue
                assert resp.status == 200, path
                body = await resp.read()
                total += len(body)
                unpacked += len(gzip.decompress(body) if resp.headers.get("Content-Encoding") == "gzip" else body)
    assert total < 25_000 and unpacked < 70_000, (total, unpacked)


async def test_after_a_top_up_a_verified_account_tells_the_follower_in_wechat(tmp_path, llm, fake_pay):
    import asyncio

    from tests.fakes.wechat import FakeWeChatAPI
    from tests.harness import APP_SECRET

    async with FakeWeChatAPI(APP_ID, APP_SECRET) as api:
        async with serving(tmp_path, llm.base_url, fake_pay,
                           wechat={"mode": "active", "api_base": api.base_url}) as (base, app), \
                browser_session() as http:
            await logged_in(base, app, http)
            _, order = await post(http, f"{base}/api/orders", {"product_id": "p6"})
            assert await fake_pay.pay(order["out_trade_no"]) == 204
            for _ in range(50):  # the notice goes out after the commit, in the background
                if api.sent:
                    break
                await asyncio.sleep(0.02)
    assert api.sent == [(OPENID, "充值成功，已到账 600 积分。感谢支持！")]


async def test_orders_are_limited_per_follower_and_switching_kind_reuses_the_open_order(tmp_path, llm, fake_pay):
    async with serving(tmp_path, llm.base_url, fake_pay, companion={"order_limit": 4}) as (base, app), \
            browser_session() as http, browser_session() as other:
        await logged_in(base, app, http)
        await logged_in(base, app, other, "o_other_follower_000000000000")
        answers = [await post(http, f"{base}/api/orders", {"product_id": "p6", "kind": kind})
                   for kind in ("native", "jsapi", "native", "jsapi", "native", "jsapi")]
        theirs = await post(other, f"{base}/api/orders", {"product_id": "p6"})
    assert [status for status, _ in answers] == [200, 200, 200, 200, 429, 429]
    assert answers[-1][1]["reason"] == "limited" and theirs[0] == 200
    assert len({order["out_trade_no"] for _, order in answers[:4]}) == 1
    # one order at WeChat Pay for the first follower, one for the other
    assert fake_pay.count("/v3/pay/transactions/") == 2
