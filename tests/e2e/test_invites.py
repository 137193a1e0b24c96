"""Invitations end to end: 邀请 in WeChat, a new follower names the code, and the first payment (its notify
repeated, the query job running beside it) pays the inviter once."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.keys import DB
from bot.pay.routes import PAY
from storage.ledger import Ledger
from tests.companionkit import serving
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import APP_ID, TOKEN


@pytest.fixture
async def fake_pay():
    async with FakeWeChatPay(make_keys()) as fake:
        yield fake


async def test_an_invitees_first_payment_rewards_the_inviter_once(tmp_path, llm, fake_pay):
    overrides = {"quota": {"trial_credits": 0, "daily_free": 0}, "invites": {"inviter_reward": 40}}
    async with serving(tmp_path, llm.base_url, fake_pay, **overrides) as (base, app), \
            FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        mine = (await wx.send_text("o_inviter", "邀请")).content
        code = re.search(r"邀请码：([0-9A-Z]+)", mine).group(1)
        assert "已邀请 0 人" in mine
        assert "不能填写自己的邀请码" in (await wx.send_text("o_inviter", f"邀请 {code}")).content
        assert "已记录邀请关系" in (await wx.send_text("o_new", f"邀请 {code.lower()}")).content
        assert "已经填写过" in (await wx.send_text("o_new", f"邀请 {code}")).content
        other = re.search(r"邀请码：([0-9A-Z]+)", (await wx.send_text("o_new", "邀请")).content).group(1)
        assert "邀请码无效" in (await wx.send_text("o_inviter", f"邀请 {other}")).content  # a circle

        no = (await app[PAY].create_order("o_new", "p6", "native")).order.out_trade_no
        assert await fake_pay.pay(no, notify=False) is None  # paid; the notify is late
        queried = f"/v3/pay/transactions/out-trade-no/{no}"
        for _ in range(100):  # the query job (every 0.05 s here) asks about the order and settles it...
            if fake_pay.count(queried):
                break
            await asyncio.sleep(0.01)
        assert fake_pay.count(queried) >= 1
        # ... while the notify arrives, three times at once
        await asyncio.gather(*(fake_pay.notify(no) for _ in range(3)))
        await asyncio.sleep(0.3)
        ledger = Ledger(app[DB])
        assert await ledger.balance("o_inviter") == 40
        assert await ledger.balance("o_new") == 600
        assert await ledger.check_invariant() == []
        assert "已邀请 1 人" in (await wx.send_text("o_inviter", "邀请")).content


async def test_the_owner_lists_invitations_with_mpgpt_invites(tmp_path, llm):
    from tests.ownerkit import ask, assert_one_line_failure, mpgpt, ok
    from tests.ownerkit import serving as serving_process

    async with serving_process(tmp_path, llm) as (config, _, wechat):
        code = re.search(r"邀请码：([0-9A-Z]+)", await ask(wechat, "o_host00001", "邀请")).group(1)
        assert "已记录邀请关系" in await ask(wechat, "o_guest00001", f"邀请 {code}")
        rows = (await ok(config, "invites", "list", "--json")).json()
        assert [(r["invitee"], r["inviter"], r["via"], r["rewarded"]) for r in rows] == [
            ("o_guest00001", "o_host00001", "wechat", False)]
        assert (await ok(config, "invites", "list", "--inviter", "o_guest00001", "--json")).json() == []
        shown = (await ok(config, "invites", "list")).out
        assert "o_guest00001" in shown and "not yet" in shown
        assert_one_line_failure(await mpgpt(config, "invites", "list", "--limit", "0"), "--limit")


async def test_a_new_follower_who_opens_the_invite_link_is_recorded_when_they_log_in_on_the_page(tmp_path, llm):
    import aiohttp

    from storage.invites import InviteRepo
    from tests.companionkit import browser_session, token_in

    async with serving(tmp_path, llm.base_url) as (base, app), \
            FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        mine = (await wx.send_text("o_linker", "邀请")).content
        link = re.search(r"邀请链接：(\S+)", mine).group(1)
        code = link.rsplit("/", 1)[1]
        assert link == f"{base}/i/{code}"
        async with aiohttp.ClientSession() as stranger:  # a malformed code is not kept
            async with stranger.get(f"{base}/i/{code[:4]}%0d%0aX", allow_redirects=False) as r:
                assert r.status == 302 and "mpgpt_invite" not in r.headers.get("Set-Cookie", "")
        async with browser_session() as browser:
            async with browser.get(link.lower(), allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/"
                assert "HttpOnly" in r.headers["Set-Cookie"]
            token = token_in((await wx.send_text("o_arrived", "登录")).content)
            assert "mpgpt_invite" in {c.key for c in browser.cookie_jar}
            async with browser.post(f"{base}/api/login", json={"token": token}) as r:
                assert r.status == 200
            assert "mpgpt_invite" not in {c.key for c in browser.cookie_jar}  # used once
            # logging in again (the cookie is gone) records nothing more
            token = token_in((await wx.send_text("o_arrived", "登录")).content)
            async with browser.post(f"{base}/api/login", json={"token": token}) as r:
                assert r.status == 200
        rows = await InviteRepo(app[DB]).listing()
        assert [(r["invitee"], r["inviter"], r["via"]) for r in rows] == [("o_arrived", "o_linker", "page")]
        assert "已邀请 1 人" in (await wx.send_text("o_linker", "邀请")).content


async def _me(browser, base: str) -> dict:
    async with browser.get(f"{base}/api/me") as r:
        assert r.status == 200
        return await r.json()


async def test_the_page_shows_the_followers_own_invite_code_and_link_and_whom_it_brought(tmp_path, llm):
    from tests.companionkit import browser_session, token_in

    async with serving(tmp_path, llm.base_url, invites={"inviter_reward": 40}) as (base, app), \
            FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as host:
        async with host.post(f"{base}/api/login",
                             json={"token": token_in((await wx.send_text("o_host", "登录")).content)}) as r:
            assert r.status == 200
        invite = (await _me(host, base))["invite"]
        code = invite["code"]
        # the same code and link 邀请 gives in WeChat, what to send there, and what the host gets for it
        mine = (await wx.send_text("o_host", "邀请")).content
        assert code in mine and f"邀请链接：{base}/i/{code}" in mine
        assert invite == {"code": code, "link": f"{base}/i/{code}", "send": f"邀请 {code}", "invited": 0,
                          "reward": 40}
        # the link on the page works: a new follower who opens it and logs in counts on the host's page
        async with browser_session() as guest:
            async with guest.get(invite["link"], allow_redirects=False) as r:
                assert r.status == 302
            async with guest.post(f"{base}/api/login",
                                  json={"token": token_in((await wx.send_text("o_guest", "登录")).content)}) as r:
                assert r.status == 200
        assert (await _me(host, base))["invite"]["invited"] == 1


async def test_with_invitations_off_the_page_shows_no_invite(tmp_path, llm):
    from tests.companionkit import browser_session, token_in

    async with serving(tmp_path, llm.base_url, invites={"enabled": False}) as (base, app), \
            FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as browser:
        async with browser.post(f"{base}/api/login",
                                json={"token": token_in((await wx.send_text("o_host", "登录")).content)}) as r:
            assert r.status == 200
        assert (await _me(browser, base))["invite"] is None
        assert await app[DB].fetchall("SELECT * FROM invite_codes") == []  # none made for nothing
