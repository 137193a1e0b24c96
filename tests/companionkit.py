"""The real app on loopback for companion-page tests, with WeChat Pay pointed at the fake.

The socket is bound first so `pay.notify_url` can name the app's own port: the fake WeChat Pay then
notifies the app over HTTP exactly as WeChat Pay would.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from scripts.composition import create_app
from bot.config import Config, config_from_dict
from tests import paykit
from tests.fakes.wechatpay import FakeWeChatPay
from tests.harness import config_data, loopback_socket, merge, served

OPENID = paykit.OPENID


def companion_config(tmp_path: Path, llm_base_url: str, base: str, pay: FakeWeChatPay | None = None,
                     **overrides: Any) -> Config:
    data = config_data(tmp_path, llm_base_url, server={"public_url": base + "/"})
    if pay is not None:
        pay_data = paykit.config_data(tmp_path, pay, notify_url=f"{base}/api/pay/notify")
        data["pay"], data["products"] = pay_data["pay"], pay_data["products"]
    return config_from_dict(merge(data, overrides), base_dir=str(tmp_path))


@asynccontextmanager
async def serving(tmp_path: Path, llm_base_url: str, pay: FakeWeChatPay | None = None,
                  **overrides: Any) -> AsyncIterator[tuple[str, web.Application]]:
    sock, base = loopback_socket()
    app = create_app(companion_config(tmp_path, llm_base_url, base, pay, **overrides))
    async with served(app, sock):
        yield base, app


def browser_session() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 as a browser would (aiohttp's default jar skips IPs)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def token_in(reply: str) -> str:
    """The token of the one-time login link in a 登录 reply (it sits in the link's fragment)."""
    found = re.findall(r"/#login=([A-Za-z0-9_-]+)", reply)
    assert len(found) == 1, reply
    return found[0]
