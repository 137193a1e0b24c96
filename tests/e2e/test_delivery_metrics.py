"""WeChat metrics through the real chat path: messages by type, and how each answer reached the user
(in the first reply, on a retry, partial then fetched, hint then fetched, pushed, failed) with the
time from the question to its answer being delivered."""

from __future__ import annotations

import asyncio

import pytest

from bot.keys import GENERATOR
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat, FakeWeChatAPI
from tests.harness import APP_ID, APP_SECRET, TOKEN, make_config
from tests.monitorkit import Samples, scrape, serving, value

DELIVERED = "mpgpt_wechat_answers_delivered_total"
SECONDS = "mpgpt_wechat_answer_delivery_seconds"


@pytest.fixture
async def passive(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url)) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx, app, base


async def _idle(app) -> None:
    await asyncio.wait_for(app[GENERATOR].idle(), 10)


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def _outcomes(before: Samples, after: Samples) -> dict[str, float]:
    words = ("first_reply", "retry", "partial_fetched", "hint_fetched", "pushed", "failed")
    return {w: d for w in words if (d := _delta(before, after, DELIVERED, outcome=w))}


async def test_a_quick_answer_counts_as_delivered_in_the_first_reply_with_its_time(passive, llm):
    wx, _, base = passive
    before = await scrape(base + "/metrics")
    d = await wx.send_text("o_m1", "你好")
    assert d.attempt == 1 and d.content
    after = await scrape(base + "/metrics")
    assert _outcomes(before, after) == {"first_reply": 1}
    assert _delta(before, after, "mpgpt_wechat_messages_total", type="text") == 1
    assert _delta(before, after, SECONDS + "_count", outcome="first_reply") == 1
    # Answered inside WeChat's (scaled) window.
    assert _delta(before, after, SECONDS + "_bucket", outcome="first_reply", le="1.0") == 1


async def test_an_answer_on_wechats_second_delivery_counts_as_a_retry_and_the_message_once(passive, llm):
    wx, _, base = passive
    llm.queue(Script(text="慢一点的回答。", first_delay=0.8))
    before = await scrape(base + "/metrics")
    d = await wx.send_text("o_m2", "问题")
    assert d.attempt == 2
    after = await scrape(base + "/metrics")
    assert _outcomes(before, after) == {"retry": 1}
    assert _delta(before, after, "mpgpt_wechat_messages_total", type="text") == 1  # three deliveries, one message


async def test_a_hint_then_a_fetch_counts_once_when_the_answer_is_fetched(passive, llm):
    wx, app, base = passive
    llm.queue(Script(text="终于想好了。", first_delay=2.0))
    before = await scrape(base + "/metrics")
    d = await wx.send_text("o_m3", "难题")
    assert "正在思考" in d.content
    await _idle(app)
    assert _outcomes(before, await scrape(base + "/metrics")) == {}  # nothing delivered yet
    assert (await wx.send_text("o_m3", "继续")).content == "终于想好了。"
    assert (await wx.send_text("o_m3", "继续")).content  # nothing left: counts nothing
    after = await scrape(base + "/metrics")
    assert _outcomes(before, after) == {"hint_fetched": 1}
    # From the question to the fetch: more than the three deliveries took.
    assert _delta(before, after, SECONDS + "_bucket", outcome="hint_fetched", le="1.0") == 0


async def test_sentences_then_a_fetch_count_as_partial_then_fetched(passive, llm):
    wx, app, base = passive
    llm.queue(Script(chunks=["第一句已经写好。第二", "句来得很晚。"], chunk_delay=2.0))
    before = await scrape(base + "/metrics")
    d = await wx.send_text("o_m4", "问题")
    assert d.content.startswith("第一句已经写好。")
    await _idle(app)
    assert (await wx.send_text("o_m4", "继续")).content == "第二句来得很晚。"
    assert _outcomes(before, await scrape(base + "/metrics")) == {"partial_fetched": 1}


async def test_a_model_failure_counts_as_failed_and_events_count_by_type(passive, llm):
    wx, _, base = passive
    llm.queue(Script.server_error())
    before = await scrape(base + "/metrics")
    d = await wx.send_text("o_m5", "问题")
    assert d.content
    await wx.send_event("o_m5", "subscribe")
    after = await scrape(base + "/metrics")
    assert _outcomes(before, after) == {"failed": 1}
    assert _delta(before, after, "mpgpt_wechat_messages_total", type="subscribe") == 1
    assert _delta(before, after, "mpgpt_generations_total", channel="fake", model="gpt-4o-mini", outcome="failed") == 1


async def test_in_active_mode_a_pushed_answer_counts_as_pushed(tmp_path, llm):
    async with FakeWeChatAPI(APP_ID, APP_SECRET, enforce_budget=True) as api:
        cfg = make_config(tmp_path, llm.base_url, wechat={"mode": "active", "api_base": api.base_url})
        async with serving(cfg) as (base, app), FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            before = await scrape(base + "/metrics")
            api.new_user_message("o_m6")
            assert (await wx.send_text("o_m6", "问题")).is_empty
            await _idle(app)
            for _ in range(100):  # the push runs right after the generation
                if api.sent:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)
            after = await scrape(base + "/metrics")
    assert api.sent and _outcomes(before, after) == {"pushed": 1}


async def test_credits_reserved_for_an_answer_are_settled_and_a_failed_one_refunded(passive, llm):
    wx, app, base = passive
    before = await scrape(base + "/metrics")
    await wx.send_text("o_m7", "你好")
    llm.queue(Script.server_error())
    await wx.send_text("o_m7", "再问")
    await _idle(app)
    after = await scrape(base + "/metrics")
    reserved = _delta(before, after, "mpgpt_credits_total", op="reserved")
    assert reserved == 2  # two questions at the default cost of 1
    assert _delta(before, after, "mpgpt_credits_total", op="settled") == 1
    assert _delta(before, after, "mpgpt_credits_total", op="refunded") == 1
