"""Membership plans on real SQLite: granted by a paid order once, extended from the end, read by the rules
from the end date, taken back by a refund."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bot.config import config_from_dict
from bot.rules.base import Pass, Refusal
from bot.rules.chain import build_chain, word_filter
from storage.orders import OrderRepo, Payment
from storage.plans import PlanRepo
from tests.paykit import OPENID, ledger_apply_entry, open_db

DAY = 10.0  # one plan day, in seconds of the test clock


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def db(tmp_path):
    db = await open_db(tmp_path / "mpgpt.db")
    yield db
    await db.close()


async def paid_plan_order(repo: OrderRepo, no: str, now: float, *, days: int = 30, credits: int = 0,
                          tier: str = "vip") -> None:
    await repo.open_order(no, OPENID, "vip30", "native", credits, 990, now, now + 1800, reuse_until=now,
                          plan_tier=tier, plan_days=days)
    await repo.set_created(no, now, code_url="weixin://wxpay/bizpayurl?pr=x")
    settled = await repo.settle(Payment(no, f"tx{no}", 990), "notify", now)
    assert settled.outcome == "credited"


async def test_a_plan_bought_twice_ends_sixty_days_out_and_a_repeated_notify_adds_nothing(db):
    repo, now = OrderRepo(db, ledger_apply_entry(), DAY), time.time()
    await paid_plan_order(repo, "MP000000000001", now)
    await paid_plan_order(repo, "MP000000000002", now + 5 * DAY)
    # the same payment again, from the notify and the query job at once
    again = await asyncio.gather(*(repo.settle(Payment("MP000000000002", "txMP000000000002", 990), src, now)
                                   for src in ("notify", "query", "notify")))
    assert {s.outcome for s in again} == {"duplicate"}
    plan = await PlanRepo(db).get(OPENID)
    assert plan is not None and plan.tier == "vip"
    assert plan.ends_at == pytest.approx(now + 60 * DAY)
    assert (await db.fetchone("SELECT COUNT(*) AS n FROM plan_grants"))["n"] == 2


async def test_a_plan_bought_after_the_last_one_ended_starts_from_the_purchase(db):
    repo, now = OrderRepo(db, ledger_apply_entry(), DAY), time.time()
    await paid_plan_order(repo, "MP000000000001", now, days=3)
    await paid_plan_order(repo, "MP000000000002", now + 10 * DAY, days=3)
    plan = await PlanRepo(db).get(OPENID)
    assert plan is not None and plan.ends_at == pytest.approx(now + 13 * DAY)


async def test_a_plan_with_credits_grants_both(db):
    repo, now = OrderRepo(db, ledger_apply_entry(), DAY), time.time()
    await paid_plan_order(repo, "MP000000000001", now, credits=100)
    row = await db.fetchone("SELECT balance FROM accounts WHERE openid = ?", (OPENID,))
    assert row["balance"] == 100
    assert await PlanRepo(db).active(OPENID) is not None


async def test_a_refund_takes_the_orders_days_back_and_a_refunded_only_plan_ends_now(db):
    repo, now = OrderRepo(db, ledger_apply_entry(), DAY), time.time()
    await paid_plan_order(repo, "MP000000000001", now)
    await paid_plan_order(repo, "MP000000000002", now)
    assert await repo.begin_refund("MP000000000002", "RF01", "changed mind", now)
    plan = await PlanRepo(db).get(OPENID)
    assert plan.ends_at == pytest.approx(now + 30 * DAY)
    assert await repo.begin_refund("MP000000000001", "RF02", "changed mind", now + DAY)
    plan = await PlanRepo(db).get(OPENID)
    assert plan.ends_at == pytest.approx(now + DAY)
    assert await PlanRepo(db, lambda: now + DAY).active(OPENID) is None


def _config(tmp_path: Path, **extra: Any):
    data: dict[str, Any] = {
        "wechat": {"token": "t"},
        "channels": [{"name": "c", "provider": "openai", "api_key": "k", "models": ["gpt-4o-mini", "gpt-4o"]}],
        "quota": {"trial_credits": 10, "daily_free": 2},
        "rules": {"tier_models": {"free": ["gpt-4o-mini"], "vip": ["gpt-4o-mini", "gpt-4o"]}},
        "tiers": {"vip": {"daily_free": 20}},
        "plans": {"day_seconds": DAY},
        **extra,
    }
    return config_from_dict(data, base_dir=str(tmp_path))


async def test_the_plans_tier_sets_the_models_and_the_daily_allowance_until_its_end_date(tmp_path, db):
    cfg = _config(tmp_path)
    start = 1714550400.0  # 2024-05-01 16:00 Asia/Shanghai
    clock = Clock(start)
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    refused = await chain.check(OPENID, "gpt-4o", "问", gen_key="g0", cost=1)
    assert isinstance(refused, Refusal) and refused.code == "model_not_allowed"
    assert (await chain.wallet.ledger.account(OPENID)).daily == 2

    repo = OrderRepo(db, ledger_apply_entry(), DAY)
    await repo.open_order("MP000000000001", OPENID, "vip", "native", 0, 990, clock.t, clock.t + 1800,
                          reuse_until=clock.t, plan_tier="vip", plan_days=1)
    await repo.settle(Payment("MP000000000001", "tx1", 990), "notify", clock.t)
    allowed = await chain.check(OPENID, "gpt-4o", "问", gen_key="g1", cost=1)
    assert isinstance(allowed, Pass) and allowed.account.tier == "vip"
    # bought after today's grant: today is topped up to the tier's 20, once
    assert (await chain.wallet.ledger.account(OPENID)).daily == 20 - 1
    await chain.check(OPENID, "gpt-4o-mini", "问", gen_key="g2", cost=1)
    assert (await chain.wallet.ledger.account(OPENID)).daily == 20 - 2
    assert "会员：VIP" in await chain.wallet.balance_text(OPENID)

    clock.t += DAY + 0.01  # the plan's end date passed: nothing ran, the next question reads it
    expired = await chain.check(OPENID, "gpt-4o", "问", gen_key="g3", cost=1)
    assert isinstance(expired, Refusal) and expired.code == "model_not_allowed"
    assert "会员" not in await chain.wallet.balance_text(OPENID)
    assert await chain.wallet.ledger.check_invariant() == []


async def test_the_orders_rebuild_keeps_orders_refunds_and_the_reference_between_them(tmp_path):
    import sqlite3
    from importlib import resources

    from storage.db import Database

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at REAL NOT NULL)")
    for entry in sorted(resources.files("storage.migrations").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql") and int(entry.name[:4]) <= 18:
            conn.executescript(entry.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (int(entry.name[:4]), entry.name))
    conn.execute("INSERT INTO orders (out_trade_no, openid, product_id, credits, amount_fen, kind, state, created_at,"
                 " expires_at) VALUES ('MP000000000009', 'o_old', 'p6', 600, 600, 'native', 'refunding', 1, 2)")
    conn.execute("INSERT INTO refunds (out_refund_no, out_trade_no, amount_fen, created_at, updated_at)"
                 " VALUES ('RF1', 'MP000000000009', 600, 1, 1)")
    conn.execute("INSERT INTO products (id, name, credits, price_fen, position, created_at, updated_at)"
                 " VALUES ('p6', '600', 600, 600, 1, 1, 1)")
    conn.close()
    async with Database(path) as db:
        order = await OrderRepo(db, ledger_apply_entry()).get("MP000000000009")
        assert order is not None and (order.credits, order.state, order.plan_days) == (600, "refunding", 0)
        assert [r["table"] for r in await db.fetchall("PRAGMA foreign_key_list(refunds)")] == ["orders"]
        assert await db.fetchall("PRAGMA foreign_key_check") == []
        assert (await db.fetchone("SELECT credits FROM products WHERE id = 'p6'"))["credits"] == 600
