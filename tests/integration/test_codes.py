"""Redemption codes on a real SQLite file: one credit per code however many race, wrong guesses limited."""

from __future__ import annotations

import asyncio
import sqlite3
from importlib import resources
from pathlib import Path

from bot.economics.codes import ALPHABET, LENGTH, code_hash, hash_of, new_code, normalise
from storage.codes import CodeRepo
from storage.db import Database
from storage.ledger import Ledger


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _batch(repo: CodeRepo, n: int = 1, credits: int = 50, expires_at: float | None = None) -> list[str]:
    codes = [new_code() for _ in range(n)]
    await repo.add_batch("b1", credits, [hash_of(c) for c in codes], expires_at)  # type: ignore[misc]
    return codes


async def test_fifty_followers_racing_for_one_code_credit_it_once(db):
    repo, ledger = CodeRepo(db), Ledger(db)
    [code] = await _batch(repo)
    results = await asyncio.gather(*(repo.redeem(f"o_racer{i:02d}", hash_of(code), limit=5, window=60)
                                     for i in range(50)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count("redeemed") == 1 and outcomes.count("used") == 49
    winner = f"o_racer{outcomes.index('redeemed'):02d}"
    assert await ledger.balance(winner) == 50
    rows = await db.fetchall("SELECT openid, amount FROM ledger WHERE kind = 'redeem'")
    assert [(r["openid"], r["amount"]) for r in rows] == [(winner, 50)]
    assert await ledger.check_invariant() == []


async def test_a_follower_redeeming_the_same_code_again_is_told_so_and_credited_once(db):
    repo, ledger = CodeRepo(db), Ledger(db)
    [code] = await _batch(repo, credits=7)
    first = await repo.redeem("o_me", hash_of(code), limit=5, window=60)
    again = await repo.redeem("o_me", hash_of(code.lower().replace("-", " ")), limit=5, window=60)
    assert (first.outcome, again.outcome, again.credits) == ("redeemed", "mine", 7)
    assert await ledger.balance("o_me") == 7


async def test_wrong_codes_are_limited_per_follower_even_when_sent_at_once_and_the_window_passes(db):
    clock = Clock()
    repo = CodeRepo(db, clock)
    [code] = await _batch(repo)
    guesses = await asyncio.gather(*(repo.redeem("o_guess", code_hash(new_code().replace("-", "")), limit=5,
                                                 window=600) for _ in range(20)))
    assert [g.outcome for g in guesses].count("invalid") == 5
    assert [g.outcome for g in guesses].count("limited") == 15
    # past the limit even the right code is not looked at: a lucky guess would be no different
    blocked = await repo.redeem("o_guess", hash_of(code), limit=5, window=600)
    assert blocked.outcome == "limited" and 0 < blocked.retry_after <= 600
    # another follower is not affected
    assert (await repo.redeem("o_other", code_hash("0" * LENGTH), limit=5, window=600)).outcome == "invalid"
    clock.t += 601
    assert (await repo.redeem("o_guess", hash_of(code), limit=5, window=600)).outcome == "redeemed"


async def test_right_codes_do_not_use_up_the_wrong_code_allowance(db):
    repo = CodeRepo(db)
    codes = await _batch(repo, n=8, credits=1)
    results = [await repo.redeem("o_buyer", hash_of(c), limit=2, window=600) for c in codes]
    assert [r.outcome for r in results] == ["redeemed"] * 8
    assert await Ledger(db).balance("o_buyer") == 8


async def test_expired_and_disabled_codes_credit_nothing(db):
    clock = Clock()
    repo = CodeRepo(db, clock)
    [soon] = await _batch(repo, expires_at=clock.t + 10)
    [stopped] = await _batch(repo)
    assert await repo.disable(code_hash=hash_of(stopped)) == 1
    clock.t += 11
    assert (await repo.redeem("o_late", hash_of(soon), limit=5, window=60)).outcome == "expired"
    assert (await repo.redeem("o_late", hash_of(stopped), limit=5, window=60)).outcome == "disabled"
    assert await Ledger(db).balance("o_late") == 0
    assert [b.expired for b in await repo.batches()] == [1]


async def test_disabling_a_batch_leaves_redeemed_codes_redeemed(db):
    repo = CodeRepo(db)
    codes = await _batch(repo, n=3)
    await repo.redeem("o_early", hash_of(codes[0]), limit=5, window=60)
    assert await repo.disable(batch="b1") == 2
    [b] = await repo.batches()
    assert (b.total, b.redeemed, b.disabled) == (3, 1, 2)


def test_codes_are_long_random_and_forgiving_to_read():
    made = {new_code() for _ in range(2000)}
    assert len(made) == 2000
    for c in list(made)[:50]:
        raw = c.replace("-", "")
        assert len(raw) == LENGTH and set(raw) <= set(ALPHABET)
        assert normalise(c.lower().replace("-", " ")) == raw
    assert normalise("OIL00-00000-00000-00000") == "01100000000000000000"
    assert normalise("ABC") is None and normalise("U" * LENGTH) is None


async def test_the_ledger_rebuild_keeps_every_row_and_stays_append_only(tmp_path: Path):
    """Migration 0018 rebuilds the ledger (SQLite cannot change a CHECK): an existing database keeps
    its rows and ids, and the new table refuses updates and deletes like the old one."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at REAL NOT NULL)")
    for entry in sorted(resources.files("storage.migrations").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql") and int(entry.name[:4]) <= 8:
            conn.executescript(entry.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (int(entry.name[:4]), entry.name))
    conn.execute("INSERT INTO accounts (openid, balance, created_at) VALUES ('o_old', 15, 0)")
    conn.execute("INSERT INTO ledger (id, openid, kind, amount, ref, created_at) VALUES (7, 'o_old', 'trial', 10, 'trial', 0)")
    conn.execute("INSERT INTO ledger (id, openid, kind, amount, ref, created_at) VALUES (9, 'o_old', 'topup', 5, 'order:x', 0)")
    conn.close()
    async with Database(path) as db:
        rows = await db.fetchall("SELECT id, kind, amount FROM ledger ORDER BY id")
        assert [tuple(r) for r in rows] == [(7, "trial", 10), (9, "topup", 5)]
        assert await Ledger(db).check_invariant() == []
        for statement in ("UPDATE ledger SET amount = 99", "DELETE FROM ledger"):
            try:
                async with db.transaction() as c:
                    await c.execute(statement)
            except sqlite3.IntegrityError as e:
                assert "append-only" in str(e)
            else:
                raise AssertionError(f"{statement} went through")
