"""The HTTP side of metrics: every request counted and timed by route name, and `GET /metrics`.

    setup_metrics(app, cfg)    # in the app factory

serves /metrics on the main server — or, with `[metrics] port`, on a server of its own that only
Prometheus needs to reach. The app's one middleware calls `record_request` for every request (one
layer for timing and the last line of defence: each middleware layer costs every request).
With `[metrics] token`, a scrape must send `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import os

import hmac
import time
from typing import Any
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from bot import metrics
from bot.config import Config, MetricsConfig
from bot.keys import ROUTER

log = structlog.get_logger(__name__)

METRICS_PATH = "/metrics"


def route_label(request: web.Request) -> str:
    """The route's name; its template when it has none; a fixed word when nothing matched.

    Never the raw path: a scanner probing random URLs must not create a series per URL.
    """
    route = request.match_info.route
    if route.name:
        return route.name
    resource = route.resource
    # No resource: aiohttp's system route for 404/405 answers.
    return metrics.UNMATCHED if resource is None else resource.canonical


# labels() validates and locks on every call; the label sets here are closed, so their children are
# looked up once and kept (it showed in /wechat's per-message profile).
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
# Methods are the client's choice: any other word is one label value, not a series each.
_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})


def _series(route: str, method: str, status: int) -> tuple[Any, Any]:
    key = (route, method, status)
    found = _children.get(key)
    if found is None:
        found = _children[key] = (metrics.HTTP_REQUESTS.labels(route=route, method=method, status=str(status)),
                                  metrics.HTTP_SECONDS.labels(route=route))
    return found


def record_request(request: web.Request, status: int, seconds: float) -> None:
    """Count and time one answered request (called by the app's request middleware)."""
    method = request.method if request.method in _METHODS else metrics.OTHER
    requests, timing = _series(route_label(request), method, status)
    requests.inc()
    timing.observe(seconds)


def metrics_handler(settings: MetricsConfig):  # type: ignore[no-untyped-def]
    expected = f"Bearer {settings.token}".encode() if settings.token else None

    async def serve(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.Response(status=401, text="metrics need a bearer token",
                                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return serve


async def _watch_router(app: web.Application) -> AsyncIterator[None]:
    """Channel health is read from the router at each scrape (added after the chat context builds it)."""
    router = app.get(ROUTER)
    if router is not None:
        metrics.watch_channels(router.states)
    yield
    if router is not None and metrics.CHANNELS.source == router.states:
        metrics.watch_channels(None)


def setup_metrics(app: web.Application, cfg: Config) -> None:
    """Serve /metrics where the config says (nothing when disabled); requests are timed either way."""
    metrics.configure(cfg)
    app.cleanup_ctx.append(_watch_router)
    m = cfg.metrics
    if not m.enabled:
        return
    if not m.port:
        app.router.add_get(METRICS_PATH, metrics_handler(m), name="metrics")
        return

    async def own_server(app: web.Application) -> AsyncIterator[None]:
        inner = web.Application()
        inner.router.add_get(METRICS_PATH, metrics_handler(m), name="metrics")
        runner = web.AppRunner(inner, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, m.host, m.port).start()
        except OSError as e:
            await runner.cleanup()
            reason = os.strerror(e.errno) if e.errno else e.strerror
            msg = f"metrics.port: cannot listen on {m.host}:{m.port}: {reason}"
            raise OSError(e.errno, msg) from None
        log.info("metrics_ready", host=m.host, port=m.port)
        yield
        await runner.cleanup()

    app.cleanup_ctx.append(own_server)
