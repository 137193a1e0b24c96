"""The orders repository on real SQLite: the schema's guarantees, settling exactly once, claims."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from tests.integration.conftest import INTEGRITY_ERRORS

from storage.orders import OrderRepo, Payment
from tests.paykit import OPENID, balance, books_balance, ledger_apply_entry, topups


@pytest.fixture
def repo(db):
    return OrderRepo(db, ledger_apply_entry())


async def pending(repo: OrderRepo, no: str, *, product: str = "p6", kind: str = "native", amount: int = 600,
                  created: float | None = None, expires_in: float = 1800.0):
    now = time.time() if created is None else created
    order, reused = await repo.open_order(no, OPENID, product, kind, amount, amount, now, now + expires_in,
                                          reuse_until=now + 300)
    assert not reused
    return await repo.set_created(no, now, code_url=f"weixin://wxpay/bizpayurl?pr={no[-6:]}")


@pytest.mark.parametrize("no", ["short", "x" * 33, "has space1", "dot.ted12", "中文订单号123"])
async def test_an_out_trade_no_outside_wechat_pays_format_is_refused_by_the_schema(repo, no):
    with pytest.raises(INTEGRITY_ERRORS):
        await repo.open_order(no, OPENID, "p6", "native", 1, 1, 0.0, 1.0, 0.0)


async def test_every_character_wechat_pay_allows_is_accepted(repo):
    order = await pending(repo, "Ab9_-|*Ab9_-|*")
    assert order.state == "pending"


async def test_an_open_order_is_handed_out_again_for_the_same_user_product_and_kind(repo):
    first = await pending(repo, "MP000000000001")
    now = time.time()
    again, reused = await repo.open_order("MP000000000002", OPENID, "p6", "native", 600, 600, now, now + 1800, now + 300)
    assert reused and again.out_trade_no == first.out_trade_no and again.code_url == first.code_url
    assert await repo.get("MP000000000002") is None


async def test_an_open_order_is_handed_out_again_whatever_kind_is_asked_for(repo):
    first = await pending(repo, "MP000000000001", expires_in=1800)
    now = time.time()
    again, reused = await repo.open_order("MP000000000002", OPENID, "p6", "jsapi", 600, 600, now, now + 1800, now + 300)
    assert reused and again.out_trade_no == first.out_trade_no and again.kind == "native"


@pytest.mark.parametrize("change", ["price", "near_expiry"])
async def test_a_new_order_supersedes_the_open_one_when_it_cannot_be_reused(repo, change):
    await pending(repo, "MP000000000001", expires_in=100 if change == "near_expiry" else 1800)
    now = time.time()
    kind = "native"
    amount = 700 if change == "price" else 600
    new, reused = await repo.open_order("MP000000000002", OPENID, "p6", kind, amount, amount, now, now + 1800, now + 300)
    assert not reused and new.state == "creating"
    # The old one stays open for the jobs to close, but is never handed out again.
    assert (await repo.get("MP000000000001")).state == "pending"
    again, reused = await repo.open_order("MP000000000003", OPENID, "p6", kind, amount, amount, now, now + 1800, now + 300)
    assert reused is False and again.out_trade_no == "MP000000000003"  # the new one is still `creating`


async def test_the_schema_allows_only_one_reusable_order_per_user_and_product(db):
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO orders (out_trade_no, openid, product_id, credits, amount_fen, kind, reusable,"
                           " created_at, expires_at) VALUES ('MP000000000001', 'o1', 'p6', 1, 1, 'native', 1, 0, 1)")
    with pytest.raises(INTEGRITY_ERRORS):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO orders (out_trade_no, openid, product_id, credits, amount_fen, kind,"
                               " reusable, created_at, expires_at)"
                               " VALUES ('MP000000000002', 'o1', 'p6', 1, 1, 'jsapi', 1, 0, 1)")


async def test_settling_the_same_payment_twice_credits_once(repo, db):
    await pending(repo, "MP000000000001")
    pay = Payment("MP000000000001", "4200000001", 600)
    first, second = await repo.settle(pay, "notify", time.time()), await repo.settle(pay, "query", time.time())
    assert (first.outcome, second.outcome) == ("credited", "duplicate")
    assert first.order.state == "paid" and await balance(db) == 600 and len(await topups(db)) == 1


async def test_concurrent_settles_credit_once(repo, db):
    await pending(repo, "MP000000000001")
    pay = Payment("MP000000000001", "4200000001", 600)
    results = await asyncio.gather(*(repo.settle(pay, "notify", time.time()) for _ in range(5)))
    assert sorted(r.outcome for r in results) == ["credited"] + ["duplicate"] * 4
    assert await balance(db) == 600
    assert await books_balance(db)


async def test_two_processes_settling_at_once_credit_once(repo, db, tmp_path, open_database):
    await pending(repo, "MP000000000001")
    other = await open_database().open()
    try:
        pay = Payment("MP000000000001", "4200000001", 600)
        results = await asyncio.gather(repo.settle(pay, "notify", time.time()),
                                       OrderRepo(other, ledger_apply_entry()).settle(pay, "query", time.time()))
    finally:
        await other.close()
    assert sorted(r.outcome for r in results) == ["credited", "duplicate"]
    assert await balance(db) == 600
    assert await books_balance(db)


async def test_a_payment_of_another_amount_is_held_and_flagged_never_credited(repo, db):
    await pending(repo, "MP000000000001")
    s = await repo.settle(Payment("MP000000000001", "4200000001", 599), "notify", time.time())
    assert s.outcome == "held" and s.order.state == "held" and s.order.flagged
    assert await balance(db) == 0
    assert (await repo.settle(Payment("MP000000000001", "4200000001", 600), "query", time.time())).outcome == "held"
    assert await balance(db) == 0


async def test_a_payment_for_an_order_we_do_not_have_is_recorded_and_flagged(repo, db):
    s = await repo.settle(Payment("MP999999999999", "4200000001", 600), "notify", time.time())
    assert s.outcome == "unknown_order" and await balance(db) == 0
    assert (await repo.flagged_events())[0]["out_trade_no"] == "MP999999999999"


async def test_a_payment_for_a_closed_order_is_credited_and_flagged(repo, db):
    await pending(repo, "MP000000000001")
    assert await repo.mark_closed("MP000000000001", "close", time.time())
    s = await repo.settle(Payment("MP000000000001", "4200000001", 600), "notify", time.time())
    assert s.outcome == "credited" and s.late and s.order.flagged and "closed" in s.order.note
    assert await balance(db) == 600
    assert (await repo.flagged_events())[0]["outcome"] == "credited"


async def test_a_paid_order_is_never_closed(repo):
    await pending(repo, "MP000000000001")
    await repo.settle(Payment("MP000000000001", "4200000001", 600), "notify", time.time())
    assert not await repo.mark_closed("MP000000000001", "close", time.time())
    assert (await repo.get("MP000000000001")).state == "paid"


async def test_a_failure_inside_the_settle_transaction_leaves_nothing_behind(db):
    real = ledger_apply_entry()

    async def ledger_then_crash(conn, openid, kind, amount, ref):
        await real(conn, openid, kind, amount, ref)
        raise RuntimeError("the process died after the ledger write")

    repo = OrderRepo(db, ledger_then_crash)
    await pending(repo, "MP000000000001")
    with pytest.raises(RuntimeError):
        await repo.settle(Payment("MP000000000001", "4200000001", 600), "notify", time.time())
    assert (await repo.get("MP000000000001")).state == "pending"
    assert await balance(db) == 0
    assert [e["outcome"] for e in await repo.events("MP000000000001")] == ["created"]
    assert await books_balance(db)


async def test_the_query_claim_takes_only_old_unexpired_open_orders_and_only_once(repo):
    now = time.time()
    await pending(repo, "MP000000000001", created=now - 120)
    await pending(repo, "MP000000000002", product="p30", created=now - 10)
    await pending(repo, "MP000000000003", product="p99", created=now - 4000, expires_in=1800)
    claimed = await repo.claim_unsettled(now, now - 60, lease=60)
    assert [o.out_trade_no for o in claimed] == ["MP000000000001"]
    assert await repo.claim_unsettled(now, now - 60, lease=60) == []
    assert [o.out_trade_no for o in await repo.claim_unsettled(now + 61, now - 60, lease=60)] == ["MP000000000001"]
    assert [o.out_trade_no for o in await repo.claim_expired(now, lease=60)] == ["MP000000000003"]


async def test_two_processes_never_claim_the_same_order(repo, tmp_path, open_database):
    now = time.time()
    for i in range(20):
        await pending(repo, f"MP0000000000{i:02d}", product=f"p{i}", created=now - 100, expires_in=10)
    other = OrderRepo(await open_database().open(), ledger_apply_entry())
    try:
        batches = await asyncio.gather(*(r.claim_expired(now, lease=60, limit=3) for r in [repo, other] * 5))
    finally:
        await other.db.close()
    claimed = [o.out_trade_no for batch in batches for o in batch]
    assert len(claimed) == len(set(claimed)) == 20


async def test_a_refund_is_begun_once_per_paid_order_and_finished_by_wechats_answer(repo):
    await pending(repo, "MP000000000001")
    assert await repo.begin_refund("MP000000000001", "RF000000000001", "test", time.time()) is None
    await repo.settle(Payment("MP000000000001", "4200000001", 600), "notify", time.time())
    r = await repo.begin_refund("MP000000000001", "RF000000000001", "test", time.time())
    again = await repo.begin_refund("MP000000000001", "RF000000000002", "test", time.time())
    assert r["out_refund_no"] == again["out_refund_no"] == "RF000000000001" and r["amount_fen"] == 600
    assert (await repo.get("MP000000000001")).state == "refunding"
    await repo.update_refund("RF000000000001", "SUCCESS", "5000001", time.time())
    assert (await repo.get("MP000000000001")).state == "refunded"
