"""Orders and the jobs: the pay service on real SQLite against the fake WeChat Pay on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import pytest

from bot.pay.client import PayClient
from bot.pay.service import OrderFailed, ProductNotFound
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.paykit import OPENID, balance, make_service, open_db, pay_config, topups


@pytest.fixture
async def fake():
    async with FakeWeChatPay(make_keys()) as fake:
        yield fake


@pytest.fixture
async def env(tmp_path, fake):
    """A factory: `await env(**pay_overrides)` → (service, db); everything closed at the end."""
    opened = []

    async def make(**pay):
        cfg = pay_config(tmp_path, fake, **pay)
        db = await open_db(tmp_path / "mpgpt.db")
        client = await PayClient.from_config(cfg).__aenter__()
        opened.append((db, client))
        return make_service(cfg, db, client), db

    yield make
    for db, client in opened:
        await client.aclose()
        await db.close()


async def test_a_native_order_fixes_amount_and_expiry_and_shows_a_code_url(env, fake):
    service, _ = await env(order_expiry=900.0)
    checkout = await service.create_order(OPENID, "p30", "native")
    order = checkout.order
    assert not checkout.reused and checkout.jsapi_params is None
    assert (order.state, order.amount_fen, order.credits, order.kind) == ("pending", 3000, 3500, "native")
    assert re.fullmatch(r"[0-9A-Za-z_\-|*]{6,32}", order.out_trade_no) and order.code_url == fake.orders[order.out_trade_no].code_url
    sent = fake.orders[order.out_trade_no].request
    assert sent["amount"] == {"total": 3000, "currency": "CNY"} and sent["description"] == "3500 积分"
    expire = dt.datetime.fromisoformat(sent["time_expire"])
    assert expire.utcoffset() == dt.timedelta(hours=8)
    assert abs(expire.timestamp() - order.expires_at) < 1
    assert abs(order.expires_at - order.created_at - 900) < 0.01


async def test_an_open_order_is_reused_instead_of_creating_another(env, fake):
    service, _ = await env()
    first = await service.create_order(OPENID, "p6", "native")
    again = await service.create_order(OPENID, "p6", "native")
    assert again.reused and again.order.out_trade_no == first.order.out_trade_no
    other = await service.create_order(OPENID, "p30", "native")
    assert other.order.out_trade_no != first.order.out_trade_no
    assert fake.count("/v3/pay/transactions/native") == 2


async def test_a_jsapi_order_comes_with_fresh_weixinjsbridge_arguments(env, fake):
    service, _ = await env()
    checkout = await service.create_order(OPENID, "p6", "jsapi")
    assert checkout.order.kind == "jsapi"
    assert checkout.jsapi_params["package"] == f"prepay_id={checkout.order.prepay_id}"
    again = await service.create_order(OPENID, "p6", "jsapi")
    assert again.reused and again.jsapi_params["package"] == checkout.jsapi_params["package"]
    assert again.jsapi_params["nonceStr"] != checkout.jsapi_params["nonceStr"]


@pytest.mark.parametrize("product", ["nope", "old"])
async def test_an_unknown_or_disabled_product_cannot_be_ordered(env, fake, product):
    service, _ = await env()
    with pytest.raises(ProductNotFound):
        await service.create_order(OPENID, product, "native")
    assert fake.requests == []
    assert [p.id for p in service.products()] == ["p6", "p30"]


async def test_a_refused_create_ends_the_order_and_a_failed_one_leaves_it_to_the_jobs(env, fake):
    service, _ = await env()
    fake.fail_next("/native", 400, "PARAM_ERROR", "参数错误")
    with pytest.raises(OrderFailed) as e:
        await service.create_order(OPENID, "p6", "native")
    assert not e.value.retry
    fake.fail_next("/native", 500, "SYSTEM_ERROR")
    with pytest.raises(OrderFailed) as e:
        await service.create_order(OPENID, "p6", "native")
    assert e.value.retry
    states = sorted(o.state for o in await service.orders.for_user(OPENID))
    assert states == ["failed", "pending"]
    # Neither is handed out again: the next attempt makes a fresh order.
    checkout = await service.create_order(OPENID, "p6", "native")
    assert not checkout.reused and checkout.order.code_url


async def test_a_lost_notify_is_credited_by_the_query_job(env, fake):
    credited = []

    async def tell_user(order):
        credited.append(order.out_trade_no)

    service, db = await env(query_after=0.05)
    service.on_credited = tell_user
    no = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
    assert await service.run_query_job() == 0  # too young to ask about
    await fake.pay(no, notify=False)
    await asyncio.sleep(0.06)
    assert await service.run_query_job() == 1
    assert (await service.orders.get(no)).state == "paid" and await balance(db) == 600
    await asyncio.sleep(0)
    assert credited == [no]
    # A notify arriving after all is acknowledged and credits nothing more.
    assert (await service.handle_notify(*fake.build_notify(no))).ok
    assert await balance(db) == 600 and len(await topups(db)) == 1


async def test_an_unpaid_order_is_queried_and_left_open(env, fake):
    service, db = await env(query_after=0.01, job_interval=0.01)
    no = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
    await asyncio.sleep(0.02)
    assert await service.run_query_job() == 1
    assert (await service.orders.get(no)).state == "pending"
    assert [(e["outcome"], e["trade_state"]) for e in await service.orders.events(no)][-1] == ("not_paid", "NOTPAY")


async def test_an_expired_order_is_closed_at_wechat_pay_and_here(env, fake):
    service, db = await env(order_expiry=0.2)
    no = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
    assert await service.run_close_job() == 0
    await asyncio.sleep(0.25)
    assert await service.run_close_job() == 1
    assert fake.orders[no].trade_state == "CLOSED"
    order = await service.orders.get(no)
    assert order.state == "closed" and order.closed_at and not order.flagged
    assert await service.run_close_job() == 0
    # A closed order is not handed out again.
    assert (await service.create_order(OPENID, "p6", "native")).order.out_trade_no != no


async def test_a_success_that_arrives_after_close_is_credited_and_flagged(env, fake):
    service, db = await env(order_expiry=0.2)
    no = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
    await asyncio.sleep(0.25)
    await service.run_close_job()
    assert (await service.orders.get(no)).state == "closed"
    await fake.pay(no, notify=False, force=True)  # the payer's money arrived for the order we gave up on
    assert (await service.handle_notify(*fake.build_notify(no))).ok
    order = await service.orders.get(no)
    assert order.state == "paid" and order.flagged and "closed" in order.note
    assert await balance(db) == 600
    assert (await service.orders.flagged_events())[0]["outcome"] == "credited"


async def test_closing_an_order_paid_at_the_last_moment_credits_it_instead(env, fake):
    service, db = await env(order_expiry=0.2)
    no = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
    # Paid just before the end (forced: the fake's expiry has whole seconds and 0.2 s rounds to none).
    await fake.pay(no, notify=False, force=True)
    await asyncio.sleep(0.25)
    assert await service.run_close_job() == 1
    assert (await service.orders.get(no)).state == "paid" and await balance(db) == 600
    assert fake.orders[no].trade_state == "SUCCESS"


async def test_an_order_wechat_pay_never_saw_is_closed_here_after_expiry(env, fake):
    service, db = await env(order_expiry=0.2)
    fake.fail_next("/native", 503, "SYSTEM_ERROR")
    with pytest.raises(OrderFailed):
        await service.create_order(OPENID, "p6", "native")
    [order] = await service.orders.for_user(OPENID)
    await asyncio.sleep(0.25)
    await service.run_close_job()
    assert (await service.orders.get(order.out_trade_no)).state == "closed"


async def test_two_server_processes_running_the_jobs_close_each_order_once(env, fake):
    a, _ = await env(order_expiry=0.2)
    b, _ = await env(order_expiry=0.2)
    orders = [(await a.create_order(f"user{i}", "p6", "native")).order.out_trade_no for i in range(6)]
    await asyncio.sleep(0.25)
    done = await asyncio.gather(a.run_close_job(), b.run_close_job(), a.run_close_job(), b.run_close_job())
    assert sum(done) == 6
    assert fake.count("/v3/pay/transactions/out-trade-no/") == 6
    assert [(await a.orders.get(no)).state for no in orders] == ["closed"] * 6


async def test_the_background_jobs_credit_a_lost_notify_and_keep_running_after_a_failure(env, fake):
    service, db = await env(query_after=0.02, job_interval=0.02)
    no = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
    fake.fail_next("/out-trade-no/", 500, "SYSTEM_ERROR")
    await fake.pay(no, notify=False)
    jobs = asyncio.create_task(service.run_jobs())
    try:
        for _ in range(100):
            if await balance(db) == 600:
                break
            await asyncio.sleep(0.02)
    finally:
        jobs.cancel()
        await asyncio.gather(jobs, return_exceptions=True)
    assert await balance(db) == 600
    assert fake.count("/v3/pay/transactions/out-trade-no/") >= 2  # the failed query, then the one that worked


async def test_a_paid_order_is_refunded_in_full_once(env, fake):
    service, db = await env()
    no = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
    await fake.pay(no, notify=False)
    assert (await service.handle_notify(*fake.build_notify(no))).ok
    first = await service.refund(no, "用户申请")
    again = await service.refund(no, "用户申请")
    assert first.status == "PROCESSING" and again.out_refund_no == first.out_refund_no
    assert fake.orders[no].refunded == 600 and (await service.orders.get(no)).state == "refunding"
    # WeChat Pay tells us when the money is back with the payer.
    assert (await service.handle_notify(*fake.build_refund_notify(first.out_refund_no))).ok
    assert (await service.orders.get(no)).state == "refunded"
    assert [e["outcome"] for e in await service.orders.events(no) if e["source"] == "refund"] == [
        "requested", "processing", "processing", "success"]  # the second call re-asked with the same number
