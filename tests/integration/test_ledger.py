"""The credits ledger on a real SQLite file: exactly-once charging under concurrency, retries and restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.integration.conftest import INTEGRITY_ERRORS

from storage.db import Database
from storage.ledger import InsufficientCredits, Ledger, apply_entry

ALICE = "oAlice0000000000000000000001"
BOB = "oBob000000000000000000000002"


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(db: Database, clock: Clock) -> Ledger:
    return Ledger(db, clock)


async def sums(db: Database, openid: str) -> tuple[int, int]:
    row = await db.fetchone("SELECT COALESCE(SUM(amount), 0) AS a, COALESCE(SUM(daily_amount), 0) AS d"
                            " FROM ledger WHERE openid = ?", (openid,))
    assert row is not None
    return row["a"], row["d"]


async def test_fifty_concurrent_reserves_with_ten_credits_succeed_exactly_ten_times(db, ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    results = await asyncio.gather(*(ledger.reserve(ALICE, f"gen-{i}", 1) for i in range(50)))
    assert results.count(True) == 10
    account = await ledger.account(ALICE)
    assert account is not None and account.balance == 0 and account.daily == 0
    assert await sums(db, ALICE) == (0, 0)
    assert await ledger.check_invariant() == []
    kinds = [e.kind for e in await ledger.history(ALICE, limit=100)]
    assert kinds.count("reserve") == 10 and kinds.count("trial") == 1


async def test_a_retry_storm_on_one_gen_key_charges_once(db, ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    results = await asyncio.gather(*(ledger.reserve(ALICE, "msg-42", 3) for _ in range(30)))
    assert all(results)
    assert await ledger.balance(ALICE) == 7
    assert [e.kind for e in await ledger.history(ALICE)].count("reserve") == 1
    assert await ledger.check_invariant() == []


async def test_a_refused_reserve_charges_nothing_and_a_later_retry_may_succeed(ledger):
    await ledger.ensure_account(ALICE, trial_credits=2)
    assert await ledger.reserve(ALICE, "msg-1", 5) is False
    assert await ledger.balance(ALICE) == 2
    assert await ledger.reservation("msg-1") is None
    await ledger.apply(ALICE, "topup", 10, "order:1")
    assert await ledger.reserve(ALICE, "msg-1", 5) is True
    assert await ledger.balance(ALICE) == 7


async def test_refund_happens_exactly_once_and_restores_the_balance(ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    assert await ledger.reserve(ALICE, "msg-1", 4)
    results = await asyncio.gather(*(ledger.refund("msg-1") for _ in range(20)))
    assert results.count(True) == 1
    assert await ledger.settle("msg-1") is False
    assert await ledger.balance(ALICE) == 10
    reservation = await ledger.reservation("msg-1")
    assert reservation is not None and reservation.state == "refunded"
    assert await ledger.check_invariant() == []


async def test_settle_happens_exactly_once_and_then_refund_is_a_no_op(ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    assert await ledger.reserve(ALICE, "msg-1", 4)
    results = await asyncio.gather(*(ledger.settle("msg-1") for _ in range(10)),
                                   *(ledger.refund("msg-1") for _ in range(10)))
    assert results[:10].count(True) == 1 and not any(results[10:])
    assert await ledger.balance(ALICE) == 6
    assert [e.kind for e in await ledger.history(ALICE)] == ["settle", "reserve", "trial"]
    assert await ledger.check_invariant() == []


async def test_settle_or_refund_of_an_unknown_gen_key_is_a_no_op(ledger):
    assert await ledger.settle("nope") is False
    assert await ledger.refund("nope") is False


async def test_two_database_instances_on_one_file_racing_stay_exact(tmp_path: Path, open_database):
    path = tmp_path / "shared.db"
    async with open_database() as one, open_database() as two:
        a, b = Ledger(one), Ledger(two)
        await a.ensure_account(ALICE, trial_credits=20)
        # Both "processes" receive the same 40 questions (WeChat retries land anywhere).
        keys = [f"msg-{i}" for i in range(40)]
        results = await asyncio.gather(*(a.reserve(ALICE, k, 1) for k in keys),
                                       *(b.reserve(ALICE, k, 1) for k in keys))
        charged = [k for k, r1, r2 in zip(keys, results[:40], results[40:]) if r1 or r2]
        assert len(charged) == 20
        assert all(r1 == r2 for r1, r2 in zip(results[:40], results[40:]) if r1)
        assert await a.balance(ALICE) == 0
        # Each charged question is settled by one process while the other tries to refund it.
        outcomes = await asyncio.gather(*(a.settle(k) for k in charged), *(b.refund(k) for k in charged))
        settled, refunded = outcomes[:20].count(True), outcomes[20:].count(True)
        assert settled + refunded == 20
        assert await b.balance(ALICE) == refunded
        assert await a.check_invariant() == []


async def test_the_sweeper_refunds_a_stale_reservation_once_even_after_a_restart(tmp_path: Path, open_database):
    path, clock = tmp_path / "restart.db", Clock()
    async with open_database() as db:
        ledger = Ledger(db, clock)
        await ledger.ensure_account(ALICE, trial_credits=10)
        assert await ledger.reserve(ALICE, "crashed", 3)
        clock.t += 100
        assert await ledger.reserve(ALICE, "young", 2)
    # The process died between reserve and settle; a new one opens the same file.
    clock.t += 50
    async with open_database() as db:
        ledger = Ledger(db, clock)
        assert await ledger.sweep_stale(older_than=120) == 1
        assert await ledger.sweep_stale(older_than=120) == 0
        assert (await ledger.reservation("crashed")).state == "refunded"
        assert (await ledger.reservation("young")).state == "reserved"
        assert await ledger.balance(ALICE) == 8
        assert await ledger.settle("crashed") is False
        assert await ledger.check_invariant() == []


async def test_two_sweepers_at_once_refund_each_stale_reservation_once(tmp_path: Path, open_database):
    path, clock = tmp_path / "sweep.db", Clock()
    async with open_database() as one, open_database() as two:
        a, b = Ledger(one, clock), Ledger(two, clock)
        await a.ensure_account(ALICE, trial_credits=10)
        for i in range(5):
            assert await a.reserve(ALICE, f"gen-{i}", 2)
        clock.t += 1000
        counts = await asyncio.gather(a.sweep_stale(60), b.sweep_stale(60))
        assert sum(counts) == 5
        assert await a.balance(ALICE) == 10
        assert await a.check_invariant() == []


async def test_daily_credits_are_spent_first_and_do_not_accumulate(db, ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    assert await ledger.grant_daily(ALICE, 5, "2024-05-01") is True
    assert await ledger.grant_daily(ALICE, 5, "2024-05-01") is False
    assert await ledger.reserve(ALICE, "g1", 3)
    account = await ledger.account(ALICE)
    assert (account.daily, account.balance) == (2, 10)
    assert await ledger.grant_daily(ALICE, 5, "2024-05-02") is True
    account = await ledger.account(ALICE)
    assert (account.daily, account.balance, account.daily_day) == (5, 10, "2024-05-02")
    assert await ledger.grant_daily(ALICE, 5, "2024-04-30") is False
    assert await ledger.reserve(ALICE, "g2", 7)
    account = await ledger.account(ALICE)
    assert (account.daily, account.balance) == (0, 8)
    assert await sums(db, ALICE) == (8, 0)
    assert [e.kind for e in await ledger.history(ALICE)] == ["reserve", "daily", "expire", "reserve", "daily", "trial"]
    assert await ledger.check_invariant() == []


async def test_two_processes_opening_the_same_day_grant_it_once(tmp_path: Path, open_database):
    async with open_database() as one, open_database() as two:
        a, b = Ledger(one), Ledger(two)
        await a.ensure_account(ALICE, trial_credits=0)
        opened = await asyncio.gather(*(x.grant_daily(ALICE, 5, "2024-05-01") for x in (a, b) for _ in range(10)))
        assert opened.count(True) == 1
        assert (await a.account(ALICE)).daily == 5
        assert await a.check_invariant() == []


async def test_a_zero_daily_grant_still_expires_yesterdays_leftover(ledger):
    await ledger.ensure_account(ALICE, trial_credits=0)
    await ledger.grant_daily(ALICE, 3, "2024-05-01")
    assert await ledger.grant_daily(ALICE, 0, "2024-05-02") is True
    assert await ledger.balance(ALICE) == 0
    assert await ledger.check_invariant() == []


async def test_a_refund_returns_credits_to_the_buckets_they_came_from(ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    await ledger.grant_daily(ALICE, 2, "2024-05-01")
    assert await ledger.reserve(ALICE, "g1", 5)
    account = await ledger.account(ALICE)
    assert (account.daily, account.balance) == (0, 7)
    assert (await ledger.reservation("g1")).from_daily == 2
    assert await ledger.refund("g1")
    account = await ledger.account(ALICE)
    assert (account.daily, account.balance) == (2, 10)
    assert await ledger.check_invariant() == []


async def test_a_frozen_account_cannot_reserve_but_its_open_reservation_can_be_refunded(db, ledger):
    from storage.accounts import Accounts

    await ledger.ensure_account(ALICE, trial_credits=10)
    assert await ledger.reserve(ALICE, "g1", 2)
    assert await Accounts(db).freeze(ALICE)
    assert await ledger.reserve(ALICE, "g2", 2) is False
    assert await ledger.refund("g1")
    assert await ledger.balance(ALICE) == 10


async def test_reserving_without_an_account_or_under_another_users_key_is_refused(ledger):
    assert await ledger.reserve(ALICE, "g1", 1) is False
    await ledger.ensure_account(ALICE, trial_credits=10)
    await ledger.ensure_account(BOB, trial_credits=10)
    assert await ledger.reserve(ALICE, "g1", 1)
    assert await ledger.reserve(BOB, "g1", 1) is False
    assert await ledger.balance(BOB) == 10


async def test_the_trial_is_granted_once_and_never_retroactively(ledger):
    first = await ledger.ensure_account(ALICE, trial_credits=0)
    assert first.balance == 0 and first.status == "active" and first.tier == "free"
    again = await ledger.ensure_account(ALICE, trial_credits=10)
    assert again.balance == 0
    await asyncio.gather(*(ledger.ensure_account(BOB, trial_credits=10) for _ in range(10)))
    assert await ledger.balance(BOB) == 10


async def test_ledger_rows_cannot_be_updated_or_deleted(db, ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    for sql in ("UPDATE ledger SET amount = 1000", "DELETE FROM ledger"):
        with pytest.raises(INTEGRITY_ERRORS, match="append-only"):
            async with db.transaction() as conn:
                await conn.execute(sql)
    assert await ledger.balance(ALICE) == 10


async def test_apply_entry_credits_a_topup_once_inside_the_callers_transaction(db, ledger):
    async with db.transaction() as conn:
        assert await apply_entry(conn, ALICE, "topup", 600, "order:A1") is True
        assert await apply_entry(conn, ALICE, "topup", 600, "order:A1") is False
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            assert await apply_entry(conn, ALICE, "topup", 50, "order:A2") is True
            raise RuntimeError("the order update failed after the ledger row")
    assert await ledger.balance(ALICE) == 600
    # A topup that created the account leaves the trial for the first message.
    assert (await ledger.ensure_account(ALICE, trial_credits=10)).balance == 610
    assert await ledger.check_invariant() == []


async def test_an_admin_debit_below_zero_is_refused_and_writes_nothing(ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    with pytest.raises(InsufficientCredits):
        await ledger.apply(ALICE, "admin", -11, "audit:1")
    assert await ledger.apply(ALICE, "admin", -10, "audit:2") is True
    assert await ledger.balance(ALICE) == 0
    assert [e.ref for e in await ledger.history(ALICE)] == ["audit:2", "trial"]


async def test_apply_entry_refuses_kinds_that_belong_to_reservations(db):
    async with db.transaction() as conn:
        for kind, amount in (("reserve", -1), ("refund", 1), ("topup", 0), ("admin", 0)):
            with pytest.raises(ValueError):
                await apply_entry(conn, ALICE, kind, amount, "x")


async def test_check_invariant_reports_a_balance_changed_behind_the_ledgers_back(db, ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    assert await ledger.reserve(ALICE, "g1", 1)
    async with db.transaction() as conn:
        await conn.execute("UPDATE accounts SET balance = balance + 5 WHERE openid = ?", (ALICE,))
        await conn.execute("UPDATE reservations SET state = 'settled' WHERE gen_key = 'g1'")
    problems = await ledger.check_invariant()
    assert [(p.openid, p.subject, p.stored, p.ledger) for p in problems] == [
        (ALICE, "balance", 14, 9),
        # a reservation's rows are compared in milli-credits (token-priced settles give some back)
        (ALICE, "reservation g1", {"reserve": -1000, "settle": 0, "refund": None},
         {"reserve": -1000, "settle": None, "refund": None}),
    ]


async def test_history_lists_newest_first_page_by_page(ledger):
    await ledger.ensure_account(ALICE, trial_credits=10)
    for i in range(5):
        await ledger.apply(ALICE, "topup", i + 1, f"order:{i}")
    page = await ledger.history(ALICE, limit=2, offset=1)
    assert [e.ref for e in page] == ["order:3", "order:2"]
    assert [e.amount for e in page] == [4, 3]


_CHILD = """
import asyncio, sys
sys.path.insert(0, sys.argv[2])
from storage.db import Database
from storage.ledger import Ledger
from storage.postgres import PostgresDatabase

