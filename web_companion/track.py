"""`POST /api/track` (the page tracker's events) and `GET /track.js` (the tracker itself).

    setup_tracking(app, cfg)   # in the app factory, after the database cleanup_ctx

The endpoint answers 204 before anything is written: events are queued and written in batches
(web_companion.analytics.EventSink). Bad input gets a 4xx with its reason; too many events from one
address a 429. Nothing is mounted when `[analytics] enabled = false`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from bot import metrics
from bot.config import Config
from bot.keys import CONFIG, DB
from storage.analytics import PageEvents
from web_companion import jsonin
from web_companion.analytics import BadEvent, EventSink, IpRateLimit, parse_event
from web_companion.clientip import client_ip
from web_companion.keys import LIMIT, SINK

TRACKER = Path(__file__).parent / "static" / "track.js"


def _refuse(outcome: str, status: int, reason: str) -> web.Response:
    metrics.track_event(outcome)
    return web.Response(status=status, text=reason)


async def track(request: web.Request) -> web.Response:
    cfg = request.app[SINK].cfg
    ip = client_ip(request, cfg.client_ip_header, request.app[CONFIG].server.trusted_proxies)
    if not request.app[LIMIT].allow(ip):
        return _refuse("rate_limited", 429, "too many events")
    if request.content_length is not None and request.content_length > cfg.max_body_bytes:
        return _refuse("too_large", 413, "body too large")
    body = await request.content.read(cfg.max_body_bytes + 1)
    if len(body) > cfg.max_body_bytes:
        return _refuse("too_large", 413, "body too large")
    try:
        # sendBeacon posts text/plain, so the body is read as JSON whatever its content type says.
        event = parse_event(jsonin.loads(body), ip, time.time())
    except (ValueError, UnicodeDecodeError) as e:  # BadEvent and json's errors are ValueErrors
        reason = str(e) if isinstance(e, BadEvent) else "body must be one JSON event"
        return _refuse("invalid", 400, reason)
    request.app[SINK].put(event)
    metrics.track_event("accepted")
    return web.Response(status=204)


def tracker_js(script: bytes):  # type: ignore[no-untyped-def]
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=script, content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})

    return serve


def setup_tracking(app: web.Application, cfg: Config) -> bool:
    """Mount the tracker and its endpoint (False, nothing mounted, when analytics are off)."""
    a = cfg.analytics
    if not a.enabled:
        return False

    async def sink_ctx(app: web.Application) -> AsyncIterator[None]:
        sink = EventSink(PageEvents(app[DB]), a)
        app[SINK] = sink
        app[LIMIT] = IpRateLimit(a.rate_limit, a.rate_window)
        task = asyncio.get_running_loop().create_task(sink.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sink_ctx)
    app.router.add_post("/api/track", track, name="track")
    app.router.add_get("/track.js", tracker_js(TRACKER.read_bytes()), name="track_js")
    return True
