"""Active mode (verified accounts): acknowledge at once, push with the customer-service API."""

from __future__ import annotations

import asyncio

import pytest

from bot.keys import GENERATOR
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat, FakeWeChatAPI
from tests.harness import APP_ID, APP_SECRET, TOKEN, make_config, running


@pytest.fixture
async def api():
    async with FakeWeChatAPI(APP_ID, APP_SECRET, enforce_budget=True) as fake:
        yield fake


@pytest.fixture
async def active(tmp_path, llm, api):
    cfg = make_config(tmp_path, llm.base_url, wechat={"mode": "active", "api_base": api.base_url})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx, app


async def _ask(wx: FakeWeChat, api: FakeWeChatAPI, app, openid: str, text: str):
    api.new_user_message(openid)
    d = await wx.send_text(openid, text)
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    for _ in range(50):  # the push runs right after the generation
        await asyncio.sleep(0.02)
        if not app[GENERATOR]._tasks:
            break
    return d


async def test_a_question_is_acknowledged_at_once_and_the_answer_pushed(active, api, llm):
    wx, app = active
    llm.queue(Script(text="推送的回答。", first_delay=0.3))
    d = await _ask(wx, api, app, "o_act", "问题")
    assert d.attempt == 1 and d.is_empty and d.elapsed < 0.3
    await asyncio.sleep(0.1)
    assert api.sent == [("o_act", "推送的回答。")]
    assert api.token_calls == 1


async def test_a_long_answer_is_pushed_in_at_most_five_parts_and_the_rest_is_fetched(active, api, llm):
    wx, app = active
    text = "\n\n".join("这是用来测试推送预算的一段话，会重复很多次。" * 7 for _ in range(40))
    llm.queue(Script(text=text, chunk_chars=500))
    await _ask(wx, api, app, "o_long", "长文")
    await asyncio.sleep(0.1)
    assert len(api.sent) == 5
    assert all(len(c.encode()) <= 2000 for _, c in api.sent)
    assert "继续" in api.sent[-1][1]
    d = await wx.send_text("o_long", "继续")
    assert d.content and d.content.startswith("这是用来测试")


@pytest.mark.parametrize("errcode", [45015, 45047, 45002])
async def test_a_push_refused_by_wechat_keeps_the_answer_for_the_next_message(active, api, llm, errcode):
    wx, app = active
    llm.queue(Script(text="没能推送的回答。"))
    api.fail_next(errcode, openid="o_fail")
    await _ask(wx, api, app, "o_fail", "问题")
    await asyncio.sleep(0.1)
    assert api.sent == []
    d = await wx.send_text("o_fail", "继续")
    assert d.content == "没能推送的回答。"


async def test_an_invalidated_token_is_refreshed_once_and_the_push_goes_through(active, api, llm):
    wx, app = active
    await _ask(wx, api, app, "o_tok", "第一个问题")
    await asyncio.sleep(0.1)
    api.invalidate_token()
    await _ask(wx, api, app, "o_tok", "第二个问题")
    await asyncio.sleep(0.1)
    assert len(api.sent) == 2
    assert api.force_refresh_calls == 1


async def test_the_access_token_is_shared_through_storage(active, api, llm):
    wx, app = active
    for i in range(3):
        await _ask(wx, api, app, f"o_share{i}", "问题")
    await asyncio.sleep(0.1)
    assert len(api.sent) == 3
    assert api.token_calls == 1
