"""Active mode: WeChat's typing indicator while an answer is written, and the budget's last push links
to the answer page."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bot.keys import GENERATOR
from tests.companionkit import serving
from tests.e2e.answerkit import LABEL, ON, link_in
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat, FakeWeChatAPI
from tests.harness import APP_ID, APP_SECRET, TOKEN

# WeChat's 15 s and 30 s, scaled down (the ratio kept, with a little room at the 30 s edge)
LASTS, AFTER = 0.3, 0.7


@pytest.fixture
async def api():
    async with FakeWeChatAPI(APP_ID, APP_SECRET, enforce_budget=True) as fake:
        yield fake


@pytest.fixture
async def active(tmp_path, llm, api):
    wechat = {"mode": "active", "api_base": api.base_url, "typing_lasts": LASTS, "typing_after": AFTER}
    async with serving(tmp_path, llm.base_url, wechat=wechat, **ON) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield base, wx, app


async def _ask(wx, api, app, openid: str, text: str) -> float:
    api.new_user_message(openid)
    asked = time.monotonic()
    d = await wx.send_text(openid, text)
    assert d.is_empty
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    await asyncio.sleep(0.2)  # the push runs right after the generation
    return asked


async def test_a_slow_answer_shows_typing_every_15_seconds_within_30_seconds_of_the_message(active, api, llm):
    _, wx, app = active
    llm.queue(Script(text="想了很久的回答。", first_delay=1.2))
    asked = await _ask(wx, api, app, "o_typing", "难题")
    calls = [(who, cmd, at - asked) for who, cmd, at in api.typing]
    assert [c[:2] for c in calls] == [("o_typing", "Typing")] * 3, calls  # at 0, 15 s and 30 s - ε
    times = [t for *_, t in calls]
    assert times[0] < 0.2 and all(t < AFTER for t in times)
    assert all(b - a >= LASTS * 0.95 for a, b in zip(times, times[1:]))
    assert api.sent == [("o_typing", f"想了很久的回答。\n{LABEL}")]


async def test_a_quick_answer_shows_typing_once_and_none_after_the_message_is_sent(active, api, llm):
    _, wx, app = active
    llm.queue(Script(text="很快的回答。", first_delay=0.05))
    await _ask(wx, api, app, "o_quick", "问题")
    await asyncio.sleep(LASTS * 2)
    assert [c[:2] for c in api.typing] == [("o_quick", "Typing")]
    assert len(api.sent) == 1


async def test_typing_can_be_switched_off(tmp_path, llm, api):
    wechat = {"mode": "active", "api_base": api.base_url, "typing": False}
    async with serving(tmp_path, llm.base_url, wechat=wechat) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            llm.queue(Script(text="回答。", first_delay=0.4))
            await _ask(wx, api, app, "o_off", "问题")
    assert api.typing == [] and len(api.sent) == 1


async def test_the_budgets_last_push_ends_with_the_page_link_and_the_page_has_the_rest(active, api, llm):
    base, wx, app = active
    text = "\n\n".join("这是用来测试推送预算的一段话，会重复很多次。" * 7 for _ in range(40))
    llm.queue(Script(text=text, chunk_chars=500))
    await _ask(wx, api, app, "o_long", "长文")
    assert len(api.sent) == 5 and all(len(c.encode()) <= 2000 for _, c in api.sent)
    last = api.sent[-1][1]
    link = link_in(last)
    assert link.startswith(f"{base}/a/")
    assert [c.count(LABEL) for _, c in api.sent] == [0, 0, 0, 0, 1]
    async with aiohttp.ClientSession() as http, http.get(link) as r:
        assert r.status == 200
        assert text.split("\n\n")[-1] in await r.text()
    d = await wx.send_text("o_long", "继续")  # 继续 still fetches the rest in chat
    assert d.content.startswith("这是用来测试") and LABEL not in d.content