async def main():
    target = sys.argv[1]
    async with (PostgresDatabase(target) if target.startswith("postgresql://") else Database(target)) as db:
        ledger = Ledger(db)
        print("ready", flush=True)
        sys.stdin.readline()
        got = [k for k in [f"msg-{i}" for i in range(60)] if await ledger.reserve(sys.argv[3], k, 1)]
        settled = [k for k in got if await ledger.settle(k)]
        print(len(settled), flush=True)

asyncio.run(main())
"""


async def test_a_second_os_process_racing_on_the_same_keys_never_charges_or_refunds_twice(tmp_path: Path, open_database):
    import sys

    root = str(Path(__file__).resolve().parents[2])
    async with open_database() as db:
        path = db.url if db.engine == "postgresql" else db.path
        ledger = Ledger(db)
        await ledger.ensure_account(ALICE, trial_credits=30)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(path), root, ALICE,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert (await child.stdout.readline()).strip() == b"ready"
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        got = [k for k in [f"msg-{i}" for i in range(60)] if await ledger.reserve(ALICE, k, 1)]
        refunded = [k for k in got if await ledger.refund(k)]
        settled = int((await child.stdout.readline()).strip())
        assert await child.wait() == 0
        rows = await db.fetchall("SELECT state, COUNT(*) AS n FROM reservations GROUP BY state")
        states = {r["state"]: r["n"] for r in rows}
        assert (states.get("settled", 0), states.get("refunded", 0), states.get("reserved", 0)) == (
            settled, len(refunded), 0)
        # Refunds give credits back, so more than 30 questions may get a reservation in all; what was
        # settled is spent exactly once and everything else came back.
        assert await ledger.balance(ALICE) == 30 - settled
        assert await ledger.check_invariant() == []


async def test_settle_and_refund_can_join_the_transaction_that_finishes_the_answer(db, ledger):
    from storage.ledger import refund_entry, settle_entry

    await ledger.ensure_account(ALICE, trial_credits=10)
    assert await ledger.reserve(ALICE, "g1", 2) and await ledger.reserve(ALICE, "g2", 3)

    def finish_fails(conn):
        assert settle_entry(conn, "g1", 1.0) == 2
        raise RuntimeError("finishing the answer failed")

    with pytest.raises(RuntimeError):
        await db.write(finish_fails)
    assert (await ledger.reservation("g1")).state == "reserved"  # rolled back with the caller
    both = await db.write(lambda conn: (settle_entry(conn, "g1", 1.0), refund_entry(conn, "g2", 1.0),
                                        refund_entry(conn, "g1", 1.0)))
    assert both == (2, 3, None)
    assert await ledger.balance(ALICE) == 8
    assert await ledger.check_invariant() == []


async def test_steps_of_one_state_change_commit_together_or_not_at_all(db, ledger):
    # storage/steps.py: on PostgreSQL one pipelined transaction where every part is one statement,
    # a transaction on a thread where one is not (a token-priced settle reads before it writes)
    from storage.steps import Step, together

    await ledger.ensure_account(ALICE, trial_credits=10)
    for k, n in (("g1", 2), ("g2", 3), ("g3", 1)):
        assert await ledger.reserve(ALICE, k, n)
    moved = []
    ledger.on_moved = lambda op, amount: moved.append((op, amount))
    broken = "INSERT INTO ledger (openid, kind, ref, created_at) VALUES ('nobody', 'no such kind', 'x', 0)"
    failing = Step(db, lambda conn: conn.execute(broken), (broken, ()))
    for credits in (ledger.settle_step("g1"), ledger.settle_step("g1", 1500)):
        with pytest.raises(INTEGRITY_ERRORS):
            await together(credits, failing)
        assert (await ledger.reservation("g1")).state == "reserved"  # rolled back with the failing part
    assert moved == []  # nothing is reported for what did not commit
    assert await together(ledger.settle_step("g1"), ledger.refund_step("g2"), ledger.refund_step("g1")) == [2, 3, None]
    assert await together(ledger.settle_step("g3", 400), ledger.refund_step("g2")) == [1, None]
    assert moved == [("settled", 2), ("refunded", 3), ("settled", 0)]
    assert await ledger.balance(ALICE) == 7 and (await ledger.reservation("g3")).spent_milli == 400
    assert await ledger.check_invariant() == []


@pytest.mark.parametrize("spent_milli", [None, 1500], ids=["fixed-cost", "token-priced"])
async def test_an_answer_closes_with_its_credits_in_one_transaction(db, ledger, spent_milli):
    # the generation's close: one pipelined transaction on PostgreSQL for a fixed cost, a transaction on
    # a thread for a token-priced settle (it reads before it writes); either way the answer, its turns
    # and the credits move together
    from storage.answers import AnswerRepo, Draft
    from storage.inbound import InboundRepo
    from storage.steps import together

    answers = AnswerRepo(db)
    await ledger.ensure_account(ALICE, trial_credits=10)
    for key in ("q1", "q2"):
        await InboundRepo(db).receive(key, ALICE, "text", 1.0)
        assert await ledger.reserve(ALICE, key, 3)
    made = [await answers.create(Draft(openid=ALICE, msg_key=key, question="问", model="m", route="reply", now=1.0,
                                       deadline_at=60.0, holder="h", lease_until=30.0, asked_before=0.0, idle=600,
                                       max_turns=4)) for key in ("q1", "q2")]
    amount, closed = await together(ledger.settle_step("q1", spent_milli),
                                    answers.finish_step(made[0].answer.id, "h", "done", "答。", 2.0, ("问", "答。")))
    assert amount == 3 and closed is not None
    assert (await answers.get(made[0].answer.id)).status == "done"
    turns = await db.fetchall("SELECT role, content FROM turns WHERE conversation_id = ? ORDER BY id",
                              (made[0].answer.conversation_id,))
    assert [(t["role"], t["content"]) for t in turns] == [("user", "问"), ("assistant", "答。")]
    # a close whose holder lost the generation writes no answer; its credits part still commits (as
    # when the two were separate: the new holder's settle is then a no-op)
    amount, closed = await together(ledger.settle_step("q2", spent_milli),
                                    answers.finish_step(made[1].answer.id, "other", "done", "答。", 2.0, None))
    assert amount == 3 and closed is None
    assert (await answers.get(made[1].answer.id)).status == "generating"
    # 10 - 2 x 3 reserved; token-priced, each question spent 1.5 of its 3 (the halves carry into a whole)
    assert await ledger.balance(ALICE) == (4 if spent_milli is None else 7)
    assert await ledger.check_invariant() == []
