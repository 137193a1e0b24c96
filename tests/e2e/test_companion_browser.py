"""The companion page in headless Chromium (Debian's, driven by Playwright) on a phone-sized screen:
a link from /wechat logs in (or a desktop code sent back in chat), pick a product, pay (QR code, or WeChat's JS bridge inside its browser),
the fake WeChat Pay notifies the app, the page shows the new balance."""

from __future__ import annotations

import os
import re
import urllib.parse
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.companionkit import OPENID, serving, token_in
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import APP_ID, TOKEN

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
PHONE = {"width": 390, "height": 844}
WECHAT_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0"
             " Mobile Safari/537.36 MicroMessenger/8.0.50.2701(0x28003253) NetType/WIFI Language/zh_CN")
# The page polls an order every 2 s; the tests move the page's clock on instead of waiting.
POLL_MS = 2000
NO_CREDITS = {"quota": {"trial_credits": 0, "daily_free": 0}}

if CHROMIUM is None and os.environ.get("MPGPT_REQUIRE_CHROMIUM"):
    pytest.fail("chromium is missing but MPGPT_REQUIRE_CHROMIUM is set (.ci/run installs it)", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def fake_pay():
    async with FakeWeChatPay(make_keys()) as fake:
        yield fake


async def say(base: str, text: str) -> str:
    async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        delivery = await wx.send_text(OPENID, text)
    return delivery.content or ""


async def link_from_wechat(base: str) -> str:
    """The one-time link 登录 answers, as the follower taps it."""
    return f"{base}/#login={token_in(await say(base, '登录'))}"


async def log_in(page, base: str) -> None:
    await page.clock.install()
    await page.goto(await link_from_wechat(base))
    await page.wait_for_selector("#tabs:not([hidden])")
    assert page.url == base + "/"  # the token left the address bar (and history) at once


async def paid_and_shown(page, fake_pay: FakeWeChatPay, credits: int) -> None:
    (no,) = list(fake_pay.orders)
    assert await fake_pay.pay(no) == 204  # the notify reached the app and was committed
    await page.clock.fast_forward(POLL_MS)
    await page.wait_for_selector("#pay-status.ok")
    assert f"已到账 {credits} 积分" in await page.inner_text("#pay-status")
    assert await page.inner_text("#balance") == str(credits)


async def test_a_follower_logs_in_with_a_chat_code_buys_by_qr_code_and_sees_the_new_balance(
        tmp_path, llm, fake_pay, browser):
    async with serving(tmp_path, llm.base_url, fake_pay, **NO_CREDITS) as (base, _):
        page = await browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        await log_in(page, base)
        assert await page.inner_text("#balance") == "0"
        await page.click("#tabs button[data-tab=topup]")
        await page.click("#products button[data-id=p6]")
        qr = await page.wait_for_selector("#qr-img")
        await page.wait_for_selector("#qr:not([hidden])")
        assert await qr.evaluate("img => img.complete && img.naturalWidth > 0")  # the SVG decoded
        await page.screenshot(path=str(tmp_path / "checkout.png"), full_page=True)
        await paid_and_shown(page, fake_pay, 600)
        await page.click("#tabs button[data-tab=account]")
        await page.wait_for_selector("#history li")
        assert "充值" in await page.inner_text("#history")
        await page.screenshot(path=str(tmp_path / "account.png"), full_page=True)
        keep = os.environ.get("MPGPT_SCREENSHOTS")
        if keep:  # for a person checking how the page looks
            for name in ("checkout.png", "account.png"):
                shutil.copy(tmp_path / name, Path(keep) / name)


async def test_inside_wechats_browser_the_page_pays_through_the_js_bridge(tmp_path, llm, fake_pay, browser):
    async with serving(tmp_path, llm.base_url, fake_pay, **NO_CREDITS) as (base, _):
        context = await browser.new_context(viewport=PHONE, user_agent=WECHAT_UA, is_mobile=True)
        # WeChat injects WeixinJSBridge; this one records the call and answers as WeChat does after paying.
        await context.add_init_script("""
            window.bridgeCalls = [];
            window.WeixinJSBridge = { invoke: function (name, params, cb) {
                window.bridgeCalls.push([name, params]);
                setTimeout(function () { cb({ err_msg: "get_brand_wcpay_request:ok" }); }, 0);
            } };
        """)
        page = await context.new_page()
        await log_in(page, base)
        await page.click("#tabs button[data-tab=topup]")
        await page.click("#products button[data-id=p30]")
        await page.wait_for_function("() => window.bridgeCalls.length === 1")
        name, params = await page.evaluate("window.bridgeCalls[0]")
        (order,) = fake_pay.orders.values()
        assert name == "getBrandWCPayRequest" and params["package"] == f"prepay_id={order.prepay_id}"
        assert set(params) == {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
        assert await page.is_hidden("#qr")
        # The bridge said ok, but only the notify counts: the page still shows no success.
        assert "成功" not in await page.inner_text("#pay-status")
        await paid_and_shown(page, fake_pay, 3500)
        await context.close()


async def test_a_used_link_is_explained_on_the_page(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url) as (base, _):
        link = await link_from_wechat(base)
        first = await browser.new_page(viewport=PHONE)
        await first.goto(link)
        await first.wait_for_selector("#tabs:not([hidden])")
        page = await browser.new_page(viewport=PHONE)
        await page.goto(link)
        await page.wait_for_selector("#notice:not([hidden])")
        assert "登录链接已失效" in await page.inner_text("#notice")
        assert await page.is_hidden("#tabs") and await page.is_visible("#login")


async def test_on_a_desktop_the_page_shows_a_code_and_logs_in_once_it_is_sent_in_chat(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url) as (base, _):
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.clock.install()
        await page.goto(base + "/")
        await page.wait_for_selector("#login-desktop:not([hidden])")
        send = await page.inner_text("#login-send")
        assert re.fullmatch(r"登录 \d{6}", send)
        assert "已登录网页" in await say(base, send)
        await page.clock.fast_forward(POLL_MS)
        await page.wait_for_selector("#tabs:not([hidden])")
        assert await page.is_hidden("#login")


async def test_without_pay_the_page_says_top_ups_are_not_open_yet(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url) as (base, _):
        page = await browser.new_page(viewport=PHONE)
        await log_in(page, base)
        await page.click("#tabs button[data-tab=topup]")
        await page.wait_for_selector("#shop-closed:not([hidden])")
        assert "充值暂未开放" in await page.inner_text("#shop-closed")
        assert await page.locator("#products li").count() == 0


async def test_inside_wechats_browser_with_oauth_on_the_page_logs_in_without_a_code(tmp_path, llm, browser):
    from tests.fakes.wechat import FakeWeChatAPI
    from tests.harness import APP_SECRET

    async with FakeWeChatAPI(APP_ID, APP_SECRET) as api, \
            serving(tmp_path, llm.base_url, companion={"oauth": True}, wechat={"api_base": api.base_url}) as (base, _):
        context = await browser.new_context(viewport=PHONE, user_agent=WECHAT_UA, is_mobile=True)

        async def wechat_authorize(route) -> None:
            # WeChat's authorize page: silently (snsapi_base) back to our callback with a fresh code.
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(route.request.url).query)
            api.register_oauth_code("oauth-browser-code", OPENID)
            back = query["redirect_uri"][0] + "?" + urllib.parse.urlencode(
                {"code": "oauth-browser-code", "state": query["state"][0]})
            await route.fulfill(status=302, headers={"Location": back})

        await context.route("https://open.weixin.qq.com/**", wechat_authorize)
        page = await context.new_page()
        await page.goto(base + "/")
        await page.wait_for_selector("#tabs:not([hidden])")
        # (the browser carries the authorize URL's #wechat_redirect fragment over the redirects)
        assert page.url.split("#")[0] == base + "/" and await page.is_hidden("#login")
        assert "/sns/oauth2/access_token" in api.calls
        await context.close()


async def test_the_history_loads_more_rows_on_demand(tmp_path, llm, browser):
    from bot.keys import DB
    from storage.ledger import Ledger

    async with serving(tmp_path, llm.base_url, **NO_CREDITS) as (base, app):
        ledger = Ledger(app[DB])
        await ledger.ensure_account(OPENID, 0)
        for i in range(25):
            await ledger.apply(OPENID, "admin", 1, f"gift-{i}")
        page = await browser.new_page(viewport=PHONE)
        await log_in(page, base)
        await page.wait_for_selector("#history li")
        # the account screen also carries the follower's own invite link (invitations are on by default)
        link = await page.inner_text("#invite-link")
        assert re.fullmatch(re.escape(base) + r"/i/[2-9A-HJKMNP-Z]{8}", link), link
        assert await page.inner_text("#invite-send") == "邀请 " + link[-8:]
        assert await page.locator("#history li").count() == 20
        await page.click("#history-more")
        await page.wait_for_function("() => document.querySelectorAll('#history li').length === 25")
        assert await page.is_hidden("#history-more")
        assert await page.inner_text("#balance") == "25"


async def test_a_follower_redeems_a_code_on_the_top_up_tab_and_sees_the_balance(tmp_path, llm, browser):
    from bot.economics.codes import hash_of, new_code
    from bot.keys import DB
    from storage.codes import CodeRepo

    async with serving(tmp_path, llm.base_url, **NO_CREDITS) as (base, app):
        code = new_code()
        await CodeRepo(app[DB]).add_batch("browser", 25, [hash_of(code)], None)  # type: ignore[list-item]
        page = await browser.new_page(viewport=PHONE, is_mobile=True)
        await log_in(page, base)
        await page.click("#tabs button[data-tab=topup]")
        await page.fill("#redeem-code", "wrong-code")
        await page.click("#redeem-btn")
        await page.wait_for_selector("#redeem-result.error")
        assert "兑换码不正确" in await page.inner_text("#redeem-result")
        await page.fill("#redeem-code", code.lower())
        await page.click("#redeem-btn")
        await page.wait_for_selector("#redeem-result.ok")
        assert "25 积分已到账" in await page.inner_text("#redeem-result")
        assert await page.input_value("#redeem-code") == ""
        await page.click("#tabs button[data-tab=account]")
        await page.wait_for_selector("#history li")
        assert "兑换码" in await page.inner_text("#history")
        assert await page.inner_text("#balance") == "25"


async def test_each_screen_is_a_view_and_hiding_the_page_sends_the_visible_time(tmp_path, llm, browser):
    from storage.analytics import PageEvents
    from bot.keys import DB

    async with serving(tmp_path, llm.base_url, analytics={"flush_interval": 0.05}) as (base, app):
        page = await browser.new_page(viewport=PHONE)
        await page.goto(await link_from_wechat(base))
        await page.wait_for_selector("#tabs:not([hidden])")
        await page.wait_for_timeout(200)
        await page.click("#tabs button[data-tab=topup]")
        await page.wait_for_timeout(200)
        await page.click("#tabs button[data-tab=chat]")
        await page.fill("#chat-input", "你好")
        await page.press("#chat-input", "Enter")  # asked with Enter: no click on the chat screen
        await page.wait_for_timeout(300)
        # the follower switches to another app: the page is hidden, not closed
        await page.evaluate("""() => {
            Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""")
        repo = PageEvents(app[DB])
        for _ in range(100):
            views = await repo.views(0, 4e9)
            if len(views) == 3 and all(v.visible_ms > 0 for v in views):
                break
            await page.wait_for_timeout(50)
        clicks = await app[DB].fetchall("SELECT screen, target FROM page_clicks ORDER BY id")
        await page.close()
    assert [v.screen for v in views] == ["account", "shop", "chat"], views
    assert all(v.visible_ms >= 150 for v in views), views
    assert all(v.engaged for v in views)  # a tab clicked on the first two, a question asked on the last
    # a tab button's click belongs to the screen it was made on
    assert [(c["screen"], c["target"].rsplit(">", 1)[-1]) for c in clicks] == [("account", "button"), ("shop", "button")]
