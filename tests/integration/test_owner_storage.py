"""The storage under the owner's commands on real SQLite: audited changes, products, backups."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tests.integration.conftest import INTEGRITY_ERRORS

from bot.config import ProductConfig
from storage.accounts import Accounts
from storage.audit import Audit
from storage.backup import backup, check_copy
from storage.db import Database
from storage.ledger import InsufficientCredits, Ledger
from storage.products import Product, ProductRepo

USER = "o6_bmjrPTlm6_owner_store1"


async def test_a_change_and_its_audit_row_commit_together_and_the_ledger_row_names_it(db):
    audit = Audit(db, actor="owner@host")
    async with audit.change("credits.grant", USER, reason="补偿", args=["credits", "grant"]) as ch:
        await Ledger(ch.db).apply(USER, "admin", 30, f"audit:{ch.id}")
        ch.detail["amount"] = 30
    [row] = await audit.recent()
    assert (row.id, row.action, row.target, row.reason, row.args, row.detail, row.actor) == (
        ch.id, "credits.grant", USER, "补偿", ["credits", "grant"], {"amount": 30}, "owner@host")
    [entry] = await Ledger(db).history(USER)
    assert entry.ref == f"audit:{row.id}" and await Ledger(db).balance(USER) == 30


async def test_a_failed_change_leaves_neither_the_change_nor_an_audit_row(db):
    audit = Audit(db)
    with pytest.raises(RuntimeError):
        async with audit.change("users.freeze", USER) as ch:
            await Accounts(ch.db).freeze(USER)
            raise RuntimeError("the owner's command failed half-way")
    assert await audit.recent() == [] and await Ledger(db).account(USER) is None


async def test_a_repository_step_that_fails_inside_a_change_rolls_back_alone(db):
    audit = Audit(db)
    async with audit.change("credits.deduct", USER) as ch:
        ledger = Ledger(ch.db)
        await ledger.apply(USER, "admin", 10, "audit:first")
        with pytest.raises(InsufficientCredits):
            await ledger.apply(USER, "admin", -50, "audit:too-much")
        ch.detail["kept"] = "the first step"
    assert [e.ref for e in await Ledger(db).history(USER)] == ["audit:first"]
    assert await Ledger(db).check_invariant() == [] and len(await audit.recent()) == 1


async def test_the_audit_trail_cannot_be_changed_or_deleted(db):
    await Audit(db).record("prune", "storage", detail={"answers": 3})
    for sql in ("UPDATE audit SET reason = 'nothing happened'", "DELETE FROM audit"):
        with pytest.raises(INTEGRITY_ERRORS, match="append-only"):
            async with db.transaction() as conn:
                await conn.execute(sql)


async def test_audit_ids_stay_unique_when_two_connections_write_at_once(tmp_path, db, open_database):
    other = await open_database().open()
    try:
        ids = await asyncio.gather(*(Audit(d).record("words.reload", "words") for d in (db, other) * 10))
    finally:
        await other.close()
    assert sorted(ids) == list(range(1, 21))


async def test_seeding_adds_new_config_products_and_keeps_the_owners_changes(tmp_path, db, open_database):
    config = [ProductConfig(id="p6", name="600 积分", credits=600, price_fen=600),
              ProductConfig(id="p30", name="3500 积分", credits=3500, price_fen=3000)]
    repo = ProductRepo(db)
    other = await open_database().open()
    try:
        added = await asyncio.gather(repo.seed(config), ProductRepo(other).seed(config))
    finally:
        await other.close()
    assert sorted(added, key=len) == [[], ["p6", "p30"]]
    before, after = await repo.update("p6", price_fen=500, enabled=False)
    assert (before.price_fen, before.enabled, after.price_fen, after.enabled) == (600, True, 500, False)
    assert await repo.seed([*config, ProductConfig(id="p100", name="12000 积分", credits=12000, price_fen=10000)]) == ["p100"]
    assert [(p.id, p.price_fen, p.enabled) for p in await repo.all()] == [
        ("p6", 500, False), ("p30", 3000, True), ("p100", 10000, True)]
    assert not await repo.add(Product("p30", "again", 1, 1)) and await repo.update("nope", name="x") is None


async def test_the_products_table_refuses_what_wechat_pay_would(db):
    for bad in (Product("bad id", "x", 1, 1), Product("p1", "", 1, 1), Product("p1", "x", 0, 1),
                Product("p1", "x", 1, -5), Product("p1", "x" * 128, 1, 1)):
        with pytest.raises(INTEGRITY_ERRORS):
            await ProductRepo(db).add(bad)


async def test_a_backup_reports_progress_and_a_broken_copy_fails_its_check(tmp_path, db):
    if db.engine != "sqlite":
        pytest.skip("SQLite's online backup; PostgreSQL is backed up with pg_dump")
    for i in range(50):
        await Ledger(db).apply(f"{USER}{i}", "admin", 5, "audit:x")
    steps: list[tuple[int, int]] = []
    pages = await backup(db, tmp_path / "copy.db", lambda done, total: steps.append((done, total)), step_pages=2)
    assert steps[-1] == (pages, pages) and len(steps) > 1
    assert check_copy(tmp_path / "copy.db").ok
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x07" * 8192)
    assert not check_copy(garbage).ok
