"""Owner-managed account standing and the shared rate-limit counter, on a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.accounts import Accounts
from storage.db import Database
from storage.inbound import InboundRepo
from storage.ledger import Ledger
from storage.plans import grant_plan
from storage.rate_events import RateEvents
from storage.standing import StandingRepo

ALICE = "oAlice0000000000000000000001"


async def test_freeze_and_unfreeze_report_whether_anything_changed(db):
    accounts, ledger = Accounts(db), Ledger(db)
    await ledger.ensure_account(ALICE, trial_credits=10)
    assert await accounts.freeze(ALICE) is True
    assert await accounts.freeze(ALICE) is False
    assert (await ledger.account(ALICE)).frozen
    assert await accounts.unfreeze(ALICE) is True
    assert not (await ledger.account(ALICE)).frozen


async def test_freezing_someone_who_never_wrote_keeps_their_trial_for_the_first_message(db):
    accounts, ledger = Accounts(db), Ledger(db)
    assert await accounts.freeze(ALICE) is True
    account = await ledger.ensure_account(ALICE, trial_credits=10)
    assert account.frozen and account.balance == 10


async def test_set_tier_changes_the_tier_and_refuses_an_empty_one(db):
    accounts, ledger = Accounts(db), Ledger(db)
    assert await accounts.set_tier(ALICE, "pro") is True
    assert await accounts.set_tier(ALICE, "pro") is False
    assert (await ledger.ensure_account(ALICE, 0)).tier == "pro"
    with pytest.raises(ValueError):
        await accounts.set_tier(ALICE, " ")


async def test_the_whitelist_adds_lists_and_removes(db):
    accounts = Accounts(db, clock=lambda: 5.0)
    assert await accounts.whitelist_add(ALICE, "the owner") is True
    assert await accounts.whitelist_add(ALICE, "again") is False
    assert (await StandingRepo(db).of(ALICE)).whitelisted
    assert [(e.openid, e.note, e.added_at) for e in await accounts.whitelist()] == [(ALICE, "the owner", 5.0)]
    assert await accounts.whitelist_remove(ALICE) is True
    assert await accounts.whitelist_remove(ALICE) is False
    assert not (await StandingRepo(db).of(ALICE)).whitelisted


async def test_two_processes_share_one_rate_limit(tmp_path: Path, open_database):
    path = tmp_path / "rate.db"
    async with open_database() as one, open_database() as two:
        a, b = RateEvents(one), RateEvents(two)
        admitted = await asyncio.gather(*(r.admit(ALICE, 6, 60.0, 1000.0 + i * 0.01)
                                          for i in range(10) for r in (a, b)))
        assert admitted.count(True) == 6
        # Refused questions are not counted: once the window has passed, the user is back.
        assert await a.admit(ALICE, 6, 60.0, 1059.0) is False
        assert await b.admit(ALICE, 6, 60.0, 1061.0) is True


async def test_pruning_drops_only_old_events(db):
    events = RateEvents(db)
    for t in (10.0, 20.0, 30.0):
        assert await events.admit(ALICE, 10, 60.0, t)
    assert await events.prune(before=25.0) == 2
    assert await events.prune(before=25.0) == 0


async def test_a_senders_standing_is_read_in_one_go(db):
    standing = StandingRepo(db)
    nobody = await standing.of(ALICE)
    assert (nobody.account, nobody.plan, nobody.whitelisted) == (None, None, False)
    # an account the owner froze before the first message has had no trial yet: not taken as opened
    await Accounts(db).freeze(ALICE)
    assert (await standing.of(ALICE)).account is None
    opened = await Ledger(db).ensure_account(ALICE, trial_credits=10)
    await Accounts(db).whitelist_add(ALICE, "friend")
    async with db.transaction() as conn:
        await grant_plan(conn, "order-1", ALICE, "pro", 30, 86400.0, 1000.0)
    seen = await standing.of(ALICE)
    assert seen.account == opened and seen.account.frozen
    assert (seen.plan.tier, seen.plan.ends_at) == ("pro", 1000.0 + 30 * 86400.0)
    assert seen.whitelisted is True
    assert (await standing.of("oSomebodyElse0000000000000001")).whitelisted is False


async def test_a_delivery_asked_for_its_senders_standing_carries_it(db):
    # On PostgreSQL read in the delivery's round trip, on SQLite beside it: the same standing either way.
    inbound = InboundRepo(db)
    first = await inbound.receive("m1", ALICE, "text", 10.0, with_standing=True)
    assert first.first and (first.standing.account, first.standing.plan, first.standing.whitelisted) == (
        None, None, False)
    assert (await inbound.receive("m2", ALICE, "text", 11.0)).standing is None  # not asked: not read
    opened = await Ledger(db).ensure_account(ALICE, trial_credits=10)
    await Accounts(db).whitelist_add(ALICE, "friend")
    async with db.transaction() as conn:
        await grant_plan(conn, "order-1", ALICE, "pro", 30, 86400.0, 1000.0)
    retry = await inbound.receive("m1", ALICE, "text", 12.0, with_standing=True)
    assert not retry.first and retry.deliveries == 2
    assert retry.standing == await StandingRepo(db).of(ALICE)
    assert retry.standing.account == opened and retry.standing.plan.tier == "pro" and retry.standing.whitelisted
