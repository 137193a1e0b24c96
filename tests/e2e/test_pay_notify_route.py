"""`POST /api/pay/notify` on a real aiohttp app on loopback, called by the fake WeChat Pay over HTTP.

The app here is a minimal one (config, database, then `setup_pay`) so these tests hold whatever else
the real app factory mounts; they exercise exactly the mounting interface the factory uses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from bot.config import config_from_dict
from bot.keys import CONFIG, DB
from bot.pay.routes import MAX_NOTIFY_BYTES, PAY, setup_pay
from storage.db import Database
from storage.ledger import apply_entry
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import loopback_socket, served
from tests.paykit import OPENID, balance, books_balance, config_data, topups


async def _database(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    db = await Database(cfg.resolve_path(cfg.storage.path)).open()
    app[DB] = db
    yield
    await db.close()


@asynccontextmanager
async def serving(tmp_path, fake, *, pay: bool = True, **setup_kw):
    """The app on a loopback socket bound first, so notify_url can name its port."""
    sock, base = loopback_socket()
    data = config_data(tmp_path, fake, notify_url=f"{base}/api/pay/notify")
    if not pay:
        del data["pay"]
    cfg = config_from_dict(data, base_dir=str(tmp_path))
    app = web.Application(client_max_size=cfg.server.max_body_bytes)
    app[CONFIG] = cfg
    app.cleanup_ctx.append(_database)
    mounted = setup_pay(app, cfg, **{"run_jobs": False, **setup_kw})
    assert mounted == pay
    async with served(app, sock):
        yield base, app


@pytest.fixture
async def fake():
    async with FakeWeChatPay(make_keys(), retry_delays=(0.05, 0.05, 0.1)) as fake:
        yield fake


async def test_a_payment_is_credited_when_wechat_pay_notifies_and_answered_204_after_commit(tmp_path, fake):
    told = []

    async def tell_user(order):
        told.append((order.openid, order.credits))

    async with serving(tmp_path, fake, on_credited=tell_user) as (_, app):
        no = (await app[PAY].create_order(OPENID, "p6", "native")).order.out_trade_no
        assert await fake.pay(no) == 204
        assert await balance(app[DB]) == 600 and (await app[PAY].orders.get(no)).state == "paid"
        await asyncio.sleep(0.01)
        assert told == [(OPENID, 600)]
        assert await books_balance(app[DB])


async def test_five_concurrent_identical_notifies_over_http_credit_once(tmp_path, fake):
    async with serving(tmp_path, fake) as (base, app):
        no = (await app[PAY].create_order(OPENID, "p6", "native")).order.out_trade_no
        await fake.pay(no, notify=False)
        headers, body = fake.build_notify(no)
        url = f"{base}/api/pay/notify"
        results = await asyncio.gather(*(fake.post_notify(headers, body, url) for _ in range(5)))
        assert [status for status, _ in results] == [204] * 5
        assert await balance(app[DB]) == 600 and len(await topups(app[DB])) == 1


@pytest.mark.parametrize("bad", ["forged_notify", "tampered_notify", "stale_notify", "probe_notify",
                                 "unknown_serial_notify"])
async def test_a_bad_notify_is_answered_with_wechat_pays_fail_body_and_credits_nothing(tmp_path, fake, bad):
    async with serving(tmp_path, fake) as (base, app):
        no = (await app[PAY].create_order(OPENID, "p6", "native")).order.out_trade_no
        await fake.pay(no, notify=False)
        status, text = await fake.post_notify(*getattr(fake, bad)(no), f"{base}/api/pay/notify")
        assert status == 401
        body = json.loads(text)
        assert body["code"] == "FAIL" and body["message"]
        assert await balance(app[DB]) == 0


async def test_an_internal_failure_answers_fail_without_a_traceback_and_wechats_retry_credits_once(tmp_path, fake):
    failures = [RuntimeError("disk full")]

    async def ledger_failing_once(conn, openid, kind, amount, ref):
        if failures:
            raise failures.pop()
        return await apply_entry(conn, openid, kind, amount, ref)

    async with serving(tmp_path, fake, apply_entry_for=lambda db: ledger_failing_once) as (base, app):
        no = (await app[PAY].create_order(OPENID, "p6", "native")).order.out_trade_no
        await fake.pay(no, notify=False)
        headers, body = fake.build_notify(no)
        status, text = await fake.post_notify(headers, body, f"{base}/api/pay/notify")
        assert status == 500 and "Traceback" not in text and "disk full" not in text
        assert json.loads(text)["code"] == "FAIL"
        assert await balance(app[DB]) == 0 and (await app[PAY].orders.get(no)).state == "pending"
        # WeChat Pay sends it again (the fake's scaled-down retry schedule); this time it lands, once.
        failures.append(RuntimeError("disk full"))
        assert await fake.notify(no) == 500
        for _ in range(100):
            if fake.deliveries[-1][1] == 204:
                break
            await asyncio.sleep(0.02)
        assert [s for _, s in fake.deliveries] == [500, 204]
        assert await balance(app[DB]) == 600 and len(await topups(app[DB])) == 1


async def test_an_oversized_or_empty_notify_is_refused_with_fail(tmp_path, fake):
    async with serving(tmp_path, fake) as (base, _):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/pay/notify", data=b"x" * (MAX_NOTIFY_BYTES + 1)) as resp:
                assert resp.status == 413 and (await resp.json())["code"] == "FAIL"
            async with http.post(f"{base}/api/pay/notify", data=b"") as resp:
                assert resp.status == 400 and (await resp.json())["code"] == "FAIL"


async def test_without_a_pay_table_nothing_is_mounted(tmp_path, fake):
    async with serving(tmp_path, fake, pay=False) as (base, app):
        assert PAY not in app
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/pay/notify", data=b"{}") as resp:
                assert resp.status == 404


async def test_the_apps_background_jobs_credit_a_lost_notify(tmp_path, fake):
    async with serving(tmp_path, fake, run_jobs=True) as (_, app):
        no = (await app[PAY].create_order(OPENID, "p6", "native")).order.out_trade_no
        await fake.pay(no, notify=False)
        for _ in range(100):
            if await balance(app[DB]) == 600:
                break
            await asyncio.sleep(0.02)
        assert await balance(app[DB]) == 600 and fake.deliveries == []
