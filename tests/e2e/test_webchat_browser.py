"""The chat tab of the companion page in headless Chromium (Debian's, driven by Playwright): log in with a
code from /wechat, ask, watch the answer stream in, see the balance drop; markdown from the model stays
inert; the history, the model picker and 新对话 on a desktop; browsers without a streaming fetch."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from bot.keys import DB, GENERATOR
from storage.ledger import Ledger
from tests.companionkit import OPENID, browser_session, token_in, serving
from tests.e2e.test_companion_browser import CHROMIUM, PHONE, WECHAT_UA, browser, log_in  # noqa: F401
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

DESKTOP = {"width": 1280, "height": 800}
ANSWER = ".turn.bot:last-child"
FINISHED = ".turn.bot:last-child:not(.live) .meta"
# Every text the live answer showed, recorded in the page as it changed (no timing races in the test).
RECORD_SHOWN = """
    window.shown = [];
    new MutationObserver(function () {
        var live = document.querySelector(".turn.bot.live .md");
        if (live) { window.shown.push(live.textContent); }
    }).observe(document, { childList: true, subtree: true, characterData: true });
"""


async def open_chat(page) -> None:
    await page.click("#tabs button[data-tab=chat]")
    await page.wait_for_selector("[data-panel=chat]:not([hidden])")


async def ask(page, question: str) -> str:
    """Type a question, send it, wait for the answer to finish; returns its footer line."""
    before = await page.locator(".turn.bot").count()
    await page.fill("#chat-input", question)
    await page.click("#chat-send")
    await page.wait_for_function(
        f"() => document.querySelectorAll('.turn.bot').length === {before + 1}"
        " && !document.querySelector('.turn.bot.live')")
    return await page.inner_text(FINISHED)


def keep(tmp_path: Path, *names: str) -> None:
    where = os.environ.get("MPGPT_SCREENSHOTS")
    if where:  # for a person checking how the page looks
        for name in names:
            shutil.copy(tmp_path / name, Path(where) / name)


async def test_an_answer_streams_into_the_chat_tab_and_the_balance_drops(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url, quota={"daily_free": 0}) as (base, app):
        await Ledger(app[DB]).ensure_account(OPENID, 5)
        context = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        await context.add_init_script(RECORD_SHOWN)
        page = await context.new_page()
        await log_in(page, base)
        assert await page.inner_text("#balance") == "5"
        assert await page.title() == "我的积分"
        await open_chat(page)
        assert await page.title() == "对话" and await page.inner_text("header.bar h1") == "对话"
        assert await page.is_visible("#chat-empty")
        llm.queue(Script(chunks=["**第一段**，", "第二段，", "第三段。"], chunk_delay=0.3))
        footer = await ask(page, "讲三段话")

        shown = await page.evaluate("window.shown")
        assert any("第一段" in s and "第三段" not in s for s in shown), shown  # a partial answer was on screen
        assert await page.inner_text(f"{ANSWER} .md") == "第一段，第二段，第三段。"
        assert await page.inner_text(f"{ANSWER} .md strong") == "第一段"
        assert await page.inner_text(".turn.me .bubble") == "讲三段话"
        balance = await Ledger(app[DB]).balance(OPENID)
        assert balance == 4
        assert footer == f"消耗 1 积分 · 余额 {balance}"
        assert await page.inner_text("#balance") == str(balance)  # the account tab's figure too
        await page.screenshot(path=str(tmp_path / "chat-phone.png"), full_page=True)

        await page.click(f"{ANSWER} .copy")
        await page.wait_for_selector(f"{ANSWER} .copy:text('已复制')")
        assert await page.evaluate("navigator.clipboard.readText()") == "**第一段**，第二段，第三段。"

        await page.click("#tabs button[data-tab=account]")
        await page.wait_for_function("() => /gpt-4o-mini/.test(document.getElementById('usage').textContent)")
        await context.close()
        keep(tmp_path, "chat-phone.png")


async def test_markdown_from_the_model_cannot_run_script_or_make_unsafe_links(tmp_path, llm, browser):
    hostile = ("# 标题\n<script>window.pwned=1</script>\n<img src=x onerror=\"window.pwned=1\">\n"
               "[click](javascript:window.pwned=1) [data](data:text/html,<b>x</b>) [link](https://example.com)\n\n"
               "- 一\n- **二** `<b>code</b>`\n\n```html\n<iframe src=\"javascript:window.pwned=1\"></iframe>\n```\n")
    async with serving(tmp_path, llm.base_url) as (base, _):
        page = await browser.new_page(viewport=PHONE)
        await log_in(page, base)
        await open_chat(page)
        llm.queue(Script(text=hostile, chunk_chars=7))
        await ask(page, '<img src=x onerror="window.pwned=1">')
        await page.wait_for_timeout(100)  # an image error handler would have run by now

        answer = page.locator(ANSWER + " .md")
        assert await page.evaluate("typeof window.pwned") == "undefined"
        assert await page.locator("#chat-turns :is(script, img, iframe)").count() == 0
        assert "<script>window.pwned=1</script>" in await answer.inner_text()
        assert await answer.locator("a").count() == 1
        link = answer.locator("a")
        assert await link.get_attribute("href") == "https://example.com"
        assert await link.get_attribute("rel") == "noopener noreferrer" and await link.get_attribute("target") == "_blank"
        assert "[click](javascript:window.pwned=1)" in await answer.inner_text()
        assert await answer.locator("h3").inner_text() == "标题"
        assert await answer.locator("li").all_inner_texts() == ["一", "二 <b>code</b>"]
        assert '<iframe src="javascript:window.pwned=1"></iframe>' == await answer.locator("pre code").inner_text()
        assert await page.inner_text(".turn.me .bubble") == '<img src=x onerror="window.pwned=1">'

        await page.reload()  # the same answer from the history goes through the same renderer
        await page.wait_for_selector(ANSWER + " .md a")
        assert await page.evaluate("typeof window.pwned") == "undefined"
        assert await page.locator("#chat-turns :is(script, img, iframe)").count() == 0


async def test_a_page_closed_mid_answer_shows_the_whole_answer_when_opened_again(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url) as (base, app):
        page = await browser.new_page(viewport=PHONE)
        await log_in(page, base)
        await open_chat(page)
        llm.queue(Script(chunks=["开头。", "中间。", "结尾。"], chunk_delay=0.3))
        await page.fill("#chat-input", "长问题")
        await page.click("#chat-send")
        await page.wait_for_function("() => /开头/.test(document.querySelector('.turn.bot.live').textContent)")
        await page.goto("about:blank")
        await asyncio.wait_for(app[GENERATOR].idle(), 10)

        async def slowly(route) -> None:  # the login check answers before the chat script arrives
            await asyncio.sleep(0.3)
            await route.continue_()

        await page.route("**/static/markdown.js", slowly)
        await page.goto(base + "/#chat")  # the tab is in the address
        await page.wait_for_selector(ANSWER + " .md p")
        assert await page.inner_text(ANSWER + " .md") == "开头。中间。结尾。"
        assert await page.inner_text(".turn.me .bubble") == "长问题"


async def test_without_a_streaming_fetch_wechats_browser_still_gets_the_answer(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url) as (base, _):
        context = await browser.new_context(viewport=PHONE, user_agent=WECHAT_UA, is_mobile=True)
        await context.add_init_script("window.fetch = undefined;")  # an old in-app browser: XMLHttpRequest only
        page = await context.new_page()
        await log_in(page, base)
        await open_chat(page)
        llm.queue(Script(chunks=["旧浏览器", "也能收到。"], chunk_delay=0.05))
        footer = await ask(page, "你好")
        assert await page.inner_text(ANSWER + " .md") == "旧浏览器也能收到。"
        assert footer.startswith("消耗 1 积分")
        await context.close()


async def test_a_refusal_shows_its_sentence_and_offers_a_top_up(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url, quota={"trial_credits": 0, "daily_free": 0}) as (base, _):
        page = await browser.new_page(viewport=PHONE)
        await log_in(page, base)
        await open_chat(page)
        await ask(page, "你好")
        assert "余额不足" in await page.inner_text(ANSWER + ".refused .md")
        await page.click(ANSWER + " .link-btn:text('去充值')")
        await page.wait_for_selector("[data-panel=topup]:not([hidden])")
        assert llm.requests == []


async def test_on_a_desktop_history_model_picker_and_new_conversation_work_with_wechat(tmp_path, llm, browser):
    channels = [{"name": "fake", "provider": "openai", "base_url": llm.base_url, "api_key": "sk-test",
                 "models": ["gpt-4o-mini", "gpt-4o"]}]
    async with serving(tmp_path, llm.base_url, channels=channels, quota={"trial_credits": 100},
                       rules={"rate_limit": 100}) as (base, _):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            await wx.send_text(OPENID, "在微信里问的")
        page = await browser.new_page(viewport=DESKTOP)
        await log_in(page, base)
        await open_chat(page)
        await page.wait_for_selector(".turn.me")
        assert await page.locator(".turn .bubble").all_inner_texts() == ["在微信里问的"]
        assert await page.is_visible(".chat-side") and await page.is_hidden("#chat-side-btn")
        options = await page.locator("#chat-model option").evaluate_all("os => os.map(o => [o.value, o.selected])")
        assert options == [["gpt-4o-mini", True], ["gpt-4o", False]]

        await page.select_option("#chat-model", "gpt-4o")
        await ask(page, "网页上接着问")
        assert llm.requests[-1].model == "gpt-4o"
        assert [m["content"] for m in llm.requests[-1].messages][-2:] == ["你好，我是测试模型。", "网页上接着问"]
        await page.screenshot(path=str(tmp_path / "chat-desktop.png"), full_page=True)

        await page.click("#chat-new")
        await page.wait_for_selector("#chat-empty:not([hidden])")
        assert await page.locator(".turn").count() == 0
        await ask(page, "新话题")
        assert [m["content"] for m in llm.requests[-1].messages][1:] == ["新话题"]
        await page.wait_for_function("() => document.querySelectorAll('#chat-convs li').length === 2")
        await page.click("#chat-convs li:nth-child(2) button")
        await page.wait_for_function("() => document.querySelectorAll('.turn').length === 4")
        assert "在微信里问的" in await page.inner_text("#chat-turns")

        await page.click("#logout")  # a shared computer: nothing of the conversation stays in the page
        await page.wait_for_selector("#login:not([hidden])")
        assert await page.locator(".turn, #chat-convs li").count() == 0
        keep(tmp_path, "chat-desktop.png")


async def test_a_long_conversation_shows_its_latest_turns_and_loads_earlier_ones_on_demand(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url, quota={"trial_credits": 100}, rules={"rate_limit": 100}) as (base, _):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as http:
            code = token_in((await wx.send_text(OPENID, "登录")).content or "")
            await http.post(f"{base}/api/login", json={"token": code})
            for i in range(26):
                llm.queue(Script(text=f"答{i}"))
                async with http.post(f"{base}/api/chat", json={"message": f"问{i}"}) as r:
                    assert "event: done" in await r.text()
        page = await browser.new_page(viewport=PHONE)
        await log_in(page, base)
        await open_chat(page)
        await page.wait_for_selector(".turn.me")
        texts = await page.locator(".turn .bubble, .turn .md").all_inner_texts()
        assert len(texts) == 50 and texts[0] == "问1" and texts[-1] == "答25"
        await page.click("#chat-earlier")
        await page.wait_for_function("() => document.querySelectorAll('.turn').length === 52")
        assert (await page.locator(".turn .bubble, .turn .md").all_inner_texts())[:3] == ["问0", "答0", "问1"]
        assert await page.is_hidden("#chat-earlier")


# Each case: markdown in, the page's DOM out (as HTML, to compare exactly).
RENDERED = [
    ("a\nb\n\nc", "<p>a<br>b</p><p>c</p>"),
    ("**b** *i* ~~d~~ `<x>`", "<p><strong>b</strong> <em>i</em> <del>d</del> <code>&lt;x&gt;</code></p>"),
    ("- a\n  - b\n- c", "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>"),
    ("3. x\n4. y", '<ol start="3"><li>x</li><li>y</li></ol>'),
    ("## T", "<h4>T</h4>"),
    ("```js\n<b>\n", '<pre data-lang="js"><code>&lt;b&gt;\n</code></pre>'),  # still streaming: unclosed
    ("> q", "<blockquote><p>q</p></blockquote>"),
    ("|a|b|\n|-|-|\n|1|2|", '<div class="table"><table><thead><tr><th>a</th><th>b</th></tr></thead>'
                            "<tbody><tr><td>1</td><td>2</td></tr></tbody></table></div>"),
    ("see https://a.example/x.", '<p>see <a href="https://a.example/x" target="_blank" rel="noopener noreferrer">'
                                 "https://a.example/x</a>.</p>"),
    ("[x](JaVaScRiPt:alert(1)) [y](data:text/html,hi) [z](/relative) [w](vbscript:x)",
     "<p>[x](JaVaScRiPt:alert(1)) [y](data:text/html,hi) [z](/relative) [w](vbscript:x)</p>"),
    ('[q](https://a.example/"onmouseover="x)', '<p><a href="https://a.example/&quot;onmouseover=&quot;x" '
                                               'target="_blank" rel="noopener noreferrer">q</a></p>'),
    ("<b onclick=x>hi</b>", "<p>&lt;b onclick=x&gt;hi&lt;/b&gt;</p>"),
]


async def test_the_markdown_renderer_builds_only_safe_elements(tmp_path, llm, browser):
    async with serving(tmp_path, llm.base_url) as (base, _):
        page = await browser.new_page()
        await page.goto(base + "/")
        html = await page.evaluate("""cases => cases.map(src => {
            const box = document.createElement("div");
            box.appendChild(window.mpgptMarkdown(src));
            return box.innerHTML;
        })""", [src for src, _ in RENDERED])
    assert html == [want for _, want in RENDERED]
