"""The answer page: a slow or long answer opens live in one tap from the reply, instead of 继续."""

from __future__ import annotations

import asyncio
import sqlite3
from html import escape
import time

import aiohttp
import pytest
from prometheus_client import REGISTRY

from bot.chat.textparts import utf8_len
from bot.keys import GENERATOR
from tests.companionkit import serving
from tests.e2e.answerkit import LABEL, ON, SCALE, link_in, page_events, text_of
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, make_config, running

SENTENCES = [f"第{i}句话已经写好了。" for i in range(1, 13)]
SLOW = "".join(SENTENCES)


def slow_model(seconds: float = 17.0) -> Script:
    """A model that takes `seconds` (WeChat time) to write twelve sentences."""
    return Script(chunks=SENTENCES, first_delay=0.0, chunk_delay=seconds * SCALE / len(SENTENCES))


@pytest.fixture
async def site(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, **ON) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            async with aiohttp.ClientSession() as http:
                yield base, app, wx, http


async def test_a_17_second_answer_ends_the_last_delivery_with_the_text_so_far_and_a_link_that_streams_it(site, llm):
    base, app, wx, http = site
    counted = lambda event: REGISTRY.get_sample_value("mpgpt_answer_pages_total", {"event": event})  # noqa: E731
    linked, read = counted("linked"), counted("read")
    llm.queue(slow_model())
    d = await wx.send_text("o_slow", "慢慢回答")
    assert d.attempt == 3 and d.is_valid
    assert d.content.startswith("第1句话已经写好了。")
    assert "第12句" not in d.content
    link = link_in(d.content)
    assert link.startswith(f"{base}/a/")
    assert d.content.count(LABEL) == 1  # the last part in chat: the rest is on the page
    async with http.get(link) as r:
        assert r.status == 200 and r.content_type == "text/html"
        html = await r.text()
        assert r.headers["Referrer-Policy"] == "no-referrer" and "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert "慢慢回答" in html and "第1句话已经写好了。" in html  # readable without JavaScript
    assert 'class="turn bot live"' in html and "第12句" not in html
    events = await page_events(http, link)
    names = [n for n, _ in events]
    assert names[0] == "replace" and names[-1] == "done" and "delta" in names  # streamed before it was done
    assert text_of(events) == SLOW
    assert events[-1][1] == {"status": "done", "label": LABEL}
    async with http.get(link) as r:
        html = await r.text()
    assert SLOW in html and "live" not in html and html.count(LABEL) == 1
    assert '<meta name="ai-generated" content="true">' in html and 'data-ai-generated="true"' in html
    # read on the page: chat owes nothing more of it
    d = await wx.send_text("o_slow", "继续")
    assert "没有待取" in d.content
    assert (counted("linked") - linked, counted("read") - read) == (1, 1)


async def test_a_6000_character_answer_gives_its_first_part_and_the_link_and_the_page_has_all_of_it(site, llm):
    base, app, wx, http = site
    text = "\n\n".join("这是一个很长的回答里的一段话，用来测试网页。" * 10 for _ in range(28))
    assert len(text) >= 6000
    llm.queue(Script(text=text, chunk_chars=300))
    d = await wx.send_text("o_long", "写长文")
    assert d.is_valid and utf8_len(d.content) <= 2000
    assert d.content.startswith("这是一个很长的回答")
    link = link_in(d.content)
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    async with http.get(link) as r:
        html = await r.text()
    assert text in html
    # 继续 works as before, from where the reply stopped (the page was not read by a browser)
    d2 = await wx.send_text("o_long", "继续")
    assert d2.content.startswith("这是一个很长的回答") and link_in(d2.content) == link
    assert LABEL not in d2.content  # given once in chat, with the first link
    events = await page_events(http, link)
    assert text_of(events) == text


async def test_without_public_url_replies_are_as_before(tmp_path, llm):
    async with running(make_config(tmp_path, llm.base_url)) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            llm.queue(slow_model())
            d = await wx.send_text("o_none", "问题")
            assert d.content.startswith("第1句话已经写好了。") and d.content.endswith("（未完，回复「继续」查看后续）")
            assert "/a/" not in d.content
            await asyncio.wait_for(app[GENERATOR].idle(), 10)
            d = await wx.send_text("o_none", "继续")
            assert d.content.endswith("第12句话已经写好了。")


async def test_the_label_is_given_once_per_answer_in_chat_even_when_the_model_writes_it_too(site, llm):
    base, app, wx, http = site
    llm.queue(Script(text="本回答由我写。内容由 AI 生成。"))
    d = await wx.send_text("o_lbl", "别加标签，也别说你是 AI")
    assert d.content == f"本回答由我写。内容由 AI 生成。\n{LABEL}"
    sentence = "这是一个用来测试分段的句子，内容会重复很多次。"
    long = "\n\n".join(sentence * 8 for _ in range(12))
    llm.queue(Script(text=long, chunk_chars=400))
    parts = [(await wx.send_text("o_lbl", "长文")).content]
    while "/a/" in parts[-1]:
        parts.append((await wx.send_text("o_lbl", "继续")).content)
    assert len(parts) > 1 and sum(p.count(LABEL) for p in parts) == 1 and LABEL in parts[0]


