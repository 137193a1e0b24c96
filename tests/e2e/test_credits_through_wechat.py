"""Credits and rules as a follower meets them in WeChat: charged once, refunded on failure, refused clearly."""

from __future__ import annotations

import asyncio

import pytest

from bot.keys import DB, GENERATOR
from storage.accounts import Accounts
from storage.ledger import Ledger
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, make_config, running


def _cfg(tmp_path, llm, **extra):
    base = {"quota": {"trial_credits": 10, "daily_free": 0}, "rules": {"rate_limit": 1000}}
    for k, v in extra.items():
        base[k] = {**base.get(k, {}), **v}
    return make_config(tmp_path, llm.base_url, **base)


@pytest.fixture
async def server(tmp_path, llm):
    async with running(_cfg(tmp_path, llm)) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx, app


async def test_fifty_concurrent_questions_with_ten_credits_get_exactly_ten_answers(server, llm):
    wx, app = server
    llm.default = Script(text="答案。", first_delay=0.05)
    replies = await asyncio.gather(*(wx.send_text("o_rich", f"问题{i}") for i in range(50)))
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    answered = [d for d in replies if d.content == "答案。"]
    refused = [d for d in replies if d.content and d.content.startswith("余额不足")]
    assert len(answered) == 10 and len(refused) == 40
    assert len(llm.requests) == 10
    ledger = Ledger(app[DB])
    assert await ledger.balance("o_rich") == 0
    assert await ledger.check_invariant() == []


async def test_a_retry_storm_on_one_msgid_charges_once(server, llm):
    wx, app = server
    llm.default = Script(text="只收一次。", first_delay=0.3)
    msg = wx.text_message("o_storm", "问题")
    replies = await asyncio.gather(*(wx.deliver(msg) for _ in range(8)))
    assert {d.content for d in replies} == {"只收一次。"}
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    assert len(llm.requests) == 1
    assert await Ledger(app[DB]).balance("o_storm") == 9


async def test_a_model_failure_before_the_first_token_refunds(server, llm):
    wx, app = server
    llm.queue(Script.server_error(500))
    d = await wx.send_text("o_refund", "问题")
    assert "出了点问题" in d.content
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    ledger = Ledger(app[DB])
    assert await ledger.balance("o_refund") == 10
    kinds = [e.kind for e in await ledger.history("o_refund")]
    assert "reserve" in kinds and "refund" in kinds


async def test_balance_command_shows_the_credits(server, llm):
    wx, _ = server
    await wx.send_text("o_bal", "问题")
    d = await wx.send_text("o_bal", "余额")
    assert "余额：9 积分" in d.content
    assert len(llm.requests) == 1


async def test_frozen_rate_limited_and_not_allowed_users_get_their_own_replies(tmp_path, llm):
    cfg = _cfg(tmp_path, llm, rules={"rate_limit": 2})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            first = await wx.send_text("o_limit", "一")
            second = await wx.send_text("o_limit", "二")
            third = await wx.send_text("o_limit", "三")
            await Accounts(app[DB]).freeze("o_cold")
            frozen = await wx.send_text("o_cold", "问题")
    assert first.content == second.content == "你好，我是测试模型。"
    assert third.content == "提问太频繁啦，请稍等一分钟再问。"
    assert frozen.content == "你的账号已被暂停使用，如有疑问请联系公众号客服。"
    assert len(llm.requests) == 2


async def test_a_tier_that_may_not_use_the_chosen_model_is_refused(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, channels=[
        {"name": "fake", "provider": "openai", "base_url": llm.base_url, "api_key": "sk-test",
         "models": ["gpt-4o-mini", "gpt-4o"]}], rules={"tier_models": {"free": ["gpt-4o-mini"]}})
    async with running(cfg) as (url, _):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            switched = await wx.send_text("o_tier", "模型 gpt-4o")
            refused = await wx.send_text("o_tier", "问题")
    assert "已切换到 gpt-4o" in switched.content
    assert refused.content == "你当前的账号等级不能使用模型 gpt-4o，请换用其他模型。"
    assert llm.requests == []


async def test_a_sensitive_question_is_refused_and_a_sensitive_answer_masked(tmp_path, llm):
    words = tmp_path / "words.txt"
    words.write_text("违禁词\n屏蔽词\n", encoding="utf-8")
    cfg = _cfg(tmp_path, llm, words={"dictionaries": [{"path": str(words), "action": "block"}],
                                     "answer_action": "mask"})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            refused = await wx.send_text("o_words", "这里有个违 禁\u200b词吗")
            llm.queue(Script(text="答案里有屏蔽词。"))
            masked = await wx.send_text("o_words", "正常问题")
    assert refused.content == "抱歉，这个问题涉及不适宜讨论的内容，换个问题试试吧。"
    assert masked.content == "答案里有***。"
    assert len(llm.requests) == 1
