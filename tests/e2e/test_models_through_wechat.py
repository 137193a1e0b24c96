"""The model side as a follower meets it in WeChat: 模型, failover, a follower's own key."""

from __future__ import annotations

import asyncio

from bot.keys import DB, GENERATOR
from storage.generations import GenerationRepo
from storage.ledger import Ledger
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, make_config, running


def _two_channels(tmp_path, llm, **extra):
    return make_config(tmp_path, llm.base_url, channels=[
        {"name": "main", "provider": "openai", "base_url": llm.base_url, "api_key": "sk-main",
         "models": ["gpt-4o-mini", "gpt-4o"], "priority": 10},
        {"name": "backup", "provider": "openai", "base_url": llm.base_url, "api_key": "sk-backup",
         "models": ["gpt-4o-mini"]},
    ], models={"gpt-4o": {"display_name": "GPT-4o", "aliases": ["4o"], "cost": 3}}, **extra)


async def test_model_lists_the_models_and_switches_by_name_or_alias(tmp_path, llm):
    async with running(_two_channels(tmp_path, llm)) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            listing = await wx.send_text("o_m", "模型")
            switched = await wx.send_text("o_m", "模型 4o")
            await wx.send_text("o_m", "问题")
            unknown = await wx.send_text("o_m", "模型 gpt-9")
            await asyncio.wait_for(app[GENERATOR].idle(), 10)
            balance = await Ledger(app[DB]).balance("o_m")
    assert "gpt-4o-mini" in listing.content and "← 当前" in listing.content and "每次 3 积分" in listing.content
    assert switched.content == "已切换到 GPT-4o，之后的提问将使用它。"
    assert llm.requests[-1].model == "gpt-4o"
    assert "没有名为「gpt-9」的模型" in unknown.content
    assert balance == 10 + 3 - 3  # trial 10 + the day's 3 free, one gpt-4o answer at 3


async def test_a_failing_channel_fails_over_before_the_first_token(tmp_path, llm):
    llm.script_for = lambda req: Script.server_error(503) if req.api_key == "sk-main" else Script(text="备用通道。")
    async with running(_two_channels(tmp_path, llm)) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            msg = wx.text_message("o_f", "问题")
            d = await wx.deliver(msg)
            await asyncio.wait_for(app[GENERATOR].idle(), 10)
            await app[GENERATOR].models.flush()
            records = await GenerationRepo(app[DB]).for_message(str(msg.msg_id))
    assert d.content == "备用通道。"
    assert [r.api_key for r in llm.requests] == ["sk-main", "sk-backup"]
    assert [(r.channel, r.outcome) for r in records] == [("main", "failed_over"), ("backup", "ok")]


async def test_a_followers_own_key_is_used_without_credits_and_never_echoed(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, chat={"allow_own_keys": True, "key_secret": "s" * 32},
                      router={"own_key_base_url": llm.base_url})
    key = "sk-follower-0123456789abcdef"
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            saved = await wx.send_text("o_k", f"key {key}")
            answer = await wx.send_text("o_k", "问题")
            await asyncio.wait_for(app[GENERATOR].idle(), 10)
            balance = await Ledger(app[DB]).balance("o_k")
            stored = await app[DB].fetchone("SELECT ciphertext FROM own_keys WHERE openid = 'o_k'")
            llm.queue(Script.unauthorized())
            rejected = await wx.send_text("o_k", "再问")
            removed = await wx.send_text("o_k", "key 删除")
            await wx.send_text("o_k", "第三问")
    assert key not in saved.content and "已保存" in saved.content
    assert answer.content == "你好，我是测试模型。"
    assert llm.requests[0].api_key == key
    assert balance == 13  # trial 10 + the day's 3 free: nothing charged
    assert key.encode() not in bytes(stored["ciphertext"])
    assert "被服务商拒绝" in rejected.content
    assert "已删除" in removed.content
    assert llm.requests[-1].api_key == "sk-test"


async def test_key_followed_by_words_is_a_question_not_a_command(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, chat={"allow_own_keys": True, "key_secret": "s" * 32})
    async with running(cfg) as (url, _):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            d = await wx.send_text("o_q", "key points of marketing")
    assert d.content == "你好，我是测试模型。"
