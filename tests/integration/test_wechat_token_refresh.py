"""WeChat ends a token: the calls that fail with it at once refresh it once, in one process and across
hosts sharing one database. Each forced refresh of stable_token ends the token every other call is
using, and WeChat allows only a few a day: a typing indicator and a push failing together must not
spend two (seen in the active-mode test under load)."""

from __future__ import annotations

import asyncio

import aiohttp

from bot.config import WechatConfig
from bot.wechat.api import WeChatAPI
from storage.tokens import TokenRepo
from tests.fakes.wechat_api import FakeWeChatAPI

APP_ID, SECRET = "wx0123456789abcdef", "test-app-secret"
OPENID = "o_token_refresh_00000000000"


async def test_calls_failing_together_on_two_hosts_refresh_the_token_once(open_database):
    async with FakeWeChatAPI(APP_ID, SECRET) as api, aiohttp.ClientSession() as http:
        cfg = WechatConfig(token="refresh-test-token", app_id=APP_ID, app_secret=SECRET, api_base=api.base_url)
        async with open_database() as one, open_database() as two:
            hosts = [WeChatAPI(cfg, http, TokenRepo(db)) for db in (one, two)]
            await hosts[0].send_text(OPENID, "第一条")
            api.invalidate_token()
            await asyncio.gather(*(call for host in hosts for call in (
                host.send_typing(OPENID), host.send_text(OPENID, "第二条"), host.send_typing(OPENID))))
            # the second host found the token the first one had stored; no call was lost
            assert api.force_refresh_calls == 1
            assert len(api.sent) == 3 and len(api.typing) == 4
