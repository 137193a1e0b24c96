"""A picture uploaded in the companion page's chat goes to a vision model, within the same limits as WeChat's."""

from __future__ import annotations

import base64

import pytest

from bot.keys import DB
from storage.ledger import Ledger
from tests.companionkit import browser_session, serving, token_in
from tests.e2e.test_webchat import read_events
from tests.fakes.media import jpeg
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN

MODELS = {"gpt-4o-mini": {"vision": True, "image_cost": 2}, "text-only": {}}


@pytest.fixture
async def site(tmp_path, llm):
    channels = [{"name": "fake", "provider": "openai", "base_url": llm.base_url, "api_key": "sk-test",
                 "models": ["gpt-4o-mini", "text-only"]}]
    async with serving(tmp_path, llm.base_url, channels=channels, models=MODELS,
                       media={"max_picture_bytes": 100_000}) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as browser:
            code = token_in((await wx.send_text("o_webpic", "登录")).content)
            async with browser.post(f"{base}/api/login", json={"token": code}) as r:
                assert r.status == 200, await r.text()
            yield base, app, browser


def _data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def test_an_uploaded_picture_reaches_the_vision_model_byte_for_byte(site, llm):
    base, app, browser = site
    picture = jpeg(320, 240)
    before = await Ledger(app[DB]).balance("o_webpic")
    async with browser.post(f"{base}/api/chat", json={"message": "图里有什么？", "image": _data_url(picture)}) as r:
        assert r.status == 200, await r.text()
        events = await read_events(r)
    assert events[-1][0] == "done" and events[-1][1]["credits_charged"] == 1 + 2
    content = llm.requests[-1].messages[-1]["content"]
    assert content[0] == {"type": "text", "text": "图里有什么？"}
    assert base64.b64decode(content[1]["image_url"]["url"].partition(",")[2]) == picture
    assert await Ledger(app[DB]).balance("o_webpic") == before - 3
    stored = await app[DB].fetchone("SELECT data FROM pictures")
    assert stored["data"] is None  # the bytes are dropped once the answer is final


async def test_a_picture_to_a_model_that_cannot_see_is_a_polite_refusal(site, llm):
    base, _, browser = site
    async with browser.post(f"{base}/api/chat", json={"message": "看图", "model": "text-only",
                                                      "image": _data_url(jpeg())}) as r:
        events = await read_events(r)
    assert events == [("refusal", {"code": "no_vision", "text": "当前可用的模型看不了图片。能看图片的模型：gpt-4o-mini。"})]
    assert llm.requests == []


@pytest.mark.parametrize(("image", "status", "code"), [
    ("data:image/jpeg;base64,!!!", 400, "bad_picture"),
    ("https://example.com/x.jpg", 400, "bad_picture"),
    (_data_url(b"<svg onload=alert(1)>", "image/svg+xml"), 415, "not_a_picture"),
    (_data_url(jpeg(1024, 1024, noise=True)), 413, "picture_too_large"),
])
async def test_what_is_not_a_picture_within_the_limit_is_refused_with_a_reason(site, llm, image, status, code):
    base, _, browser = site
    async with browser.post(f"{base}/api/chat", json={"message": "看图", "image": image}) as r:
        assert r.status == status and (await r.json())["reason"] == code
    assert llm.requests == []
