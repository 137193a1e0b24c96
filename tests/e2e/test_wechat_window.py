"""Answers that survive WeChat's 5-second window (scaled: window 0.6 s, 3 deliveries)."""

from __future__ import annotations

import asyncio

import pytest

from bot.chat.textparts import utf8_len
from bot.keys import GENERATOR
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, make_config, running

MORE = "回复「继续」"


@pytest.fixture
async def server(tmp_path, llm):
    async with running(make_config(tmp_path, llm.base_url)) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx, app


async def _idle(app) -> None:
    await asyncio.wait_for(app[GENERATOR].idle(), 10)


async def test_an_answer_ready_after_the_first_window_goes_out_on_the_retry_with_one_generation(server, llm):
    wx, _ = server
    llm.queue(Script(text="慢一点的回答。", first_delay=0.8))
    d = await wx.send_text("o_a", "问题")
    assert d.attempt == 2
    assert d.content == "慢一点的回答。"
    assert len(llm.requests) == 1


async def test_nothing_written_by_the_last_delivery_gets_the_hint_then_the_next_message_fetches(server, llm):
    wx, app = server
    llm.queue(Script(text="终于想好了。", first_delay=2.0))
    d = await wx.send_text("o_b", "难题")
    assert d.attempt == 3 and d.is_valid
    assert "正在思考" in d.content
    assert d.elapsed < 3 * 0.6
    await _idle(app)
    d = await wx.send_text("o_b", "继续")
    assert d.content == "终于想好了。"
    d = await wx.send_text("o_b", "继续")
    assert "没有待取" in d.content
    assert len(llm.requests) == 1


async def test_the_last_delivery_gives_the_whole_sentences_so_far_and_the_rest_is_fetched(server, llm):
    wx, app = server
    llm.queue(Script(chunks=["第一句已经写好。第二", "句来得很晚。"], chunk_delay=2.0))
    d = await wx.send_text("o_c", "问题")
    assert d.attempt == 3
    assert d.content.startswith("第一句已经写好。")
    assert "第二" not in d.content and MORE in d.content
    await _idle(app)
    d = await wx.send_text("o_c", "继续")
    assert d.content == "第二句来得很晚。"


async def test_a_long_answer_is_fetched_in_parts_within_the_byte_limit(server, llm):
    wx, _ = server
    sentence = "这是一个用来测试分段的句子，内容会重复很多次。"
    text = "\n\n".join(sentence * 8 for _ in range(30))  # ~ 16,500 bytes
    llm.queue(Script(text=text, chunk_chars=200))
    parts = []
    d = await wx.send_text("o_d", "写长文")
    while True:
        assert d.is_valid, d.invalid_reason
        assert utf8_len(d.content) <= 2000
        parts.append(d.content)
        if MORE not in d.content:
            break
        d = await wx.send_text("o_d", "继续")
    assert len(parts) >= utf8_len(text) // 2000 + 1
    body = "".join(p.split("\n（未完")[0] for p in parts)
    assert body.replace("\n", "") == text.replace("\n", "")
    assert all(p.split("\n（未完")[0].endswith("。") for p in parts)


async def test_a_new_question_while_an_answer_waits_delivers_the_waiting_answer_and_starts_the_new_one(server, llm):
    wx, app = server
    llm.script_for = lambda req: (Script(text="旧问题的答案。", first_delay=2.0)
                                  if req.messages[-1]["content"] == "旧问题" else Script(text="新问题的答案。"))
    d = await wx.send_text("o_e", "旧问题")
    assert "正在思考" in d.content
    d = await wx.send_text("o_e", "新问题")
    assert d.content.startswith("旧问题的答案。")
    assert "新问题已开始回答" in d.content
    await _idle(app)
    d = await wx.send_text("o_e", "继续")
    assert d.content == "新问题的答案。"
    assert [r.messages[-1]["content"] for r in llm.requests] == ["旧问题", "新问题"]


async def test_a_generation_past_its_deadline_ends_with_a_clear_message(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, chat={"generation_deadline": 0.5})
    llm.queue(Script(text="太晚了。", first_delay=3.0))
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            d = await wx.send_text("o_f", "问题")
    assert d.attempt == 1
    assert "超时" in d.content


async def test_a_model_failure_reaches_the_user_as_one_polite_sentence(server, llm):
    wx, _ = server
    llm.queue(Script.server_error(500))
    d = await wx.send_text("o_g", "问题")
    assert d.content == "抱歉，AI 服务暂时出了点问题，请稍后再试。"


async def test_a_stream_cut_after_text_keeps_the_text_and_says_it_was_cut(server, llm):
    wx, _ = server
    llm.queue(Script(chunks=["前半部分。", "后半"], cut_after=1))
    d = await wx.send_text("o_h", "问题")
    assert d.content.startswith("前半部分。")
    assert "中断" in d.content


async def test_the_conversation_carries_context_until_reset(server, llm):
    wx, app = server
    await wx.send_text("o_i", "我叫小明")
    await wx.send_text("o_i", "我叫什么")
    contents = [m["content"] for m in llm.requests[-1].messages]
    assert contents[1:] == ["我叫小明", "你好，我是测试模型。", "我叫什么"]
    d = await wx.send_text("o_i", "新对话")
    assert "新的对话" in d.content
    await wx.send_text("o_i", "还记得吗")
    assert [m["content"] for m in llm.requests[-1].messages][1:] == ["还记得吗"]


async def test_help_explains_the_commands_without_a_model_call(server, llm):
    wx, _ = server
    d = await wx.send_text("o_j", "帮助")
    assert "继续" in d.content and "新对话" in d.content
    assert llm.requests == []


async def test_a_retry_of_an_answered_message_gets_the_same_reply_without_a_new_generation(server, llm):
    wx, _ = server
    msg = wx.text_message("o_k", "问题")
    first = await wx.deliver(msg)
    again = await wx.deliver(msg)
    assert first.content == again.content == "你好，我是测试模型。"
    assert len(llm.requests) == 1


async def test_the_login_command_and_a_login_code_are_answered_without_a_model_call(server, llm):
    wx, _ = server
    first = await wx.send_text("o_login", "登录")
    wrong = await wx.send_text("o_login", "登录 123456")
    question = await wx.send_text("o_login", "登录 怎么用")  # not a code: a question like any other
    assert "「登录 数字」" in first.content and "登录码不正确或已过期" in wrong.content
    assert question.content == "你好，我是测试模型。" and len(llm.requests) == 1