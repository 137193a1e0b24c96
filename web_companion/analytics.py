"""What the page tracker may send, how often, and how it reaches storage without slowing anyone.

`parse_event` turns one posted JSON object into a storage event or says why not (`BadEvent`).
`IpRateLimit` counts events per client address in fixed windows (in memory: analytics need no
cross-process precision, and a flood must not cost a database write). `EventSink` queues accepted
events and writes them in batches every `flush_interval`, so the request is answered before any
disk is touched; a full queue drops events (counted) instead of growing.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import structlog

from bot import metrics
from bot.config import AnalyticsConfig
from storage.analytics import PageAct, PageClick, PageEvent, PageEvents, PageLeave, PageView

log = structlog.get_logger(__name__)

_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_PAGE = re.compile(r"/[\x21-\x7e]{0,199}")
_TARGET = re.compile(r"[\x20-\x7e]{0,200}")
# A screen of the single-page app (login, account, shop, chat); "" when the page has none.
_SCREEN = re.compile(r"(?:[a-z][a-z0-9_-]{0,31})?")
MAX_COORD = 100_000
MAX_VISIBLE_MS = 6 * 3600 * 1000


class BadEvent(ValueError):
    pass


def _id(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not _ID.fullmatch(value):
        msg = f"{key} must be 8-64 letters, digits, _ or -"
        raise BadEvent(msg)
    return value


def _int(data: dict[str, Any], key: str, high: int) -> int:
    value = data.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        msg = f"{key} must be a whole number from 0 to {high}"
        raise BadEvent(msg)
    return value


def _page(data: dict[str, Any]) -> str:
    value = data.get("page")
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        raise BadEvent("page must be a path")
    # Only the path: a query string may carry a token (the login link keeps its own in the fragment).
    path = urllib.parse.urlsplit(value).path
    if not _PAGE.fullmatch(path):
        raise BadEvent("page must be a path of at most 200 characters")
    return path


def _screen(data: dict[str, Any]) -> str:
    value = data.get("screen", "")
    if not isinstance(value, str) or not _SCREEN.fullmatch(value):
        raise BadEvent("screen must be at most 32 lower-case letters, digits, _ or -")
    return value


def _referrer(data: dict[str, Any]) -> str:
    value = data.get("ref", "")
    if not isinstance(value, str) or len(value) > 2000:
        raise BadEvent("ref must be a URL")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:300]


def parse_event(data: object, ip: str, now: float) -> PageEvent:
    """One tracker event: {"t": "view"|"leave"|"click"|"act", "vid": visitor, "pv": page-view id, ...}.
    A view is one screen of the page: "screen" names it (view and click events)."""
    if not isinstance(data, dict):
        raise BadEvent("an event is a JSON object")
    kind = data.get("t")
    if kind == "view":
        return PageView(_id(data, "pv"), _id(data, "vid"), _page(data), _referrer(data), ip[:64],
                        _int(data, "vw", MAX_COORD), _int(data, "vh", MAX_COORD), now, _screen(data))
    if kind == "leave":
        return PageLeave(_id(data, "pv"), _id(data, "vid"), _int(data, "ms", MAX_VISIBLE_MS))
    if kind == "click":
        target = data.get("el", "")
        if not isinstance(target, str) or not _TARGET.fullmatch(target):
            raise BadEvent("el must be at most 200 printable ASCII characters")
        return PageClick(_id(data, "pv"), _page(data), _int(data, "x", MAX_COORD), _int(data, "y", MAX_COORD),
                         _int(data, "vw", MAX_COORD), target, now, _screen(data))
    if kind == "act":
        return PageAct(_id(data, "pv"), _id(data, "vid"))
    raise BadEvent("t must be view, leave, click or act")


class IpRateLimit:
    """At most `limit` events per address per `window` seconds (fixed windows, bounded memory)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = 50_000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_addresses = max_addresses
        self._counts: dict[str, tuple[float, int]] = {}

    def allow(self, ip: str) -> bool:
        now = self.clock()
        start, count = self._counts.get(ip, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if count >= self.limit:
            return False
        if ip not in self._counts and len(self._counts) >= self.max_addresses:
            self._forget_old(now)
        self._counts[ip] = (start, count + 1)
        return True

    def _forget_old(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if now - v[0] < self.window}
        if len(self._counts) >= self.max_addresses:  # all live: a flood of addresses; start over
            self._counts.clear()


class EventSink:
    """Accepted events wait here and are written together every `flush_interval` seconds."""

    def __init__(self, repo: PageEvents, cfg: AnalyticsConfig) -> None:
        self.repo = repo
        self.cfg = cfg
        self._queue: list[PageEvent] = []

    def put(self, event: PageEvent) -> bool:
        if len(self._queue) >= self.cfg.max_queue:
            metrics.track_event("dropped")
            return False
        self._queue.append(event)
        return True

    async def flush(self) -> int:
        batch, self._queue = self._queue, []
        if batch:
            try:
                await self.repo.write(batch)
            except Exception:  # a busy disk loses a batch of analytics, never a request
                log.exception("analytics.write_failed", events=len(batch))
                metrics.track_event("dropped", len(batch))
        return len(batch)

    async def run(self) -> None:
        """Flush every interval until cancelled; then flush what is left."""
        try:
            while True:
                await asyncio.sleep(self.cfg.flush_interval)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())
