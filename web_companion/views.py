"""What every companion view shares: JSON errors, refusals raised from deep inside a handler, the
JSON body, the logged-in follower and bounded integer parameters.

A view decorated with @refusals may raise Refused(response) anywhere; the response is answered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from web_companion import jsonin
from web_companion.keys import COMPANION
from web_companion.sessions import COOKIE


def error_response(status: int, message: str, reason: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "reason": reason, **extra}, status=status)


class Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def json_body(request: web.Request) -> dict[str, Any]:
    # JSON only: a cross-site form cannot send it without a CORS preflight (no login CSRF).
    if request.content_type != "application/json":
        raise Refused(error_response(415, "请求格式错误", "json_required"))
    try:
        body = jsonin.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise Refused(error_response(400, "请求内容不是有效的 JSON", "bad_json")) from None
    if not isinstance(body, dict):
        raise Refused(error_response(400, "请求内容应为 JSON 对象", "bad_json"))
    return body


async def session_user(request: web.Request) -> str:
    companion = request.app[COMPANION]
    openid = await companion.sessions.openid(request.cookies.get(COOKIE))
    if openid is None:
        cfg = companion.cfg
        raise Refused(error_response(401, "请先登录", "login_required",
                                     login_word=(cfg.commands.login or ("登录",))[0],
                                     oauth_url="/auth/wechat" if cfg.companion.oauth else None))
    return openid


Handler = Callable[[web.Request], Any]


def refusals(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as r:
            return r.response
    wrapped.__name__ = handler.__name__
    return wrapped


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Refused(error_response(400, f"参数 {name} 应为整数", "bad_param")) from None
    if not low <= value <= high:
        raise Refused(error_response(400, f"参数 {name} 应在 {low} 到 {high} 之间", "bad_param"))
    return value
