"""Page analytics end to end: the tracker in Debian's chromium on the companion page, and
POST /api/track's answers to good, bad, big and too many events."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time

import aiohttp
import pytest

from bot.keys import DB
from storage.analytics import PageEvents
from tests.harness import make_config
from tests.monitorkit import serving

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
PHONE = {"width": 390, "height": 844}
FAST = {"analytics": {"flush_interval": 0.05}}
VID, PV = "0123456789abcdef01234567", "fedcba9876543210fedcba98"


def _view(**extra):
    return {"t": "view", "vid": VID, "pv": PV, "page": "/", "ref": "", "vw": 390, "vh": 844, **extra}


async def _eventually(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def _post(http: aiohttp.ClientSession, base: str, body, **kw) -> tuple[int, str]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with http.post(base + "/api/track", data=data, **kw) as resp:
        return resp.status, await resp.text()


async def test_a_good_event_is_answered_204_and_lands_in_storage(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, app), aiohttp.ClientSession() as http:
        assert await _post(http, base, _view(page="/?code=123456")) == (204, "")
        assert await _post(http, base, {"t": "leave", "vid": VID, "pv": PV, "ms": 4200}) == (204, "")
        views = await _eventually(lambda: PageEvents(app[DB]).views(0, time.time() + 1))
    assert [(v.visitor, v.page, v.ip, v.visible_ms) for v in views] == [(VID, "/", "127.0.0.1", 4200)]


@pytest.mark.sqlite_file
async def test_the_answer_does_not_wait_for_the_disk(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, app), aiohttp.ClientSession() as http:
        async with app[DB].transaction():  # the writer is busy for as long as this block runs
            started = time.perf_counter()
            assert (await _post(http, base, _view()))[0] == 204
            assert time.perf_counter() - started < 0.5
            await asyncio.sleep(0.2)
            assert await PageEvents(app[DB]).views(0, time.time() + 1) == []
        assert await _eventually(lambda: PageEvents(app[DB]).views(0, time.time() + 1))


@pytest.mark.parametrize("body,reason", [
    (b"not json", "JSON"),
    (b"\xff\xfe", "JSON"),
    (_view(vw="wide"), "vw"),
    ({"t": "click", "vid": VID, "pv": PV, "page": "/", "x": 1, "y": 2, "vw": 390, "el": "<b>" * 100}, "el"),
    ([_view()], "JSON object"),
])
async def test_bad_events_get_a_400_with_the_reason_and_store_nothing(tmp_path, llm, body, reason):
    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, app), aiohttp.ClientSession() as http:
        status, text = await _post(http, base, body)
        await asyncio.sleep(0.15)
        assert await PageEvents(app[DB]).views(0, time.time() + 1) == []
    assert status == 400 and reason in text


async def test_a_body_over_the_cap_gets_a_413(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, _), aiohttp.ClientSession() as http:
        assert (await _post(http, base, json.dumps(_view(ref="https://x.example/" + "a" * 5000))))[0] == 413


async def test_one_address_sending_too_many_events_gets_429_while_another_goes_on(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, analytics={"rate_limit": 5, "client_ip_header": "X-Real-IP",
                                                        "flush_interval": 0.05})
    async with serving(cfg) as (base, app), aiohttp.ClientSession() as http:
        flood = [(await _post(http, base, _view(pv=f"view{i:08d}"), headers={"X-Real-IP": "203.0.113.9"}))[0]
                 for i in range(8)]
        other = await _post(http, base, _view(pv="view-other-1"), headers={"X-Real-IP": "198.51.100.7"})
        views = await _eventually(lambda: _count(app, 6))
    assert flood == [204] * 5 + [429] * 3 and other[0] == 204
    assert sorted({v.ip for v in views}) == ["198.51.100.7", "203.0.113.9"]


async def _count(app, n: int):
    views = await PageEvents(app[DB]).views(0, time.time() + 1)
    return views if len(views) >= n else None


async def test_analytics_switched_off_mount_nothing(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, analytics={"enabled": False})
    async with serving(cfg) as (base, _), aiohttp.ClientSession() as http:
        assert (await _post(http, base, _view()))[0] == 404
        async with http.get(base + "/track.js") as resp:
            assert resp.status == 404


# -- a real browser ------------------------------------------------------------------------------------

if CHROMIUM is None and os.environ.get("MPGPT_REQUIRE_CHROMIUM"):
    pytest.fail("chromium is missing but MPGPT_REQUIRE_CHROMIUM is set (.ci/run installs it)", pytrace=False)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


@needs_chromium
async def test_a_browser_session_records_views_visible_time_and_clicks_where_they_happened(tmp_path, llm):
    from playwright.async_api import async_playwright

    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, app), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=PHONE)
            page = await context.new_page()
            await page.goto(base + "/?from=menu")
            await page.wait_for_selector("#login:not([hidden])")
            box = await page.locator("#login h2").bounding_box()
            assert box is not None
            await page.mouse.click(box["x"] + 5, box["y"] + 5)
            await page.mouse.click(200, 700)
            await page.wait_for_timeout(300)  # some visible time
            await page.goto(base + "/static/app.css")  # leaving the page: pagehide sends the visible time
            await page.goto(base + "/")  # a second view, same browser: the same visitor
            await page.wait_for_selector("#login:not([hidden])")
            await page.goto("about:blank")
            repo = PageEvents(app[DB])
            views = await _eventually(lambda: _views_left(repo, 2))
            clicks = await repo.clicks("/", 0)
            first = await _eventually(lambda: _first_view(app))
            targets = await _targets(app)
        finally:
            await browser.close()
    assert views is not None and len(views) == 2
    assert {v.page for v in views} == {"/"} and len({v.visitor for v in views}) == 1
    assert all(v.ip == "127.0.0.1" for v in views)
    # The first view stayed 300 ms before the tracker's beacon on leaving; the second left at once.
    assert views[0].visible_ms >= 250 and views[1].visible_ms > 0, views
    assert first["viewport_w"] == 390 and first["viewport_h"] == 844
    assert sorted(clicks) == sorted([(round(box["x"] + 5), round(box["y"] + 5), 390), (200, 700, 390)])
    assert any(t.endswith("h2") and "section#login" in t for t in targets), targets


async def _views_left(repo: PageEvents, n: int):
    views = await repo.views(0, time.time() + 1)
    return views if len(views) >= n and all(v.visible_ms > 0 for v in views) else None


async def _first_view(app):
    row = await app[DB].fetchone("SELECT viewport_w, viewport_h FROM page_views ORDER BY started_at LIMIT 1")
    return dict(row) if row else None


async def _targets(app) -> list[str]:
    return [r["target"] for r in await app[DB].fetchall("SELECT target FROM page_clicks")]
