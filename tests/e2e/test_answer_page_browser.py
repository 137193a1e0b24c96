"""The answer page in headless Chromium (Debian's, driven by Playwright) at phone size: opened from the
link in a WeChat reply while the model is still writing, the answer streams in, renders as markdown,
ends complete with its label and a working copy button, and the console stays clean."""

from __future__ import annotations

import asyncio

import pytest

from tests.companionkit import serving
from tests.e2e.answerkit import LABEL, ON, link_in
from tests.e2e.test_companion_browser import CHROMIUM, PHONE, WECHAT_UA, browser  # noqa: F401
from tests.e2e.test_webchat_browser import keep
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

CHUNKS = ["第一句写好了。", "**第二句**也写好了。", "第三句。", "第四句。", "第五句。", "第六句。", "第七句。",
          "第八句。", "第九句。", "最后一句。"]
# Every text the answer showed while it was live, recorded in the page as it changed.
RECORD_SHOWN = """
    window.shown = [];
    new MutationObserver(function () {
        var live = document.querySelector("#answer.live #answer-text");
        if (live) { window.shown.push(live.textContent); }
    }).observe(document, { childList: true, subtree: true, characterData: true });
"""


async def test_the_answer_page_streams_on_a_phone_and_ends_complete_with_its_label(tmp_path, llm, browser):
    # the stream waits after the fifth sentence until the page has shown it: a slow browser start
    # under a loaded machine cannot make the page open after the end (nor, with a deadline longer
    # than the tests' 10 s, after the answer was cut short for taking too long)
    release = asyncio.Event()
    llm.queue(Script(chunks=CHUNKS, chunk_delay=0.35, hold_after=5, release=release))
    async with serving(tmp_path, llm.base_url, chat={"generation_deadline": 60.0}, **ON) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            d = await wx.send_text("o_phone", "讲十句话")
        link = link_in(d.content)
        context = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                            user_agent=WECHAT_UA)
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        await context.add_init_script(RECORD_SHOWN)
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        await page.goto(link)
        assert await page.title() == "AI 回答"
        assert await page.inner_text("#question") == "讲十句话"
        await page.wait_for_function("() => window.shown.some(function (s) { return s.indexOf('第五句') >= 0; })")
        assert await page.is_visible("#answer.live")
        await page.screenshot(path=str(tmp_path / "answer-page-streaming.png"), full_page=True)
        release.set()
        await page.wait_for_selector("#answer:not(.live)", timeout=15000)
        await page.screenshot(path=str(tmp_path / "answer-page-done.png"), full_page=True)
        keep(tmp_path, "answer-page-streaming.png", "answer-page-done.png")

        shown = await page.evaluate("window.shown")
        assert any("第一句" in s and "最后一句" not in s for s in shown), shown  # a partial answer was on screen
        text = await page.inner_text("#answer-text")
        assert text.startswith("第一句写好了。") and text.endswith("最后一句。")
        # the page renders the answer as the model wrote it (chat replies carry it as plain text)
        assert await page.inner_text("#answer-text strong") == "第二句"
        assert "**" not in d.content and "第二句也写好了" in text
        assert await page.locator("#answer .ai-label").all_inner_texts() == [LABEL]
        assert await page.get_attribute("#answer", "data-ai-generated") == "true"
        assert await page.get_attribute("meta[name=ai-generated]", "content") == "true"
        # the button says how the copy went, then goes back after 1.5 s: every text it shows is kept
        await page.evaluate("""() => { const b = document.querySelector('#copy'); window.said = [];
            new MutationObserver(() => window.said.push(b.textContent)).observe(b, {childList: true}); }""")
        await page.click("#copy")
        await page.wait_for_function("() => window.said.length > 0")
        assert (await page.evaluate("window.said"))[0] == "已复制"
        assert (await page.evaluate("navigator.clipboard.readText()")).endswith("最后一句。")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # nothing sideways on a phone
        assert problems == []
        await context.close()


async def test_the_page_reads_without_javascript(tmp_path, llm, browser):
    llm.queue(Script(text="一句话。" * 700, chunk_chars=700))
    async with serving(tmp_path, llm.base_url, **ON) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            d = await wx.send_text("o_nojs", "问题")
        context = await browser.new_context(viewport=PHONE, java_script_enabled=False)
        page = await context.new_page()
        await page.goto(link_in(d.content))
        assert (await page.inner_text("#answer-text")).count("一句话。") == 700
        assert await page.locator("#answer .ai-label").all_inner_texts() == [LABEL]
        await context.close()


async def test_the_web_chat_shows_the_label_once_under_each_answer(tmp_path, llm, browser):
    from tests.e2e.test_companion_browser import log_in
    from tests.e2e.test_webchat_browser import ask, open_chat

    async with serving(tmp_path, llm.base_url, **ON) as (base, app):
        context = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        page = await context.new_page()
        await log_in(page, base)
        await open_chat(page)
        llm.queue(Script(text="第一个回答。"))
        await ask(page, "问题一")
        llm.queue(Script(text="第二个回答，内容由 AI 生成。"))
        await ask(page, "问题二")
        label_of = ("els => els.map(e => getComputedStyle(e, '::after').content)")
        assert await page.locator(".turn.bot .md").evaluate_all(label_of) == [f'"{LABEL}"'] * 2
        assert await page.inner_text(".turn.bot:last-child .md") == "第二个回答，内容由 AI 生成。"  # not in the text
        await page.reload()  # the history shows it too
        await open_chat(page)
        await page.wait_for_function("() => document.querySelectorAll('.turn.bot').length === 2")
        assert await page.locator(".turn.bot .md").evaluate_all(label_of) == [f'"{LABEL}"'] * 2
        assert await page.locator(".turn.bot[data-ai-generated=true]").count() == 2
        await context.close()
