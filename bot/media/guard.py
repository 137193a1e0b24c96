"""Fetching a follower's media without becoming an open proxy (SSRF).

A PicUrl arrives inside a message, so it is data from outside: only WeChat's media hosts (the
configured `media.hosts`) and `wechat.api_base` are fetched, over http(s), without following
redirects, with a size cap, a timeout and a checked content type. Everything else is refused and
logged with the reason (never the URL's query, which may carry a token).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

import aiohttp
import structlog

log = structlog.get_logger(__name__)


class MediaRefused(Exception):
    """The URL or the answer was not one we fetch (foreign host, too big, wrong type)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaUnavailable(Exception):
    """The media could not be fetched (network, WeChat error, expired id)."""


def _netloc(url: urllib.parse.SplitResult) -> tuple[str, int | None]:
    host = (url.hostname or "").lower()
    try:
        port = url.port
    except ValueError:
        return "", None
    return host, port


class HostGuard:
    """Which URLs may be fetched: exact hosts (or `.suffix` entries), each optionally with :port."""

    def __init__(self, hosts: Iterable[str], api_base: str) -> None:
        self._rules: list[tuple[str, int | None]] = []
        for entry in hosts:
            name, _, port = entry.lower().partition(":")
            self._rules.append((name, int(port) if port else None))
        base = urllib.parse.urlsplit(api_base)
        host, port = _netloc(base)
        if host:
            self._rules.append((host, port))

    def refusal(self, url: str) -> str | None:
        """Why `url` may not be fetched, or None when it may."""
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:
            return "not a URL"
        if parts.scheme not in ("http", "https"):
            return "scheme is not http(s)"
        if parts.username or parts.password:
            return "URL carries credentials"
        host, port = _netloc(parts)
        if not host:
            return "no host"
        for name, want_port in self._rules:
            if want_port is not None and port != want_port:
                continue
            if want_port is None and port not in (None, 80, 443):
                continue
            if host == name or (name.startswith(".") and host.endswith(name)):
                return None
        return "host is not a WeChat media host"


async def fetch(session: aiohttp.ClientSession, url: str, guard: HostGuard, *, max_bytes: int, timeout: float,
                types: tuple[str, ...], params: dict[str, str] | None = None) -> tuple[bytes, str]:
    """GET an allowed URL: (body, content type). Raises MediaRefused or MediaUnavailable."""
    reason = guard.refusal(url)
    if reason is not None:
        log.warning("media_refused", reason=reason, host=urllib.parse.urlsplit(url).hostname or "")
        raise MediaRefused(reason)
    try:
        async with session.get(url, params=params, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                raise MediaUnavailable(f"HTTP {resp.status}")
            ctype = resp.content_type.lower()
            if resp.content_length is not None and resp.content_length > max_bytes:
                log.warning("media_refused", reason="too large", bytes=resp.content_length)
                raise MediaRefused("too large")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                body += chunk
                if len(body) > max_bytes:
                    log.warning("media_refused", reason="too large", bytes=len(body))
                    raise MediaRefused("too large")
    except (aiohttp.ClientError, TimeoutError) as e:
        raise MediaUnavailable(type(e).__name__) from None
    if not ctype.startswith(types):
        if ctype in ("application/json", "text/plain"):
            raise MediaUnavailable(_wechat_error(bytes(body)))
        log.warning("media_refused", reason="content type", content_type=ctype[:60])
        raise MediaRefused(f"content type {ctype[:60]!r}")
    return bytes(body), ctype


def _wechat_error(body: bytes) -> str:
    """media/get answers a JSON error (`{"errcode": 40007, ...}`) instead of the file."""
    import json

    try:
        data = json.loads(body)
        return f"WeChat error {int(data.get('errcode', -1))}"
    except (ValueError, TypeError, AttributeError):
        return "not media"
