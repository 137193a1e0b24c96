"""`mpgpt report --heatmap`: the clicks as heat over the page, checked pixel by pixel."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from scripts.heatmap import render
from storage.analytics import PageClick, PageEvents
from storage.db import Database
from tests.harness import config_data, make_config, write_toml
from tests.monitorkit import serving

ROOT = Path(__file__).resolve().parents[2]
HOT, WARM = (120, 300), (300, 700)


def _clicks() -> list[tuple[int, int, int]]:
    # 30 clicks around HOT, 3 at WARM, all made on a 390-pixel-wide phone.
    return [(HOT[0] + dx, HOT[1] + dy, 390) for dx in (-2, 0, 2) for dy in range(-4, 6)] + [(*WARM, 390)] * 3


def _heat(px: tuple[int, int, int]) -> int:
    """How far a pixel is from white: 0 on an untouched white page."""
    return sum(255 - c for c in px)


async def test_without_a_browser_the_heat_lies_on_an_outline_where_the_clicks_were(tmp_path):
    out = tmp_path / "heat.png"
    assert await render("/", _clicks(), str(out), url=None) == "outline"
    img = Image.open(out).convert("RGB")
    assert img.size[0] == 390
    hot, warm = img.getpixel(HOT), img.getpixel(WARM)
    assert hot[0] > 200 and hot[2] < 100, hot  # red where most clicks are
    assert _heat(hot) > _heat(warm) > 30  # less, but visible, where few are
    for far in [(300, 100), (60, 600), (200, 820)]:
        assert img.getpixel(far) == (255, 255, 255), far
    # Halfway between, the heat has faded out.
    assert _heat(img.getpixel((210, 500))) == 0


async def test_clicks_from_a_wider_screen_are_scaled_to_the_picture(tmp_path):
    out = tmp_path / "heat.png"
    await render("/", [(240, 600, 780)] * 10, str(out), url=None)
    img = Image.open(out).convert("RGB")
    assert _heat(img.getpixel((120, 300))) > 200
    assert _heat(img.getpixel((240, 600))) == 0


@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("MPGPT_REQUIRE_CHROMIUM"),
                    reason="Debian's chromium is not installed (CI installs it)")
def test_the_command_draws_the_heat_over_a_screenshot_of_the_real_page(tmp_path):
    llm_url = "http://127.0.0.1:9/v1"  # nothing asks the model
    db_path = tmp_path / "mpgpt.db"
    data = config_data(tmp_path, llm_url, storage={"path": str(db_path)})
    config = write_toml(tmp_path / "config.toml", data)

    async def shoot() -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
        async with serving(make_config(tmp_path, llm_url, storage={"path": str(db_path)})) as (url, _):
            async with aiohttp.ClientSession() as http, http.get(url + "/") as page:
                assert page.status == 200 and "text/html" in page.content_type  # the companion page itself
            args = ["report", "--config", str(config), "--url", url, "--heatmap", "/"]
            bare = await _cli(*args, "--out", str(tmp_path / "bare.png"))  # no clicks yet
            await _seed(db_path)
            with_heat = await _cli(*args, "--out", str(tmp_path / "heat.png"))
            await _seed_chat(db_path)
            chat = await _cli(*args[:-1], "/#chat", "--out", str(tmp_path / "chat.png"))
            desktop = await _cli(*args[:-1], "/#chat", "--device", "desktop", "--out", str(tmp_path / "desk.png"))
        return with_heat, bare, chat, desktop

    with_heat, bare, chat, desktop = asyncio.run(shoot())
    assert with_heat.returncode == 0, with_heat.stderr
    assert "0 clicks on / from phones over a screenshot" in bare.stdout
    assert "33 clicks on / from phones over a screenshot" in with_heat.stdout
    # one screen, one device class: the chat screen's 4 phone clicks, its 2 desktop clicks apart
    assert "4 clicks on /#chat from phones over a screenshot" in chat.stdout, chat.stderr
    assert "2 clicks on /#chat from desktops over a screenshot" in desktop.stdout, desktop.stderr
    with Image.open(tmp_path / "desk.png") as desk:
        assert desk.size[0] == 1280
    # the chat screen's picture shows the chat screen (its composer), not the login form
    with Image.open(tmp_path / "chat.png") as shot, Image.open(tmp_path / "bare.png") as login:
        assert shot.size[0] == 390 and shot.convert("RGB").tobytes() != login.convert("RGB").tobytes()
    heat, page = Image.open(tmp_path / "heat.png").convert("RGB"), Image.open(tmp_path / "bare.png").convert("RGB")
    assert heat.size == page.size and heat.size[0] == 390
    # The screenshot is the page, not an outline: it has text on it.
    assert len(page.crop((0, 0, 390, 200)).getcolors(maxcolors=1 << 16) or ()) > 10

    def diff(xy: tuple[int, int]) -> int:
        return sum(abs(a - b) for a, b in zip(heat.getpixel(xy), page.getpixel(xy)))

    assert diff(HOT) > 150 and heat.getpixel(HOT)[0] > 180
    assert diff(WARM) > 30
    for far in [(300, 100), (60, 600)]:
        assert diff(far) == 0, far


async def _cli(*args: str) -> subprocess.CompletedProcess:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "scripts.cli", *args, cwd=ROOT,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def _seed(path: Path) -> None:
    async with Database(path) as db:
        await PageEvents(db).write([PageClick("view00000001", "/", x, y, vw, "p", time.time()) for x, y, vw in _clicks()])


async def _seed_chat(path: Path) -> None:
    """Clicks on the chat screen: 4 from a phone, 2 from a desktop."""
    async with Database(path) as db:
        await PageEvents(db).write([PageClick("view00000002", "/", 50, 700 + i, 390, "p", time.time(), "chat")
                                    for i in range(4)]
                                   + [PageClick("view00000003", "/", 900, 500, 1280, "p", time.time(), "chat")] * 2)
