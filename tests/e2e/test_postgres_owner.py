"""The owner's commands on PostgreSQL ([storage] url) while `mpgpt serve` runs on it: doctor, prune,
report; and a bad or unreachable URL is one line naming storage.url."""

from __future__ import annotations

import time

import pytest

from storage.ledger import Ledger
from storage.postgres import PostgresDatabase
from tests.e2e.test_owner_maintenance import DAY, OLD, seed_history
from tests.harness import config_data, free_port, write_toml
from tests.ownerkit import ask, assert_one_line_failure, mpgpt, ok, serving


async def test_doctor_prune_and_report_work_on_postgresql_beside_a_running_server(tmp_path, llm, postgres_url):
    async with PostgresDatabase(postgres_url, pool_size=2) as db:
        await seed_history(db, OLD, time.time() - 200 * DAY, 5)
        await Ledger(db).apply(OLD, "admin", 7, "audit:seed")
    async with serving(tmp_path, llm, storage={"url": postgres_url}) as (config, _, wechat):
        assert await ask(wechat, "o6_bmjrPTlm6_pgown_b7003") != ""
        # (WeChat's API is not played here: only the storage checks matter)
        checks = {c["name"]: c for c in (await mpgpt(config, "doctor", "--json")).json()}
        assert checks["database"]["result"] == "pass" and "postgresql" in checks["database"]["detail"]
        assert checks["schema"]["result"] == "pass"
        assert checks["ledger"]["result"] == "pass"
        dry = (await ok(config, "prune", "--dry-run", "--json")).json()
        assert dry["inbound"] == 5 and dry["answers"] == 5
        done = (await ok(config, "prune", "--json")).json()
        assert done["inbound"] == 5 and done["answers"] == 5 and done["conversations"] == 1
        again = (await ok(config, "prune", "--dry-run", "--json")).json()
        assert again["inbound"] == 0
        report = await ok(config, "report")
        assert report.out.strip()
    async with PostgresDatabase(postgres_url, pool_size=2) as db:
        assert await Ledger(db).check_invariant() == []


async def test_a_bad_or_unreachable_storage_url_is_one_line_naming_it(tmp_path, llm):
    unreachable = f"postgresql://mpgpt:secret@127.0.0.1:{free_port()}/mpgpt"
    for url in (unreachable, "postgresql://[::1"):
        path = write_toml(tmp_path / "bad.toml", config_data(tmp_path, llm.base_url, storage={"url": url}))
        for command in (("migrate",), ("serve",), ("users", "list")):
            r = await mpgpt(path, *command, timeout=30)
            assert_one_line_failure(r, "storage.url")
            assert "secret" not in r.err
    path = write_toml(tmp_path / "mysql.toml", config_data(tmp_path, llm.base_url, storage={"url": "mysql://x"}))
    assert_one_line_failure(await mpgpt(path, "migrate"), "storage.url", code=2)


@pytest.mark.sqlite_file
async def test_migrate_to_copies_a_sqlite_database_into_an_empty_postgresql_one(tmp_path, llm, postgres_url):
    from storage.db import Database

    data = config_data(tmp_path, llm.base_url)
    path = write_toml(tmp_path / "lite.toml", data)
    async with Database(tmp_path / "mpgpt.db") as lite:
        await seed_history(lite, OLD, time.time() - DAY, 30)
        ledger = Ledger(lite)
        await ledger.ensure_account(OLD, trial_credits=10)
        assert await ledger.grant_daily(OLD, 5, "2024-05-01")
        assert await ledger.reserve(OLD, "gen-1", 7)
        assert await ledger.refund("gen-1")
        assert await ledger.reserve(OLD, "gen-2", 3)
        await lite.write(lambda conn: conn.execute(
            "INSERT INTO pictures (openid, msg_key, data, content_type, created_at) VALUES (?, 'pic', ?, 'image/png', 1.5)",
            (OLD, b"\x89PNG\x00\xff")))
        balance = await ledger.balance(OLD)
    r = await ok(path, "migrate", "--to", postgres_url)
    assert "copy [" in r.err and "rows" in r.err and "balances match" in r.out
    async with PostgresDatabase(postgres_url, pool_size=2) as pg:
        ledger = Ledger(pg)
        assert await ledger.balance(OLD) == balance
        assert await ledger.check_invariant() == []
        assert (await pg.fetchone("SELECT data FROM pictures WHERE msg_key = 'pic'"))["data"] == b"\x89PNG\x00\xff"
        rows = await pg.fetchall("SELECT COUNT(*) AS n FROM answers")
        assert rows[0]["n"] == 30
        # identity columns go on after the copied ids
        assert await ledger.reserve(OLD, "gen-3", 1)
    again = await mpgpt(path, "migrate", "--to", postgres_url)
    assert_one_line_failure(again, "empty")


async def test_backup_on_postgresql_dumps_one_snapshot_that_restores_with_balanced_books(tmp_path, llm, postgres_url,
                                                                                          postgres_server):
    import subprocess

    import psycopg

    from storage.pgbackup import _env, _tool
    from tests.conftest import with_database

    async with PostgresDatabase(postgres_url, pool_size=2) as db:
        await seed_history(db, OLD, time.time() - DAY, 20)
        await Ledger(db).apply(OLD, "admin", 7, "audit:seed")
    path = write_toml(tmp_path / "pg.toml", config_data(tmp_path, llm.base_url, storage={"url": postgres_url}))
    out = tmp_path / "mpgpt.dump"
    r = await ok(path, "backup", "--out", str(out), "--json")
    assert r.json()["ok"] and r.json()["ledger_mismatches"] == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    restored = with_database(postgres_server, "t_restored_dump")
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS t_restored_dump WITH (FORCE)")
        admin.execute("CREATE DATABASE t_restored_dump")
    try:
        subprocess.run([_tool("pg_restore"), "--no-owner", "-d", "t_restored_dump", str(out)], env=_env(restored),
                       check=True, capture_output=True)
        async with PostgresDatabase(restored, pool_size=2) as copy:
            assert await Ledger(copy).balance(OLD) == 7
            assert await Ledger(copy).check_invariant() == []
            assert (await copy.fetchone("SELECT COUNT(*) AS n FROM answers"))["n"] == 20
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS t_restored_dump WITH (FORCE)")
