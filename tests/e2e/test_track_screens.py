"""Analytics that tell the truth (issue 16), over HTTP to the real app: the page's screens are views of
their own with their own clicks (per device class), a session in which something was done is not a
bounce, and the visible time a beacon posts (text/plain or application/json) lands on its view."""

from __future__ import annotations

import asyncio
import json
import time
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from bot.keys import DB
from scripts.report import DEVICES, build_report
from storage.analytics import PageEvents
from tests.harness import make_config
from tests.monitorkit import serving

FAST = {"analytics": {"flush_interval": 0.05}}
UTC = ZoneInfo("UTC")


def _vid(n: int) -> str:
    return f"visitor{n:017d}"


def _pv(n: int) -> str:
    return f"view{n:020d}"


async def _post(http: aiohttp.ClientSession, base: str, event: dict, content_type: str = "text/plain;charset=UTF-8"):
    async with http.post(base + "/api/track", data=json.dumps(event), headers={"Content-Type": content_type}) as r:
        assert r.status == 204, await r.text()


async def _settled(app, n: int) -> None:
    """Wait until the sink wrote `n` views."""
    deadline = time.monotonic() + 5
    while len(await PageEvents(app[DB]).views(0, time.time() + 1)) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def view(v: int, pv: int, screen: str, vw: int = 390) -> dict:
    return {"t": "view", "vid": _vid(v), "pv": _pv(pv), "page": "/", "screen": screen, "ref": "", "vw": vw,
            "vh": 800}


def click(v: int, pv: int, screen: str, x: int, y: int, vw: int = 390) -> dict:
    return {"t": "click", "vid": _vid(v), "pv": _pv(pv), "page": "/", "screen": screen, "x": x, "y": y, "vw": vw,
            "el": "main>button"}


async def test_each_screen_is_a_view_of_its_own_and_its_heatmap_has_only_its_clicks_per_device(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, app), aiohttp.ClientSession() as http:
        # one phone visitor: login, then account, then a tab change to the shop; one desktop visitor: shop
        for event in [view(1, 1, "login"), click(1, 1, "login", 10, 20), view(1, 2, "account"),
                      click(1, 2, "account", 30, 40), click(1, 2, "account", 31, 41), view(1, 3, "shop"),
                      click(1, 3, "shop", 50, 60), view(2, 4, "shop", vw=1280), click(2, 4, "shop", 900, 300, 1280)]:
            await _post(http, base, event)
        await _settled(app, 4)
        repo = PageEvents(app[DB])
        phone, desktop = DEVICES["phone"], DEVICES["desktop"]
        account = await repo.clicks("/", 0, "account", *phone)
        shop_phone = await repo.clicks("/", 0, "shop", *phone)
        shop_desktop = await repo.clicks("/", 0, "shop", *desktop)
        everything = await repo.clicks("/", 0)
        report = await build_report(app[DB], 1, UTC)
    assert sorted(account) == [(30, 40, 390), (31, 41, 390)]
    assert shop_phone == [(50, 60, 390)] and shop_desktop == [(900, 300, 1280)]
    assert len(everything) == 5
    pages = report["page"]["by_page"]
    assert sorted(pages) == ["/#account", "/#login", "/#shop"]
    assert (pages["/#login"]["pv"], pages["/#account"]["pv"], pages["/#shop"]["pv"]) == (1, 1, 2)
    assert report["page"]["total"]["pv"] == 4 and report["page"]["total"]["uv"] == 2


async def test_a_session_with_a_click_a_screen_change_or_a_question_is_not_a_bounce(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, app), aiohttp.ClientSession() as http:
        await _post(http, base, view(1, 1, "login"))  # came and went: the one bounce
        await _post(http, base, view(2, 2, "login"))
        await _post(http, base, click(2, 2, "login", 5, 5))  # clicked
        await _post(http, base, view(3, 3, "account"))
        await _post(http, base, view(3, 4, "chat"))  # changed screen
        await _post(http, base, view(4, 5, "chat"))
        await _post(http, base, {"t": "act", "vid": _vid(4), "pv": _pv(5)})  # asked a question (Enter)
        # an act naming someone else's view changes nothing
        await _post(http, base, view(5, 6, "chat"))
        await _post(http, base, {"t": "act", "vid": _vid(1), "pv": _pv(6)})
        await _settled(app, 6)
        total = (await build_report(app[DB], 1, UTC))["page"]["total"]
    assert (total["sessions"], total["bounces"]) == (5, 2)
    assert total["bounce_rate"] == pytest.approx(0.4)


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/json"])
async def test_visible_time_a_beacon_posts_on_hiding_lands_on_its_view(tmp_path, llm, content_type):
    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, app), aiohttp.ClientSession() as http:
        await _post(http, base, view(1, 1, "account"), content_type)
        await _settled(app, 1)
        # hidden after 1.5 s, shown again, closed after 4.2 s in all; a late, smaller beacon lowers nothing
        for ms in (1500, 4200, 1500):
            await _post(http, base, {"t": "leave", "vid": _vid(1), "pv": _pv(1), "ms": ms}, content_type)
        await _post(http, base, {"t": "leave", "vid": _vid(2), "pv": _pv(1), "ms": 99_000}, content_type)  # forged
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            views = await PageEvents(app[DB]).views(0, time.time() + 1)
            if views[0].visible_ms == 4200:
                break
            await asyncio.sleep(0.05)
        report = await build_report(app[DB], 1, UTC)
    assert [(v.screen, v.visible_ms) for v in views] == [("account", 4200)]
    assert report["page"]["by_page"]["/#account"]["avg_seconds"] == pytest.approx(4.2)


@pytest.mark.parametrize("screen", ["Chat", "a" * 40, "chat<script>", 7])
async def test_a_bad_screen_name_gets_a_400(tmp_path, llm, screen):
    async with serving(make_config(tmp_path, llm.base_url, **FAST)) as (base, _), aiohttp.ClientSession() as http:
        async with http.post(base + "/api/track", data=json.dumps(view(1, 1, "x") | {"screen": screen})) as r:
            assert r.status == 400 and "screen" in await r.text()
