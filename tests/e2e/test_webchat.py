"""Chat on the companion page: SSE answers with the same conversations, rules and credits as WeChat."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from bot.keys import DB, GENERATOR
from storage.ledger import Ledger
from tests.companionkit import browser_session, token_in, serving
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, refuse_new_answers


async def read_events(response: aiohttp.ClientResponse, stop_after: int | None = None) -> list[tuple[str, object]]:
    events, name = [], None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


@pytest.fixture
async def site(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as browser:
            code = token_in((await wx.send_text("o_web", "登录")).content)
            async with browser.post(f"{base}/api/login", json={"token": code}) as r:
                assert r.status == 200, await r.text()
            yield base, app, wx, browser


async def test_an_answer_streams_as_deltas_then_a_final_event_with_usage_and_credits(site, llm):
    base, app, _, browser = site
    llm.queue(Script(chunks=["第一段，", "第二段，", "第三段。"], chunk_delay=0.05))
    async with browser.post(f"{base}/api/chat", json={"message": "你好"}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = await read_events(r)
    names = [n for n, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    text = "".join(d for n, d in events if n == "delta")
    assert text == "第一段，第二段，第三段。"
    assert names.count("delta") >= 2  # streamed, not one block at the end
    done = events[-1][1]
    assert done["status"] == "done" and done["credits_charged"] == 1
    assert done["usage"]["prompt_tokens"] == 17
    assert done["balance"] == await Ledger(app[DB]).balance("o_web")


@pytest.mark.sqlite_file
async def test_an_answer_whose_closing_write_fails_still_ends_its_stream(site, llm):
    base, app, _, browser = site
    llm.queue(Script(chunks=["第一段，", "第二段。"], chunk_delay=0.05))
    # the database refuses to close any answer (a disk or engine failure at the worst moment)
    await app[DB].write_one("CREATE TRIGGER answers_frozen BEFORE UPDATE OF status ON answers"
                            " BEGIN SELECT RAISE(ABORT, 'frozen'); END")
    async with browser.post(f"{base}/api/chat", json={"message": "你好"}) as r:
        assert r.status == 200
        events = await asyncio.wait_for(read_events(r), 10)  # it used to wait for ever
    assert [n for n, _ in events][-1] == "done"
    assert "".join(d for n, d in events if n == "delta") == "第一段，第二段。"
    # not closed: the answer is left to recovery, which takes it over once its lease runs out
    assert events[-1][1]["status"] == "generating"


async def test_a_question_whose_answer_cannot_be_stored_is_refused_without_holding_credits(site, llm):
    # The reservation and the answer's insert are one transaction: when the database refuses the
    # insert, the browser gets an error without a traceback, and nothing is held or counted.
    base, app, _, browser = site
    db, ledger = app[DB], Ledger(app[DB])
    await ledger.ensure_account("o_web", 10)
    before = await ledger.balance("o_web")
    await refuse_new_answers(db)
    async with browser.post(f"{base}/api/chat", json={"message": "你好"}) as r:
        assert r.status == 500 and await r.json() == {"error": "internal error"}
    assert await ledger.balance("o_web") == before
    assert await db.lookup("SELECT 1 FROM reservations WHERE openid = 'o_web'") is None
    assert await db.lookup("SELECT 1 FROM rate_events WHERE openid = 'o_web'") is None
    assert await ledger.sweep_stale(older_than=0) == 0 and await ledger.check_invariant() == []
    assert llm.requests == []


async def test_a_refusal_is_one_event_with_a_code_and_the_wechat_sentence(site, llm):
    base, app, _, browser = site
    await Ledger(app[DB]).ensure_account("o_web", 10)
    from storage.accounts import Accounts

    await Accounts(app[DB]).freeze("o_web")
    async with browser.post(f"{base}/api/chat", json={"message": "你好"}) as r:
        events = await read_events(r)
    assert events == [("refusal", {"code": "frozen", "text": "你的账号已被暂停使用，如有疑问请联系公众号客服。"})]
    assert llm.requests == []


async def test_bad_requests_get_a_4xx_with_a_reason(site, llm):
    base, _, _, browser = site
    for body, status in [({"message": ""}, 400), ({"message": "x" * 5000}, 413), ({"message": "hi", "model": 3}, 400),
                         ({"message": "hi", "conversation_id": "abc"}, 400), ({"message": "hi", "conversation_id": 999}, 404)]:
        async with browser.post(f"{base}/api/chat", json=body) as r:
            assert r.status == status, body
            assert (await r.json())["reason"]
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(f"{base}/api/chat", json={"message": "hi"}) as r:
            assert r.status == 401
    assert llm.requests == []


async def test_a_browser_that_leaves_half_way_is_settled_once_and_the_rest_is_kept(site, llm):
    base, app, _, browser = site
    llm.queue(Script(chunks=["开头。", "中间。", "结尾。"], chunk_delay=0.3))
    async with browser.post(f"{base}/api/chat", json={"message": "长问题"}) as r:
        first = await read_events(r, stop_after=2)  # start + the first delta, then the tab closes
    assert first[1] == ("delta", "开头。")
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    ledger = Ledger(app[DB])
    kinds = [e.kind for e in await ledger.history("o_web")]
    assert kinds.count("reserve") == 1 and kinds.count("settle") == 1 and "refund" not in kinds
    async with browser.get(f"{base}/api/conversations") as r:
        conv = (await r.json())["conversations"][0]
    async with browser.get(f"{base}/api/conversations/{conv['id']}") as r:
        turns = (await r.json())["turns"]
    assert [t["content"] for t in turns] == ["长问题", "开头。中间。结尾。"]


async def test_one_conversation_continues_across_wechat_and_the_page(site, llm):
    base, app, wx, browser = site
    await wx.send_text("o_web", "在微信里问")
    async with browser.post(f"{base}/api/chat", json={"message": "在网页上接着问"}) as r:
        await read_events(r)
    assert [m["content"] for m in llm.requests[-1].messages][1:] == ["在微信里问", "你好，我是测试模型。", "在网页上接着问"]
    await wx.send_text("o_web", "回到微信")
    assert [m["content"] for m in llm.requests[-1].messages][-2:] == ["你好，我是测试模型。", "回到微信"]
    async with browser.get(f"{base}/api/conversations") as r:
        conversations = (await r.json())["conversations"]
    assert len(conversations) == 1 and conversations[0]["turns"] == 6
    async with browser.post(f"{base}/api/conversations/new", data={"x": "1"}) as r:
        assert r.status == 415  # a cross-site form cannot do it
    async with browser.post(f"{base}/api/conversations/new", json={}) as r:
        assert r.status == 200
    await wx.send_text("o_web", "新话题")
    assert [m["content"] for m in llm.requests[-1].messages][1:] == ["新话题"]


async def test_the_model_list_is_the_tiers_allow_list(tmp_path, llm):
    channels = [{"name": "fake", "provider": "openai", "base_url": llm.base_url, "api_key": "sk-test",
                 "models": ["gpt-4o-mini", "gpt-4o"]}]
    async with serving(tmp_path, llm.base_url, channels=channels,
                       rules={"tier_models": {"free": ["gpt-4o-mini"]}}) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as browser:
            code = token_in((await wx.send_text("o_tier", "登录")).content)
            await browser.post(f"{base}/api/login", json={"token": code})
            async with browser.get(f"{base}/api/models") as r:
                models = (await r.json())["models"]
            async with browser.post(f"{base}/api/chat", json={"message": "hi", "model": "gpt-4o"}) as r:
                events = await read_events(r)
    assert [m["name"] for m in models] == ["gpt-4o-mini"]
    assert events[0][0] == "refusal" and events[0][1]["code"] == "model_not_allowed"
