"""Token pricing on the real ledger: one reserve, one settle, the exact price, no drift, no overdraw."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from decimal import Decimal
from fractions import Fraction
from math import ceil

import pytest

from bot.economics.pricing import TokenPrice
from bot.providers.base import Usage
from storage.db import Database
from storage.ledger import Ledger, apply_entry
from tests.integration.conftest import INTEGRITY_ERRORS

ALICE = "oAlice0000000000000000000001"
PRICE = TokenPrice(Decimal("0.0015"), Decimal("0.002"))  # credits per 1,000 tokens


@pytest.fixture
def ledger(db: Database) -> Ledger:
    return Ledger(db, lambda: 1_700_000_000.0)


async def exact_value(ledger: Ledger, openid: str) -> int:
    account = await ledger.account(openid)
    assert account is not None
    return account.balance_exact + account.daily_exact


async def rows_of(db: Database, gen_key: str) -> list[sqlite3.Row]:
    return await db.fetchall("SELECT kind, amount, daily_amount, amount_milli, daily_milli FROM ledger WHERE ref = ?"
                             " ORDER BY id", (gen_key,))


def milli_of(row: sqlite3.Row) -> int:
    return (row["amount"] + row["daily_amount"]) * 1000 + row["amount_milli"] + row["daily_milli"]


def test_the_price_is_the_exact_sum_rounded_up_once_per_answer() -> None:
    # 1234 * 0.0015 + 567 * 0.002 = 1.851 + 1.134 = 2.985 milli-credits -> 3
    assert PRICE.milli(Usage(1234, 567)) == 3
    assert TokenPrice(Decimal("1.5"), Decimal("2")).milli(Usage(1000, 1000)) == 3500  # 3.5 credits exactly
    assert TokenPrice(Decimal("0.1"), Decimal("0.1"), Decimal("0.25")).milli(Usage(1, 1)) == 250  # the floor
    assert TokenPrice(Decimal("0.000001"), Decimal(0)).milli(Usage(1, 0)) == 1  # never free when priced
    assert PRICE.bound(3000, 2048) == 1  # 4.5 + 4.096 milli-credits -> one whole credit reserved


async def test_a_thousand_answers_charge_exactly_their_prices(db: Database, ledger: Ledger) -> None:
    price = TokenPrice(Decimal("0.37"), Decimal("1.13"))
    await ledger.ensure_account(ALICE, trial_credits=0)
    assert await ledger.apply(ALICE, "topup", 100_000, "order-1")
    before = await exact_value(ledger, ALICE)
    rng = random.Random(18)
    expected = 0
    exact = Fraction(0)
    for i in range(1000):
        usage = Usage(rng.randint(1, 3000), rng.randint(0, 2048))
        bound = price.bound(3000, 2048)
        assert await ledger.reserve(ALICE, f"g{i}", bound)
        spent = price.milli(usage)
        assert await ledger.settle(f"g{i}", spent)
        expected += spent
        exact += usage.prompt_tokens * Fraction("0.37") + usage.completion_tokens * Fraction("1.13")
    assert before - await exact_value(ledger, ALICE) == expected
    # the only rounding is the documented one: up to the milli-credit, once per answer
    assert 0 <= expected - exact < 1000
    assert await ledger.check_invariant() == []
    kinds: dict[str, list[str]] = {}
    for r in await db.fetchall("SELECT ref, kind FROM ledger WHERE ref LIKE 'g%' ORDER BY id"):
        kinds.setdefault(r["ref"], []).append(r["kind"])
    assert len(kinds) == 1000 and {tuple(k) for k in kinds.values()} == {("reserve", "settle")}
    net = await db.fetchone("SELECT SUM((amount + daily_amount) * 1000 + amount_milli + daily_milli) AS s"
                            " FROM ledger WHERE ref LIKE 'g%'")
    assert net is not None and -net["s"] == expected


async def test_the_settle_gives_back_to_daily_what_daily_paid_beyond_the_price(db: Database, ledger: Ledger) -> None:
    await ledger.ensure_account(ALICE, trial_credits=5)
    assert await ledger.grant_daily(ALICE, 2, "2026-12-04")
    assert await ledger.reserve(ALICE, "g", 4)  # 2 from daily, 2 from the balance
    assert await ledger.settle("g", 2_500)  # daily pays 2, the balance 0.5
    account = await ledger.account(ALICE)
    assert account is not None
    assert (account.daily_exact, account.balance_exact) == (0, 4_500)
    assert [milli_of(r) for r in await rows_of(db, "g")] == [-4_000, 1_500]
    reservation = await ledger.reservation("g")
    assert reservation is not None and (reservation.charged_milli, reservation.estimated) == (2_500, False)
    assert await ledger.check_invariant() == []


async def test_milli_credits_carry_into_whole_ones_and_the_day_expires_its_own(db: Database, ledger: Ledger) -> None:
    await ledger.ensure_account(ALICE, trial_credits=0)
    assert await ledger.grant_daily(ALICE, 3, "2026-12-04")
    for i in range(3):  # each answer: 1 daily credit reserved, 0.4 spent, 0.6 back
        assert await ledger.reserve(ALICE, f"g{i}", 1)
        assert await ledger.settle(f"g{i}", 400)
    account = await ledger.account(ALICE)
    assert account is not None and (account.daily, account.daily_milli) == (1, 800)
    assert await ledger.grant_daily(ALICE, 3, "2026-12-05")  # yesterday's 1.8 expire, whole and milli
    account = await ledger.account(ALICE)
    assert account is not None and (account.daily, account.daily_milli, account.balance_exact) == (3, 0, 0)
    assert await ledger.check_invariant() == []


async def test_a_price_above_the_reservation_is_charged_the_reservation_only(db: Database, ledger: Ledger) -> None:
    await ledger.ensure_account(ALICE, trial_credits=3)
    assert await ledger.reserve(ALICE, "g", 2)
    assert await ledger.settle("g", 9_999, estimated=True)
    assert not await ledger.settle("g", 1)  # once
    reservation = await ledger.reservation("g")
    assert reservation is not None and (reservation.charged_milli, reservation.estimated) == (2_000, True)
    assert await exact_value(ledger, ALICE) == 1_000
    assert await ledger.check_invariant() == []


async def test_the_database_refuses_milli_credits_on_other_kinds(db: Database, ledger: Ledger) -> None:
    await ledger.ensure_account(ALICE, trial_credits=3)
    with pytest.raises(INTEGRITY_ERRORS):
        await db.write(lambda conn: conn.execute(
            "INSERT INTO ledger (openid, kind, amount, amount_milli, ref, created_at) VALUES (?, 'topup', 1, 5, 'x', 0)",
            (ALICE,)))
    with pytest.raises(INTEGRITY_ERRORS):
        await db.write(lambda conn: conn.execute(
            "UPDATE accounts SET balance_milli = 1000 WHERE openid = ?", (ALICE,)))


async def test_fifty_concurrent_token_priced_answers_never_overdraw(db: Database, ledger: Ledger) -> None:
    await ledger.ensure_account(ALICE, trial_credits=0)
    async with db.transaction() as conn:
        assert await apply_entry(conn, ALICE, "topup", 10, "order-1")
    bound = TokenPrice(Decimal("0.5"), Decimal("1")).bound(1000, 1000)  # 1.5 credits -> 2 reserved
    results = await asyncio.gather(*(ledger.reserve(ALICE, f"g{i}", bound) for i in range(50)))
    assert sum(results) == 5
    account = await ledger.account(ALICE)
    assert account is not None and account.balance == 0
    spent = await asyncio.gather(*(ledger.settle(f"g{i}", 1_234) for i, ok in enumerate(results) if ok))
    assert all(spent)
    assert await exact_value(ledger, ALICE) == 10_000 - 5 * 1_234
    assert await ledger.check_invariant() == []


async def test_migration_0022_keeps_every_ledger_row_and_the_books_balance(tmp_path) -> None:
    """A database from before token pricing (migrations up to 0020, with answers reserved, settled and
    refunded) migrates forward with its rows and ids, no milli-credits, and the ledger still append-only."""
    from importlib import resources

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at REAL NOT NULL)")
    for entry in sorted(resources.files("storage.migrations").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql") and int(entry.name[:4]) <= 20:
            conn.executescript(entry.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (int(entry.name[:4]), entry.name))
    conn.executescript("""
        INSERT INTO accounts (openid, balance, daily, daily_day, created_at) VALUES ('o_old', 8, 2, '2026-12-03', 0);
        INSERT INTO ledger (id, openid, kind, amount, ref, created_at) VALUES (3, 'o_old', 'trial', 10, 'trial', 0);
        INSERT INTO ledger (id, openid, kind, daily_amount, ref, created_at) VALUES (4, 'o_old', 'daily', 3, '2026-12-03', 0);
        INSERT INTO ledger (id, openid, kind, amount, daily_amount, ref, created_at) VALUES (5, 'o_old', 'reserve', -2, -1, 'g1', 0);
        INSERT INTO ledger (id, openid, kind, ref, created_at) VALUES (6, 'o_old', 'settle', 'g1', 0);
        INSERT INTO ledger (id, openid, kind, amount, ref, created_at) VALUES (8, 'o_old', 'reserve', -1, 'g2', 0);
        INSERT INTO ledger (id, openid, kind, amount, ref, created_at) VALUES (9, 'o_old', 'refund', 1, 'g2', 0);
        INSERT INTO reservations (gen_key, openid, amount, from_daily, state, created_at) VALUES ('g1', 'o_old', 3, 1, 'settled', 0);
        INSERT INTO reservations (gen_key, openid, amount, from_daily, state, created_at) VALUES ('g2', 'o_old', 1, 0, 'refunded', 0);
    """)
    conn.close()
    async with Database(path) as db:
        rows = await db.fetchall("SELECT id, kind, amount, daily_amount, amount_milli, daily_milli FROM ledger ORDER BY id")
        assert [tuple(r) for r in rows] == [(3, "trial", 10, 0, 0, 0), (4, "daily", 0, 3, 0, 0),
                                            (5, "reserve", -2, -1, 0, 0), (6, "settle", 0, 0, 0, 0),
                                            (8, "reserve", -1, 0, 0, 0), (9, "refund", 1, 0, 0, 0)]
        ledger = Ledger(db)
        assert await ledger.check_invariant() == []
        reservation = await ledger.reservation("g1")
        assert reservation is not None and (reservation.charged_milli, reservation.estimated) == (3_000, False)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await db.write(lambda c: c.execute("UPDATE ledger SET amount_milli = 1 WHERE id = 6"))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await db.write(lambda c: c.execute("DELETE FROM ledger WHERE id = 6"))
