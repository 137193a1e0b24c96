"""Web OAuth `snsapi_base` inside WeChat's browser: the follower's openid without typing a code.

The page sends the browser to WeChat's authorize URL; WeChat sends it back to our callback with a
`code` (single use, 5 minutes) and our `state`; we exchange the code for the openid at
`{wechat.api_base}/sns/oauth2/access_token`. That endpoint answers JSON labelled text/plain, and
errors as HTTP 200 with `errcode`.
"""

from __future__ import annotations

import json
import urllib.parse

import aiohttp

from bot.config import Config

AUTHORIZE = "https://open.weixin.qq.com/connect/oauth2/authorize"
CALLBACK_PATH = "/auth/wechat/callback"


class OAuthFailed(Exception):
    pass


def callback_url(cfg: Config) -> str:
    return cfg.server.public_url.rstrip("/") + CALLBACK_PATH


def authorize_url(cfg: Config, state: str) -> str:
    """WeChat checks the parameters in this order and needs the #wechat_redirect fragment."""
    query = urllib.parse.urlencode([
        ("appid", cfg.wechat.app_id), ("redirect_uri", callback_url(cfg)), ("response_type", "code"),
        ("scope", "snsapi_base"), ("state", state),
    ], quote_via=urllib.parse.quote)
    return f"{AUTHORIZE}?{query}#wechat_redirect"


async def exchange(session: aiohttp.ClientSession, cfg: Config, code: str) -> str:
    """The openid WeChat gives for this code."""
    w = cfg.wechat
    url = w.api_base.rstrip("/") + "/sns/oauth2/access_token"
    params = {"appid": w.app_id, "secret": w.app_secret, "code": code, "grant_type": "authorization_code"}
    try:
        async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=w.api_timeout)) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as e:
        msg = f"WeChat unreachable: {type(e).__name__}"
        raise OAuthFailed(msg) from None
    try:
        payload = json.loads(text)
    except ValueError:
        msg = f"WeChat answered HTTP {resp.status} without JSON"
        raise OAuthFailed(msg) from None
    openid = payload.get("openid") if isinstance(payload, dict) else None
    if not isinstance(openid, str) or not openid:
        errcode = payload.get("errcode") if isinstance(payload, dict) else None
        msg = f"WeChat refused the code (errcode {errcode})"
        raise OAuthFailed(msg)
    return openid
