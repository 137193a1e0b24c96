"""A fake of api.weixin.qq.com: access tokens, customer-service messages, menus, media/get and web OAuth.

It is a real aiohttp app on 127.0.0.1 with an ephemeral port. Answers follow WeChat's shapes: HTTP 200 with a
JSON body that carries `errcode`/`errmsg` (errmsg ends in " rid: ..." as WeChat's do), never an HTTP error
status. The OAuth endpoint answers with `Content-Type: text/plain` as WeChat's sns endpoints do, so a client
that insists on application/json fails here as it would in production.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import deque
from typing import Any

from aiohttp import web

TEXT_LIMIT_BYTES = 2048  # custom/send answers 45002 above this many UTF-8 bytes
DEFAULT_ALLOWANCE = 5  # customer-service messages per user message (since mid-2023)

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid appid",
    40016: "invalid button size",
    40018: "invalid button name size",
    40023: "invalid sub button size",
    40025: "invalid sub button name size",
    40029: "invalid code",
    46003: "menu no exist",
    40125: "invalid appsecret",
    40163: "code been used",
    40164: "invalid ip 127.0.0.1, not in whitelist",
    41001: "access_token missing",
    42001: "access_token expired",
    44004: "empty content",
    45002: "content size out of limit",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    47001: "data format error",
    48001: "api unauthorized",
}


def _error(errcode: int, content_type: str = "application/json") -> web.Response:
    errmsg = f"{ERRMSG.get(errcode, 'error')} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}"
    return _json({"errcode": errcode, "errmsg": errmsg}, content_type)


def _json(payload: dict[str, Any], content_type: str = "application/json") -> web.Response:
    return web.json_response(payload, content_type=content_type)


class FakeWeChatAPI:
    """The WeChat API side of one official account.

    Scripting: `fail_next(errcode, times, openid)` queues error codes for custom/send; `invalidate_token()` and
    `expire_token()` break the current access token; `new_user_message(openid)` opens a user's 48 h window with
    its 5-message allowance (enforced only with `enforce_budget=True`); `delays[path] = seconds` slows one
    endpoint down. Records: `token_calls`, `force_refresh_calls`, `sent`, `typing`, `menus`, `calls` (paths in
    order).
    """

    def __init__(
        self,
        app_id: str = "wx0123456789abcdef",
        secret: str = "test-app-secret",
        *,
        expires_in: int = 7200,
        enforce_budget: bool = False,
    ) -> None:
        self.app_id = app_id
        self.secret = secret
        self.expires_in = expires_in
        self.enforce_budget = enforce_budget
        self.ip_whitelisted = True
        self.delays: dict[str, float] = {}
        self.token_calls = 0
        self.force_refresh_calls = 0
        self.sent: list[tuple[str, str]] = []
        # custom/typing calls: (touser, command, time.monotonic() when received)
        self.typing: list[tuple[str, str, float]] = []
        self.menus: list[dict[str, Any]] = []
        self.calls: list[str] = []
        # media/get: media_id -> (bytes, content type); the ids asked for, in order
        self.media: dict[str, tuple[bytes, str]] = {}
        self.media_gets: list[str] = []
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_invalid = False
        self._failures: deque[int] = deque()
        self._user_failures: dict[str, deque[int]] = {}
        self._allowance: dict[str, int] = {}
        self._oauth_codes: dict[str, tuple[str, float]] = {}
        self._used_codes: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Where to point the API client instead of https://api.weixin.qq.com (no trailing slash)."""
        if not self._port:
            msg = "FakeWeChatAPI is not started"
            raise RuntimeError(msg)
        return f"http://127.0.0.1:{self._port}"

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_delay])
        app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        app.router.add_post("/cgi-bin/message/custom/send", self._custom_send)
        app.router.add_post("/cgi-bin/message/custom/typing", self._custom_typing)
        app.router.add_post("/cgi-bin/menu/create", self._menu_create)
        app.router.add_get("/cgi-bin/menu/get", self._menu_get)
        app.router.add_get("/cgi-bin/menu/delete", self._menu_delete)
        app.router.add_get("/cgi-bin/media/get", self._media_get)
        app.router.add_get("/sns/oauth2/access_token", self._oauth_access_token)
        return app

    async def start(self) -> FakeWeChatAPI:
        # A short shutdown timeout: a test may leave a delayed request hanging when it tears down.
        self._runner = web.AppRunner(self.make_app(), shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeWeChatAPI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- scripting ----------------------------------------------------------------------------------------

    @property
    def access_token(self) -> str | None:
        """The token stable_token currently hands out (None before the first call)."""
        return self._token

    def invalidate_token(self) -> None:
        """The current token answers 40001 (as after a /cgi-bin/token call elsewhere) until a force refresh."""
        self._token_invalid = True

    def expire_token(self) -> None:
        """The current token answers 42001; the next stable_token call issues a new one."""
        self._token_expires_at = 0.0

    def fail_next(self, errcode: int, times: int = 1, openid: str | None = None) -> None:
        """Answer the next `times` custom/send calls (for `openid`, or for anyone) with `errcode`."""
        queue = self._failures if openid is None else self._user_failures.setdefault(openid, deque())
        queue.extend([errcode] * times)

    def new_user_message(self, openid: str, allowance: int = DEFAULT_ALLOWANCE) -> None:
        """The user wrote to the account: their window opens with `allowance` messages (3 after a follow/click)."""
        self._allowance[openid] = allowance

    def close_window(self, openid: str) -> None:
        """The user's 48 h window closed or they unfollowed: custom/send answers 45015."""
        self._allowance.pop(openid, None)

    def register_oauth_code(self, code: str, openid: str, ttl: float = 300.0) -> None:
        """A code the OAuth redirect would carry; WeChat's codes are single use and live 5 minutes."""
        self._oauth_codes[code] = (openid, time.monotonic() + ttl)

    # -- plumbing -----------------------------------------------------------------------------------------

    @web.middleware
    async def _record_and_delay(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append(request.path)
        delay = self.delays.get(request.path, 0.0)
        if delay:
            await asyncio.sleep(delay)
        return await handler(request)

    @staticmethod
    async def _json_body(request: web.Request) -> dict[str, Any] | None:
        try:  # WeChat reads the body as JSON whatever Content-Type says
            payload = json.loads(await request.read())
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def _token_error(self, request: web.Request) -> int | None:
        token = request.query.get("access_token", "")
        if not token:
            return 41001
        if token != self._token or self._token_invalid:
            return 40001
        if time.monotonic() >= self._token_expires_at:
            return 42001
        return None

    def _issue_token(self) -> None:
        self._token = secrets.token_urlsafe(48)
        self._token_expires_at = time.monotonic() + self.expires_in
        self._token_invalid = False

    # -- endpoints ----------------------------------------------------------------------------------------

    async def _stable_token(self, request: web.Request) -> web.Response:
        """Same token while valid; `force_refresh: true` issues a new one and kills the old one."""
        self.token_calls += 1
        payload = await self._json_body(request)
        if payload is None:
            return _error(47001)
        if not self.ip_whitelisted:
            return _error(40164)
        if payload.get("grant_type") != "client_credential":
            return _error(40002)
        if payload.get("appid") != self.app_id:
            return _error(40013)
        if payload.get("secret") != self.secret:
            return _error(40125)
        force = payload.get("force_refresh") is True
        if force:
            self.force_refresh_calls += 1
        if force or self._token is None or time.monotonic() >= self._token_expires_at:
            self._issue_token()
        remaining = max(0, math.ceil(self._token_expires_at - time.monotonic()))
        return _json({"access_token": self._token, "expires_in": remaining})

    async def _custom_send(self, request: web.Request) -> web.Response:
        """Customer-service text message: token, shape, scripted failures, 2048-byte limit, 5-per-message budget."""
        if (code := self._token_error(request)) is not None:
            return _error(code)
        payload = await self._json_body(request)
        if payload is None:
            return _error(47001)
        touser = payload.get("touser")
        if not isinstance(touser, str) or not touser:
            return _error(40003)
        if payload.get("msgtype") != "text":
            return _error(40008)
        text = payload.get("text")
        content = text.get("content") if isinstance(text, dict) else None
        if not isinstance(content, str) or not content:
            return _error(44004)
        for queue in (self._user_failures.get(touser), self._failures):
            if queue:
                return _error(queue.popleft())
        if len(content.encode()) > TEXT_LIMIT_BYTES:
            return _error(45002)
        if self.enforce_budget:
            left = self._allowance.get(touser)
            if left is None:
                return _error(45015)
            if left <= 0:
                return _error(45047)
            self._allowance[touser] = left - 1
        self.sent.append((touser, content))
        return _json({"errcode": 0, "errmsg": "ok"})

    async def _custom_typing(self, request: web.Request) -> web.Response:
        """The typing indicator: `{"touser", "command": "Typing" | "CancelTyping"}`. Recorded with the time it
        arrived; WeChat's timing rules (30 s after a message, 15 s each) are the caller's to keep, and the
        test checks them against these times."""
        if (code := self._token_error(request)) is not None:
            return _error(code)
        payload = await self._json_body(request)
        if payload is None or payload.get("command") not in ("Typing", "CancelTyping"):
            return _error(47001)
        touser = payload.get("touser")
        if not isinstance(touser, str) or not touser:
            return _error(40003)
        self.typing.append((touser, payload["command"], time.monotonic()))
        return _json({"errcode": 0, "errmsg": "ok"})

    def add_media(self, data: bytes, content_type: str, media_id: str | None = None) -> str:
        """A temporary media file (what a follower's voice or picture message points at); its MediaId."""
        media_id = media_id or secrets.token_urlsafe(48)
        self.media[media_id] = (data, content_type)
        return media_id

    async def _media_get(self, request: web.Request) -> web.Response:
        """The file itself (with WeChat's Content-disposition), or a JSON error as text/plain: bad token,
        or 40007 for an unknown (or expired) media_id."""
        if (code := self._token_error(request)) is not None:
            return _error(code, "text/plain")
        media_id = request.query.get("media_id", "")
        self.media_gets.append(media_id)
        if media_id not in self.media:
            return _error(40007, "text/plain")
        data, content_type = self.media[media_id]
        ext = content_type.rsplit("/", 1)[-1]
        return web.Response(body=data, content_type=content_type,
                            headers={"Content-disposition": f'attachment; filename="{media_id[:16]}.{ext}"'})

    async def _menu_create(self, request: web.Request) -> web.Response:
        """Records the menu after WeChat's size checks: 1-3 buttons (16 bytes), 0-5 sub-buttons (60 bytes)."""
        if (code := self._token_error(request)) is not None:
            return _error(code)
        payload = await self._json_body(request)
        buttons = payload.get("button") if payload else None
        if not isinstance(buttons, list):
            return _error(47001)
        if not 1 <= len(buttons) <= 3:
            return _error(40016)
        for button in buttons:
            if not isinstance(button, dict) or len(str(button.get("name", "")).encode()) > 16:
                return _error(40018)
            subs = button.get("sub_button", [])
            if not isinstance(subs, list) or len(subs) > 5:
                return _error(40023)
            if any(not isinstance(s, dict) or len(str(s.get("name", "")).encode()) > 60 for s in subs):
                return _error(40025)
        self.menus.append(payload)
        return _json({"errcode": 0, "errmsg": "ok"})

    async def _menu_get(self, request: web.Request) -> web.Response:
        """The menu last created (`{"menu": {"button": [...], "menuid": N}}`), or 46003 when there is none."""
        if (code := self._token_error(request)) is not None:
            return _error(code)
        if not self.menus:
            return _error(46003)
        return _json({"menu": {**self.menus[-1], "menuid": 208396993 + len(self.menus)}})

    async def _menu_delete(self, request: web.Request) -> web.Response:
        """Deletes the menu; WeChat answers ok whether there was one or not."""
        if (code := self._token_error(request)) is not None:
            return _error(code)
        self.menus.clear()
        return _json({"errcode": 0, "errmsg": "ok"})

    async def _oauth_access_token(self, request: web.Request) -> web.Response:
        """snsapi_base code exchange → openid. Unknown or expired code 40029, reused code 40163."""
        plain = "text/plain"
        query = request.query
        if query.get("appid") != self.app_id:
            return _error(40013, plain)
        if query.get("secret") != self.secret:
            return _error(40125, plain)
        if query.get("grant_type") != "authorization_code":
            return _error(40002, plain)
        code = query.get("code", "")
        if code in self._used_codes:
            return _error(40163, plain)
        entry = self._oauth_codes.pop(code, None)
        if entry is None or time.monotonic() >= entry[1]:
            return _error(40029, plain)
        self._used_codes.add(code)
        payload = {
            "access_token": secrets.token_urlsafe(32),
            "expires_in": 7200,
            "refresh_token": secrets.token_urlsafe(32),
            "openid": entry[0],
            "scope": "snsapi_base",
        }
        return _json(payload, plain)
