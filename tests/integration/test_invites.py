"""Invitations on real SQLite: recorded once, no self-invitation or circles, old followers refused, the
reward paid once with the invitee's first credited order however the settles race."""

from __future__ import annotations

import asyncio
import time

from storage.invites import InviteRepo
from storage.ledger import Ledger
from storage.orders import OrderRepo, Payment
from tests.paykit import ledger_apply_entry

WINDOW = 3600.0


async def _new(db, openid: str) -> None:
    await Ledger(db).ensure_account(openid, 0)


async def test_a_new_follower_is_recorded_once_and_self_or_circles_are_refused(db):
    repo = InviteRepo(db)
    for who in ("o_a", "o_b", "o_c"):
        await _new(db, who)
    a, b = await repo.code_for("o_a"), await repo.code_for("o_b")
    assert await repo.code_for("o_a") == a and len(a) == 8
    assert await repo.record("o_a", a, "wechat", WINDOW) == "self"
    results = await asyncio.gather(*(repo.record("o_b", a.lower(), "wechat", WINDOW) for _ in range(10)))
    assert results.count("recorded") == 1 and results.count("already") == 9
    c = await repo.code_for("o_c")
    assert await repo.record("o_c", b, "wechat", WINDOW) == "recorded"  # a -> b -> c
    assert await repo.record("o_a", c, "wechat", WINDOW) == "circle"
    assert await repo.record("o_a", "NOSUCHCODE", "wechat", WINDOW) == "unknown_code"
    assert await repo.invited("o_a") == (1, 0)


async def test_a_follower_first_seen_before_the_window_cannot_be_invited(db):
    await _new(db, "o_a")
    old = Ledger(db, lambda: time.time() - 2 * WINDOW)
    await old.ensure_account("o_old", 0)
    repo = InviteRepo(db)
    assert await repo.record("o_old", await repo.code_for("o_a"), "wechat", WINDOW) == "not_new"


async def test_the_reward_is_paid_once_with_the_first_paid_order_whatever_races(db):
    for who in ("o_inviter", "o_invitee"):
        await _new(db, who)
    repo = InviteRepo(db)
    assert await repo.record("o_invitee", await repo.code_for("o_inviter"), "wechat", WINDOW) == "recorded"
    orders = OrderRepo(db, ledger_apply_entry(), invite_rewards=(50, 5))
    now = time.time()
    for no in ("MP000000000001", "MP000000000002"):
        await orders.open_order(no, "o_invitee", no[-1], "native", 100, 600, now, now + 1800, reuse_until=now)
        await orders.set_created(no, now, code_url="weixin://x")
    # the notify, a repeated notify and the query job at once, for the first order and then a second one
    await asyncio.gather(*(orders.settle(Payment("MP000000000001", "tx1", 600), src, now)
                           for src in ("notify", "notify", "query", "query")))
    await orders.settle(Payment("MP000000000002", "tx2", 600), "notify", now)
    ledger = Ledger(db)
    assert await ledger.balance("o_inviter") == 50
    assert await ledger.balance("o_invitee") == 200 + 5
    rows = await db.fetchall("SELECT openid, amount FROM ledger WHERE kind = 'invite' ORDER BY openid")
    assert [(r["openid"], r["amount"]) for r in rows] == [("o_invitee", 5), ("o_inviter", 50)]
    assert await repo.invited("o_inviter") == (1, 1)
    assert await ledger.check_invariant() == []
