"""The WeChat Pay edge: `POST /api/pay/notify`, and the wiring that mounts pay on the app.

    setup_pay(app, config)            # in the app factory, after the database cleanup_ctx is added

does nothing without a [pay] table. Otherwise it adds the notify route and one cleanup_ctx that opens
the WeChat Pay client, builds the PayService (reachable as `app[PAY]`) and runs the query and close
jobs in the background until shutdown.

The notify answers 204 only after the outcome is committed; anything else is a 4xx/5xx with WeChat
Pay's `{"code": "FAIL", "message": ...}`, which makes it send the notify again later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from bot.config import Config
from bot.keys import DB, PAY
from bot.pay.client import PayClient
from bot.pay.service import OnCredited, PayService
from storage.db import Database
from storage.ledger import apply_entry
from storage.orders import ApplyEntry, OrderRepo

log = structlog.get_logger(__name__)

NOTIFY_PATH = "/api/pay/notify"
# A payment notify is about 1 KB; anything much larger is not one.
MAX_NOTIFY_BYTES = 16 * 1024


def _fail(status: int, message: str) -> web.Response:
    return web.json_response({"code": "FAIL", "message": message}, status=status)


async def notify(request: web.Request) -> web.Response:
    try:
        if request.content_length is not None and request.content_length > MAX_NOTIFY_BYTES:
            return _fail(413, "body too large")
        body = await request.content.read(MAX_NOTIFY_BYTES + 1)
        if len(body) > MAX_NOTIFY_BYTES:
            return _fail(413, "body too large")
        answer = await request.app[PAY].handle_notify(request.headers, body)
    except Exception:
        log.exception("pay.notify_failed")
        return _fail(500, "internal error, please retry")
    if answer.ok:
        return web.Response(status=204)
    return _fail(answer.status, answer.message)


def invite_rewards(config: Config) -> tuple[int, int]:
    """What an invitee's first credited order pays (inviter, invitee); nothing when invites are off."""
    i = config.invites
    return (i.inviter_reward, i.invitee_reward) if i.enabled else (0, 0)


def _default_apply_entry(db: Database) -> ApplyEntry:
    return apply_entry


def setup_pay(app: web.Application, config: Config, *,
              apply_entry_for: Callable[[Database], ApplyEntry] = _default_apply_entry,
              on_credited: OnCredited | None = None, run_jobs: bool = True) -> bool:
    """Mount WeChat Pay on `app` (which must have app[DB] open by the time its cleanup_ctx runs).
    `on_credited(order)` runs after a top-up is committed (e.g. to tell the user in WeChat).
    Returns False, mounting nothing, when pay is off."""
    if not config.pay.enabled:
        return False

    async def pay_ctx(app: web.Application) -> AsyncIterator[None]:
        db = app[DB]
        async with PayClient.from_config(config) as client:
            service = PayService(config.pay, config.products, OrderRepo(db, apply_entry_for(db), config.plans.day_seconds, invite_rewards(config)), client,
                                 on_credited=on_credited, clock=db.clock)
            app[PAY] = service
            jobs = asyncio.get_running_loop().create_task(service.run_jobs()) if run_jobs else None
            log.info("pay_ready", mode="public_key" if config.pay.public_key_id else "certificate",
                     client_ready=client.ready)
            try:
                yield
            finally:
                if jobs is not None:
                    jobs.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await jobs
                await service.aclose()

    app.cleanup_ctx.append(pay_ctx)
    app.router.add_post(NOTIFY_PATH, notify, name="pay_notify")
    return True
