"""Several hosts on one database, released together against the same rows: each state change
happens exactly once. Every test runs on SQLite and on PostgreSQL (READ COMMITTED), where each of
these raced before issue 14 (measured in shared/design/postgres.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from storage import answers as answers_module
from storage.answers import AnswerRepo, Draft, Taken
from storage.conversations import ConversationRepo, current_conversation
from storage.db import Database
from storage.inbound import InboundRepo
from storage.ledger import Ledger
from storage.orders import OrderRepo, Payment
from storage.products import ProductRepo
from storage.rate_events import RateEvents
from tests.integration.conftest import Opener
from tests.paykit import ledger_apply_entry

HOSTS = 4
USER = "o_race_user_000000000000001"
SECOND = "o_race_user_000000000000002"


@asynccontextmanager
async def hosts(open_database: Opener, n: int = HOSTS) -> AsyncIterator[list[Database]]:
    """`n` handles on the test's database, each with connections of its own (as n hosts would)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_database()) for _ in range(n)]


async def together(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Start every call, then release them at once (a barrier), and gather what each returned."""
    gate = asyncio.Event()

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        await gate.wait()
        return await call()

    tasks = [asyncio.create_task(one(c)) for c in calls]
    await asyncio.sleep(0)
    gate.set()
    return await asyncio.gather(*tasks)


async def _user(db: Database, openid: str = USER) -> None:
    await db.write(lambda conn: conn.execute(
        "INSERT INTO users (openid, first_seen, last_seen) VALUES (?, 0, 0) ON CONFLICT (openid) DO NOTHING",
        (openid,)))


async def _question(repo: AnswerRepo, key: str, now: float, lease_until: float, route: str = "reply") -> int:
    q = await repo.create(Draft(openid=USER, msg_key=key, question="q", model="m", route=route, now=now,
                                deadline_at=now + 60, holder="dead-host", lease_until=lease_until, asked_before=0,
                                idle=3600, max_turns=4))
    return q.answer.id


async def test_stale_generations_are_taken_over_once_however_many_hosts_look(open_database):
    now = time.time()
    async with hosts(open_database) as dbs:
        await _user(dbs[0])
        repo = AnswerRepo(dbs[0])
        ids = [await _question(repo, f"stale-{i}", now - 100, lease_until=now - 10) for i in range(50)]
        batches = await together([lambda d=d, h=h: AnswerRepo(d).claim_stale(now, f"host-{h}", now + 60)
                                  for h, d in enumerate(dbs) for _ in range(3)])
    claimed = [a.id for batch in batches for a in batch]
    assert sorted(claimed) == ids
    assert all(a.attempts == 2 for batch in batches for a in batch)


async def test_unpushed_answers_are_claimed_by_one_host(open_database):
    now = time.time()
    async with hosts(open_database) as dbs:
        await _user(dbs[0])
        repo = AnswerRepo(dbs[0])
        ids = []
        for i in range(20):
            answer_id = await _question(repo, f"push-{i}", now, lease_until=now + 60, route="push")
            assert await repo.finish(answer_id, "dead-host", "done", "an answer to push", now, None)
            ids.append(answer_id)
        batches = await together([lambda d=d, h=h: AnswerRepo(d).claim_push(now, f"host-{h}", now + 60)
                                  for h, d in enumerate(dbs) for _ in range(3)])
    assert sorted(a.id for batch in batches for a in batch) == ids


@pytest.mark.parametrize("optimistic", ["read, plan, store if unchanged", "plan under the answer's lock"])
async def test_deliveries_on_several_hosts_hand_out_each_part_of_an_answer_once(open_database, optimistic,
                                                                                monkeypatch):
    # PostgreSQL plans from a read and stores the reply only if the answer is still the version read,
    # and plans under the row lock after a few tries: both must hand each part out once
    if optimistic.startswith("plan under"):
        monkeypatch.setattr(answers_module, "_OPTIMISTIC_TRIES", 0)
    now = time.time()
    text = "".join(chr(ord("a") + i) * 10 for i in range(16))
    async with hosts(open_database) as dbs:
        await _user(dbs[0])
        repo = AnswerRepo(dbs[0])
        answer_id = await _question(repo, "long", now, lease_until=now + 60)
        assert await repo.finish(answer_id, "dead-host", "done", text, now, None)
        keys = [f"fetch-{i}" for i in range(16)]
        for k in keys:
            await dbs[0].write(lambda conn, k=k: conn.execute(
                "INSERT INTO inbound (msg_key, openid, kind, received_at) VALUES (?, ?, 'text', ?)", (k, USER, now)))

        def plan(answer, token):  # the next ten characters
            start = answer.delivered_upto
            return Taken(answer.text[start:start + 10], start + 10, start + 10 < len(answer.text))

        took = await together([lambda d=dbs[i % HOSTS], k=k: AnswerRepo(d).take_reply(k, answer_id, plan, now)
                               for i, k in enumerate(keys)])
        assert sorted(t.reply for t in took) == [chr(ord("a") + i) * 10 for i in range(16)]
        # each call says what it planned and stored: every part once, as it was handed out
        assert sorted(t.planned[1].upto for t in took) == list(range(10, 170, 10))
        assert all(t.planned[1].reply == t.reply for t in took)
        assert (await repo.get(answer_id)).delivered_upto == 160


async def test_questions_asked_on_several_hosts_at_once_make_one_answer_each_in_one_conversation(open_database):
    # each WeChat message arrives on every host (retries), and the follower asks several at once
    now = time.time()
    keys = [f"q-{i}" for i in range(6)]
    async with hosts(open_database) as dbs:
        await _user(dbs[0])
        for k in keys:
            await dbs[0].write(lambda conn, k=k: conn.execute(
                "INSERT INTO inbound (msg_key, openid, kind, received_at) VALUES (?, ?, 'text', ?)", (k, USER, now)))
        made = await together([lambda d=d, k=k: AnswerRepo(d).create(
            Draft(openid=USER, msg_key=k, question=f"问题 {k}", model="m", route="reply", now=now,
                  deadline_at=now + 15, holder=f"host-{h}", lease_until=now + 30, asked_before=0, idle=3600,
                  max_turns=4, reply_from_new=True, owed_note="an older answer first"))
            for h, d in enumerate(dbs) for k in keys])
        for k in keys:
            mine = [q for q in made if q.answer.msg_key == k]
            assert len(mine) == HOSTS and sum(q.created for q in mine) == 1
            assert len({q.answer.id for q in mine}) == 1
        assert len({q.answer.conversation_id for q in made}) == 1
        rows = await dbs[0].fetchall("SELECT id FROM conversations WHERE openid = ? AND closed = 0", (USER,))
        assert [r["id"] for r in rows] == [made[0].answer.conversation_id]
        # each message points at the answer its reply comes from (nothing is owed: its own)
        targets = await dbs[0].fetchall("SELECT i.answer_id, i.note, a.msg_key FROM inbound i"
                                        " JOIN answers a ON a.id = i.answer_id ORDER BY i.msg_key")
        assert [(r["msg_key"], r["note"]) for r in targets] == [(k, None) for k in keys]
        # a question while an older answer is owed: its message points at the older one, with the note
        await dbs[1].write(lambda conn: conn.execute(
            "INSERT INTO inbound (msg_key, openid, kind, received_at) VALUES ('q-late', ?, 'text', ?)", (USER, now)))
        late = await AnswerRepo(dbs[1]).create(
            Draft(openid=USER, msg_key="q-late", question="再问", model="m", route="reply", now=now + 1,
                  deadline_at=now + 16, holder="host-1", lease_until=now + 31, asked_before=now + 1, idle=3600,
                  max_turns=4, reply_from_new=True, owed_note="an older answer first"))
        assert late.owed_id == min(q.answer.id for q in made)
        row = await dbs[0].fetchone("SELECT answer_id, note FROM inbound WHERE msg_key = 'q-late'")
        assert (row["answer_id"], row["note"]) == (late.owed_id, "an older answer first")
        # the answers are read back as they were stored (on PostgreSQL they come back as JSON)
        stored = await AnswerRepo(dbs[0]).get(made[0].answer.id)
        created = next(q.answer for q in made if q.created and q.answer.id == stored.id)
        assert stored == created
        assert isinstance(stored.created_at, float) and stored.created_at == now


async def test_a_follower_has_one_open_conversation_whichever_hosts_open_it(open_database):
    now = time.time()
    async with hosts(open_database) as dbs:
        await _user(dbs[0])

        def open_one(conn):
            return current_conversation(conn, USER, now, idle=3600)

        opened = await together([lambda d=d: d.write(open_one) for d in dbs for _ in range(5)])
        assert len(set(opened)) == 1
        # an idle conversation is replaced by one new one, and reopening races leave one open
        later = now + 7200
        fresh = await together([lambda d=d: d.write(lambda conn: current_conversation(conn, USER, later, 3600))
                                for d in dbs for _ in range(5)])
        assert len(set(fresh)) == 1 and fresh[0] != opened[0]
        await together([lambda d=d, c=c: ConversationRepo(d).reopen(USER, c, later)
                        for d in dbs for c in (opened[0], fresh[0])])
        rows = await dbs[0].fetchall("SELECT id FROM conversations WHERE openid = ? AND closed = 0", (USER,))
        assert len(rows) == 1


async def test_the_shared_rate_limit_admits_exactly_the_limit(open_database):
    now = time.time()
    async with hosts(open_database) as dbs:
        admitted = await together([lambda d=d: RateEvents(d).admit(USER, 5, 60, now) for d in dbs for _ in range(10)])
    assert admitted.count(True) == 5


async def test_reserves_refunds_and_a_new_day_on_several_hosts_keep_the_books(open_database):
    async with hosts(open_database) as dbs:
        ledgers = [Ledger(d) for d in dbs]
        await ledgers[0].ensure_account(USER, trial_credits=30)
        await ledgers[0].ensure_account(SECOND, trial_credits=3)
        assert await ledgers[0].grant_daily(USER, 7, "2024-05-01")
        for i in range(10):
            assert await ledgers[0].reserve(USER, f"old-{i}", 2)
        calls = [lambda l=ledgers[i % HOSTS], i=i: l.reserve(USER, f"new-{i}", 3) for i in range(20)]
        calls += [lambda l=ledgers[i % HOSTS], i=i: l.refund(f"old-{i}") for i in range(10)]
        calls += [lambda l=l: l.grant_daily(USER, 5, "2024-05-02") for l in ledgers]
        # the same key on every host: charged once, and every host hears "reserved" (from an account of
        # its own: USER's credits may run out mid-race, and then a reserve is rightly refused)
        calls += [lambda l=l: l.reserve(SECOND, "same-key", 1) for l in ledgers]
        results = await together(calls)
        assert results[30:34].count(True) == 1
        assert all(results[34:])
        assert await ledgers[0].check_invariant() == []
        rows = await dbs[0].fetchall("SELECT COUNT(*) AS n FROM reservations WHERE gen_key = 'same-key'")
        assert rows[0]["n"] == 1
        assert await ledgers[0].balance(SECOND) == 2  # charged once


async def test_settle_and_refund_of_one_order_on_two_hosts_never_overwrite_each_other(open_database):
    now = time.time()
    async with hosts(open_database, 2) as dbs:
        a, b = (OrderRepo(d, ledger_apply_entry()) for d in dbs)
        await a.open_order("MP000000000001", USER, "p6", "native", 600, 600, now, now + 1800, now + 300)
        await a.set_created("MP000000000001", now, code_url="weixin://x")
        pay = Payment("MP000000000001", "4200000001", 600)
        assert (await a.settle(pay, "notify", now)).outcome == "credited"
        # a repeated notify on one host, the owner's refund on the other
        results = await together([lambda: a.settle(pay, "notify", now), lambda: b.begin_refund(
            "MP000000000001", "RF000000000001", "asked", now)] * 3)
        assert (await a.get("MP000000000001")).state == "refunding"
        assert all(r.outcome == "duplicate" for r in results[0::2])
        assert len({r["out_refund_no"] for r in results[1::2]}) == 1
        assert await Ledger(dbs[0]).check_invariant() == []


async def test_opening_an_order_on_several_hosts_at_once_leaves_one_reusable(open_database):
    now = time.time()
    async with hosts(open_database) as dbs:
        results = await together([lambda d=d, i=i: OrderRepo(d, ledger_apply_entry()).open_order(
            f"MP0000000001{i:02d}", USER, "p6", "native", 600, 600, now, now + 1800, now + 300)
            for i, d in enumerate(dbs * 3)])
        assert all(order.state == "creating" for order, _ in results)
        rows = await dbs[0].fetchall("SELECT COUNT(*) AS n FROM orders WHERE reusable = 1")
        assert rows[0]["n"] == 1


async def test_products_seeded_by_hosts_starting_together_get_distinct_positions(open_database):
    from bot.config import ProductConfig

    config = [ProductConfig(id=f"p{i}", name=f"{i} 积分", credits=i, price_fen=i) for i in range(1, 6)]
    async with hosts(open_database) as dbs:
        added = await together([lambda d=d: ProductRepo(d).seed(config) for d in dbs])
        assert sorted(p for one in added for p in one) == [p.id for p in config]
        positions = [r["position"] for r in await dbs[0].fetchall("SELECT position FROM products")]
        assert len(set(positions)) == len(positions)


async def test_a_delivery_waiting_on_another_hosts_answer_wakes_when_it_is_saved(open_database):
    now = time.time()
    async with hosts(open_database, 2) as (here, there):
        await _user(here)
        answer_id = await _question(AnswerRepo(there), "woken", now, lease_until=now + 60)
        waiting = asyncio.create_task(AnswerRepo(here).changed(answer_id, 5.0))
        await asyncio.sleep(0.5)  # the wait (and on PostgreSQL its LISTEN) is in place
        started = time.perf_counter()
        assert await AnswerRepo(there).save_progress(answer_id, "dead-host", "第一句。", now + 60, now)
        await waiting
        woke_after = [time.perf_counter() - started]
        # and again when the answer is finished there
        waiting = asyncio.create_task(AnswerRepo(here).changed(answer_id, 5.0))
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        assert await AnswerRepo(there).finish(answer_id, "dead-host", "done", "第一句。第二句。", time.time(), None)
        await waiting
        woke_after.append(time.perf_counter() - started)
    if here.engine == "postgresql":
        assert max(woke_after) < 1.0  # a NOTIFY after the commit, not the 5 s timeout
    else:
        assert min(woke_after) > 4.0  # SQLite's other processes poll: the wait runs its course


async def test_waiting_browsers_from_one_address_stay_within_its_limit_on_several_hosts(open_database):
    import itertools

    from storage.login import LoginLinkRepo

    now, codes = time.time(), itertools.count(100000)
    async with hosts(open_database) as dbs:
        started = await together([
            lambda d=d, i=i: LoginLinkRepo(d).start_wait(bytes([i]) * 32, lambda: str(next(codes)), "203.0.113.7",
                                                         now, 300, limit=(5, now - 60))
            for i, d in enumerate(dbs * 5)])
    assert sum(w is not None for w in started) == 5


async def test_an_answer_closed_by_several_hosts_at_once_is_closed_and_charged_once(open_database):
    # the close is one transaction of two conditional statements (storage/steps.py): whichever host's
    # runs first closes and settles; the others find the answer final and the reservation settled
    from storage import steps

    now = time.time()
    async with hosts(open_database) as dbs:
        await _user(dbs[0])
        await Ledger(dbs[0]).ensure_account(USER, trial_credits=10)
        answer_id = await _question(AnswerRepo(dbs[0]), "closed-once", now, lease_until=now + 60)
        assert await Ledger(dbs[0]).reserve(USER, "closed-once", 3)
        results = await together([
            lambda d=d: steps.together(Ledger(d).settle_step("closed-once"),
                                       AnswerRepo(d).finish_step(answer_id, "dead-host", "done", "答。", now,
                                                                 ("q", "答。")))
            for d in dbs])
        assert sorted(amount or 0 for amount, _ in results) == [0] * (len(dbs) - 1) + [3]
        assert sum(closed is not None for _, closed in results) == 1
        turns = await dbs[0].fetchone("SELECT COUNT(*) AS n FROM turns")
        assert turns["n"] == 2
        assert await Ledger(dbs[0]).balance(USER) == 7
        assert await Ledger(dbs[0]).check_invariant() == []


async def test_a_message_whose_decider_died_is_taken_over_by_exactly_one_retry(open_database):
    # Its first delivery recorded it and died deciding; retries land on four hosts at once.
    async with hosts(open_database) as dbs:
        first = await InboundRepo(dbs[0]).receive("m_died", USER, "text", 100.0, deciding_until=102.0)
        assert first.first and not first.decided and first.deciding_until == 102.0
        # while the lease holds, nobody takes over, and a renewal keeps it
        assert not await InboundRepo(dbs[1]).claim_deciding("m_died", 101.0, 103.0)
        await InboundRepo(dbs[0]).renew_deciding("m_died", 104.0)
        assert not await InboundRepo(dbs[1]).claim_deciding("m_died", 103.0, 105.0)
        # run out: one claim of many wins, and its lease is the new one
        claimed = await together([lambda d=d: InboundRepo(d).claim_deciding("m_died", 105.0, 107.0) for d in dbs * 3])
        assert claimed.count(True) == 1
        assert (await InboundRepo(dbs[2]).get("m_died")).deciding_until == 107.0
        # once decided, a run-out lease is nothing to take over
        await InboundRepo(dbs[3]).set_reply("m_died", "好的", 106.0)
        assert not await InboundRepo(dbs[1]).claim_deciding("m_died", 200.0, 202.0)
        # a message with nothing to decide (its reply known at once) has no lease
        instant = await InboundRepo(dbs[0]).receive("m_help", USER, "text", 100.0, "帮助的回复")
        assert instant.decided and instant.deciding_until is None
        assert not await InboundRepo(dbs[1]).claim_deciding("m_help", 200.0, 202.0)