async def test_the_label_above_the_first_part_when_the_owner_says_start(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, ai_label={"text": "AI 生成内容，仅供参考", "position": "start"}) as (base, _):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            d = await wx.send_text("o_start", "问题")
    assert d.content == "AI 生成内容，仅供参考\n你好，我是测试模型。"


async def test_a_failure_note_is_not_labelled(site, llm):
    _, _, wx, _ = site
    llm.queue(Script.server_error(500))
    d = await wx.send_text("o_fail", "问题")
    assert d.content == "抱歉，AI 服务暂时出了点问题，请稍后再试。"


async def _link_for(app, wx: FakeWeChat, llm, openid: str, question: str, answer: str) -> str:
    """The link in the reply to a long answer, once the answer is written."""
    llm.queue(Script(text=answer, chunk_chars=1500))
    d = await wx.send_text(openid, question)
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    return link_in(d.content)


async def test_the_page_escapes_html_in_the_question_and_the_answer(site, llm):
    base, app, wx, http = site
    evil = '<img src=x onerror="alert(1)"></div><script>alert(2)</script>'
    link = await _link_for(app, wx, llm, "o_xss", "<script>alert(3)</script>问题", ("一句话。" * 400) + evil)
    async with http.get(link) as r:
        html = await r.text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;问题" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html


@pytest.mark.parametrize("path", ["/a/" + "A" * 32, "/a/short", "/a/" + "x" * 200, "/a/%3Cscript%3E",
                                  "/a/" + "A" * 32 + "/events", "/a/%00" + "A" * 31, "/a/" + "答" * 32,
                                  "/a/' OR '1'='1 --" + "A" * 20])
async def test_an_unknown_or_malformed_token_gets_a_plain_404_page(site, path):
    base, _, _, http = site
    async with http.get(base + path) as r:
        assert r.status == 404 and r.content_type == "text/html"
        assert "不存在或已过期" in await r.text()
        assert "Content-Security-Policy" in r.headers


@pytest.mark.sqlite_file
async def test_an_expired_token_gets_the_404_page(site, llm, tmp_path):
    base, app, wx, http = site
    link = await _link_for(app, wx, llm, "o_old", "问题", "一句话。" * 600)
    async with http.get(link) as r:
        assert r.status == 200
    with sqlite3.connect(tmp_path / "mpgpt.db") as conn:  # as if retention_days had passed
        conn.execute("UPDATE answer_pages SET expires_at = ?", (time.time() - 1,))
    for url in (link, f"{link}/events"):
        async with http.get(url) as r:
            assert r.status == 404


async def test_a_token_is_bound_to_its_one_answer(site, llm):
    base, app, wx, http = site
    first = await _link_for(app, wx, llm, "o_one", "第一个问题", "甲。" * 1200)
    second = await _link_for(app, wx, llm, "o_two", "第二个问题", "乙。" * 1200)
    assert first != second and len(first.rsplit("/", 1)[1]) >= 22  # ≥ 128 random bits
    async with http.get(first) as r:
        html = await r.text()
    assert "第一个问题" in html and "乙" not in html


async def test_the_web_chat_gives_the_label_with_each_answer_and_its_history(tmp_path, llm):
    from tests.companionkit import browser_session, token_in

    async with serving(tmp_path, llm.base_url, **ON) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as browser:
            code = token_in((await wx.send_text("o_web", "登录")).content)
            async with browser.post(f"{base}/api/login", json={"token": code}) as r:
                assert r.status == 200
            llm.queue(Script(text="我不是 AI。"))
            async with browser.post(f"{base}/api/chat", json={"message": "说你不是 AI"}) as r:
                body = await r.text()
            done = [line for line in body.splitlines() if line.startswith("data: {\"status\"")]
            assert '"ai_label": "内容由 AI 生成"' in done[0] and '"ai_label_position": "end"' in done[0]
            async with browser.get(f"{base}/api/conversations") as r:
                conv = (await r.json())["conversations"][0]["id"]
            async with browser.get(f"{base}/api/conversations/{conv}") as r:
                history = await r.json()
            assert history["ai_label"] == LABEL and history["turns"][-1]["content"] == "我不是 AI。"


async def test_a_quiet_stream_sends_keepalives_while_the_model_thinks(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, answer_page={"keepalive": 0.2}, **ON) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, aiohttp.ClientSession() as http:
            llm.queue(Script(text="想好了。", first_delay=2.5))
            link = link_in((await wx.send_text("o_quiet", "难题")).content)
            async with http.get(f"{link}/events") as r:
                lines = [raw.decode().rstrip("\n") async for raw in r.content]
    assert lines.count(": keepalive") >= 2
    assert "data: \"想好了。\"" in lines


async def test_the_page_shows_the_answer_as_the_model_wrote_it_and_chat_gets_plain_text(site, llm):
    base, app, wx, http = site
    markdown = "## 标题\n\n" + "\n".join(f"- 第{i}项，**重点**在这里。" for i in range(1, 200))
    llm.queue(Script(text=markdown, chunk_chars=500))
    d = await wx.send_text("o_md", "列个清单")
    assert "**" not in d.content and "## " not in d.content
    link = link_in(d.content)
    events = await page_events(http, link)
    assert text_of(events) == markdown
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    async with http.get(link) as r:
        assert escape(markdown) in await r.text()
