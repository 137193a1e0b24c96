"""`GET/POST /wechat`: verify, decrypt, parse, hand to the chat service, render the reply.

Every rejected request gets a 4xx with its reason and one structured log line; nothing malformed,
forged or stale reaches the chat service (and so never a model call).
"""

from __future__ import annotations

import hashlib
import time

import structlog
from aiohttp import web

from bot.keys import CHAT, CONFIG, SIGNED_REQUESTS, WECHAT
from bot.wechat.protocol import EdgeError

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


def _reject(request: web.Request, e: EdgeError) -> web.Response:
    log.warning("wechat_rejected", status=e.status, reason=e.reason, peer=request.remote)
    return web.Response(status=e.status, text=e.reason)


async def _once(request: web.Request, timestamp: str, nonce: str, body: bytes) -> None:
    """Plaintext mode: a signed (timestamp, nonce) carries one body only. The signature does not cover
    the body, so whoever saw a request URL could otherwise post anything as anyone until it goes stale."""
    tolerance = request.app[CONFIG].wechat.timestamp_tolerance
    digest = hashlib.sha256(body).digest()
    fresh = await request.app[SIGNED_REQUESTS].admit(timestamp, nonce, digest, int(timestamp) + tolerance)
    if not fresh:
        log.warning("wechat_replayed_url", peer=request.remote)
        raise EdgeError(403, "this signature was already used for another message")


@routes.get("/wechat", name="wechat_verify")
async def verify(request: web.Request) -> web.Response:
    """WeChat's server-URL handshake: echo `echostr` when the signature is ours."""
    try:
        request.app[WECHAT].check_url(request.query)
    except EdgeError as e:
        return _reject(request, e)
    return web.Response(text=request.query.get("echostr", ""))


@routes.post("/wechat", name="wechat")
async def receive(request: web.Request) -> web.Response:
    protocol = request.app[WECHAT]
    cap = request.app[CONFIG].server.max_body_bytes
    try:
        timestamp, nonce = protocol.check_url(request.query)
        if request.content_length is not None and request.content_length > cap:
            raise EdgeError(413, "body too large")
        try:
            # the app's client_max_size is the same cap: a larger chunked body stops here
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise EdgeError(413, "body too large") from None
        if not protocol.encrypts:
            await _once(request, timestamp, nonce, body)
        fields, encrypted = protocol.open_body(request.query, body)
        msg = protocol.to_inbound(fields)
    except EdgeError as e:
        return _reject(request, e)

    def still_open() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()

    # bind/reset rather than bound_contextvars(), which copies the whole context on entry (it showed
    # in the per-message profile); the handler runs in one task, so the tokens reset where they were set
    tokens = structlog.contextvars.bind_contextvars(msg_id=msg.msg_key, user=msg.short_user)
    try:
        reply = await request.app[CHAT].handle(msg, still_open)
        if not reply:
            return web.Response(text="success")
        return web.Response(text=protocol.render(fields, reply, encrypted, timestamp, nonce),
                            content_type="application/xml")
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
