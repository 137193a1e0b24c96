"""The few WeChat API calls mpgpt needs: the shared access_token and customer-service messages.

The token comes from /cgi-bin/stable_token, which hands every caller the same token while it is
valid (plain /cgi-bin/token would invalidate the other process's token on each call), and is kept
in storage so all processes share it.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import structlog

from bot.config import WechatConfig
from bot.wechat.protocol import xml_text
from storage.tokens import TokenRepo

log = structlog.get_logger(__name__)

TOKEN_INVALID = (40001, 42001, 40014)
# menu/get: "menu no exist"
MENU_ABSENT = 46003
# how often a call waiting for another host's token refresh looks for it in storage (seconds)
REFRESH_POLL = 0.05


class WeChatAPIError(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatAPI:
    def __init__(self, cfg: WechatConfig, session: aiohttp.ClientSession, tokens: TokenRepo,
                 clock=time.time) -> None:
        self.cfg = cfg
        self.session = session
        self.tokens = tokens
        self.clock = clock
        # one forced refresh at a time in this process (WeChat allows few a day, and each one ends
        # the token every other call is using)
        self._refreshing = asyncio.Lock()

    async def _post(self, path: str, payload: dict | None, params: dict | None = None) -> dict:
        """POST `payload` as JSON (GET when it is None); the answer, or WeChatAPIError for its errcode."""
        url = self.cfg.api_base.rstrip("/") + path
        timeout = aiohttp.ClientTimeout(total=self.cfg.api_timeout)
        try:
            request = (self.session.get(url, params=params, timeout=timeout) if payload is None
                       else self.session.post(url, json=payload, params=params, timeout=timeout))
            async with request as resp:
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise WeChatAPIError(-1, f"request failed: {type(e).__name__}") from None
        if not isinstance(data, dict):
            raise WeChatAPIError(-1, "answer is not a JSON object")
        code = int(data.get("errcode", 0) or 0)
        if code:
            if code == 40164:
                log.error("wechat_ip_not_whitelisted",
                          advice="add this server's public IP to the account's IP whitelist (基本配置 → IP白名单)")
            raise WeChatAPIError(code, str(data.get("errmsg", "")))
        return data

    async def access_token(self, force_refresh: bool = False) -> str:
        now = self.clock()
        if not force_refresh:
            cached = await self._stored()
            if cached is not None:
                return cached
        data = await self._post("/cgi-bin/stable_token", {
            "grant_type": "client_credential", "appid": self.cfg.app_id, "secret": self.cfg.app_secret,
            "force_refresh": force_refresh,
        })
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise WeChatAPIError(-1, "stable_token answer has no access_token")
        expires_at = now + float(data.get("expires_in", 7200))
        await self.tokens.put(self.cfg.app_id, token, expires_at, now)
        return token

    async def replace_token(self, stale: str) -> str:
        """A token instead of `stale`, which WeChat called invalid, refreshed once for every call and
        host that failed with it: a forced refresh ends the token every other call is using, and
        WeChat allows few a day. The caller that claims the stale token (in storage) refreshes it; the
        others take the one it stores, or refresh themselves if none comes within api_timeout."""
        async with self._refreshing:  # in this process, the second caller finds the stored one
            fresh = await self._stored_instead_of(stale)
            if fresh is not None:
                return fresh
            if await self.tokens.claim_refresh(self.cfg.app_id, stale):
                return await self.access_token(force_refresh=True)
            deadline = self.clock() + self.cfg.api_timeout
            while self.clock() < deadline:
                await asyncio.sleep(REFRESH_POLL)
                fresh = await self._stored_instead_of(stale)
                if fresh is not None:
                    return fresh
            return await self.access_token(force_refresh=True)

    async def _stored_instead_of(self, stale: str) -> str | None:
        cached = await self._stored()
        return cached if cached != stale else None

    async def _stored(self) -> str | None:
        """The shared token while it has more than token_refresh_margin left."""
        cached = await self.tokens.get(self.cfg.app_id)
        if cached and cached[1] - self.cfg.token_refresh_margin > self.clock():
            return cached[0]
        return None

    async def check_credentials(self) -> float:
        """Ask stable_token for the token with our app id and secret (`mpgpt doctor`); the seconds it
        has left. Never force_refresh: the shared token stays valid for every process."""
        now = self.clock()
        data = await self._post("/cgi-bin/stable_token", {
            "grant_type": "client_credential", "appid": self.cfg.app_id, "secret": self.cfg.app_secret,
            "force_refresh": False,
        })
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise WeChatAPIError(-1, "stable_token answer has no access_token")
        expires_in = float(data.get("expires_in", 7200))
        await self.tokens.put(self.cfg.app_id, token, now + expires_in, now)
        return expires_in

    async def create_menu(self, menu: dict) -> None:
        """Replace the official account's custom menu (`{"button": [...]}`, WeChat's own format)."""
        await self._with_token("/cgi-bin/menu/create", menu)

    async def get_menu(self) -> dict | None:
        """The custom menu as set through the API (`{"button": [...]}`), None when there is none (46003)."""
        try:
            data = await self._with_token("/cgi-bin/menu/get", None)
        except WeChatAPIError as e:
            if e.errcode == MENU_ABSENT:
                return None
            raise
        menu = data.get("menu")
        return menu if isinstance(menu, dict) else None

    async def delete_menu(self) -> None:
        """Remove the custom menu (and its conditional menus)."""
        await self._with_token("/cgi-bin/menu/delete", None)

    async def _with_token(self, path: str, payload: dict | None) -> dict:
        """A call with the shared access token, refreshed once if WeChat says it is no longer valid."""
        token = await self.access_token()
        try:
            return await self._post(path, payload, {"access_token": token})
        except WeChatAPIError as e:
            if e.errcode not in TOKEN_INVALID:
                raise
            token = await self.replace_token(token)
            return await self._post(path, payload, {"access_token": token})

    async def media_get(self, media_id: str, *, max_bytes: int, timeout: float,
                        types: tuple[str, ...]) -> tuple[bytes, str]:
        """A temporary media file (a follower's voice or picture, kept 3 days): (bytes, content type).

        GET /cgi-bin/media/get answers the file, or a JSON error; an invalid token is refreshed once.
        Raises MediaRefused (too large, wrong type) or MediaUnavailable.
        """
        from bot.media.guard import HostGuard, MediaUnavailable, fetch

        guard = HostGuard((), self.cfg.api_base)
        url = self.cfg.api_base.rstrip("/") + "/cgi-bin/media/get"
        try:
            token = await self.access_token()
        except WeChatAPIError as e:
            raise MediaUnavailable(f"no access_token: {e.errcode}") from None
        for attempt in range(2):
            try:
                return await fetch(self.session, url, guard, max_bytes=max_bytes, timeout=timeout, types=types,
                                   params={"access_token": token, "media_id": media_id})
            except MediaUnavailable as e:
                if attempt or not any(f"WeChat error {code}" == str(e) for code in TOKEN_INVALID):
                    raise
            try:
                token = await self.replace_token(token)
            except WeChatAPIError as e:
                raise MediaUnavailable(f"no access_token: {e.errcode}") from None
        raise MediaUnavailable("unreachable")  # pragma: no cover - the loop returns or raises

    async def send_text(self, openid: str, content: str) -> None:
        """One customer-service text message; refreshes the token once if WeChat says it is invalid."""
        payload = {"touser": openid, "msgtype": "text", "text": {"content": xml_text(content)}}
        await self._with_token("/cgi-bin/message/custom/send", payload)

    async def send_typing(self, openid: str, command: str = "Typing") -> None:
        """WeChat's typing indicator ("Typing" or "CancelTyping"); refreshes the token once if invalid."""
        payload = {"touser": openid, "command": command}
        await self._with_token("/cgi-bin/message/custom/typing", payload)
