"""The two engines' migrations build the same schema: tables, columns (kind, NOT NULL), indexes by
name, and every uniqueness (primary keys, UNIQUE columns, unique and partial unique indexes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.db import Database, _migrations
from storage.postgres import PostgresDatabase, pg_migrations

BASELINE = 20  # storage/migrations/postgresql/0020_baseline.sql stands for SQLite's 0001-0020

_SQLITE_KINDS = {"TEXT": "text", "INTEGER": "int", "REAL": "float", "BLOB": "bytes"}
_PG_KINDS = {"text": "text", "bigint": "int", "double precision": "float", "bytea": "bytes"}


async def _sqlite_schema(db: Database) -> dict:
    tables = [r["name"] for r in await db.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    columns, indexes, uniques = {}, set(), set()
    for t in tables:
        info = await db.fetchall(f"PRAGMA table_xinfo({t})")  # with generated columns
        columns[t] = {r["name"]: (_SQLITE_KINDS[r["type"]], bool(r["notnull"] or r["pk"])) for r in info}
        pk = tuple(r["name"] for r in sorted(info, key=lambda r: r["pk"]) if r["pk"])
        if pk:
            uniques.add((t, pk, False))
        for ix in await db.fetchall(f"PRAGMA index_list({t})"):
            cols = tuple(r["name"] for r in await db.fetchall(f"PRAGMA index_info({ix['name']})"))
            if ix["origin"] == "c":
                indexes.add((t, ix["name"]))
            if ix["unique"]:
                uniques.add((t, cols, bool(ix["partial"])))
    return {"tables": set(tables), "columns": columns, "indexes": indexes, "uniques": uniques}


async def _pg_schema(db: PostgresDatabase) -> dict:
    tables = {r["table_name"] for r in await db.fetchall(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        " AND table_type = 'BASE TABLE'")}
    columns: dict = {t: {} for t in tables}
    for r in await db.fetchall(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public'"):
        if r["table_name"] not in columns:
            continue  # a view's columns (views are compared by what they return, not here)
        columns[r["table_name"]][r["column_name"]] = (_PG_KINDS[r["data_type"]], r["is_nullable"] == "NO")
    indexes, uniques = set(), set()
    for r in await db.fetchall(
            "SELECT t.relname AS tbl, i.relname AS idx, x.indisunique AS uniq, x.indpred IS NOT NULL AS partial,"
            " EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) AS backs_constraint,"
            " ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(n, o)"
            "       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o) AS cols"
            " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public'"):
        if not r["backs_constraint"]:
            indexes.add((r["tbl"], r["idx"]))
        if r["uniq"]:
            uniques.add((r["tbl"], tuple(r["cols"]), bool(r["partial"])))
    return {"tables": tables, "columns": columns, "indexes": indexes, "uniques": uniques}


async def test_both_engines_migrate_to_the_same_schema(tmp_path: Path, postgres_url: str):
    async with Database(tmp_path / "mpgpt.db") as lite, PostgresDatabase(postgres_url, pool_size=2) as pg:
        a, b = await _sqlite_schema(lite), await _pg_schema(pg)
        assert await lite.schema_version() == await pg.schema_version()
    assert a["tables"] == b["tables"]
    for table in sorted(a["tables"]):
        assert a["columns"][table] == b["columns"][table], table
    assert a["indexes"] == b["indexes"]
    assert a["uniques"] == b["uniques"]


def test_every_sqlite_migration_after_the_baseline_has_its_postgresql_port():
    lite = {n for n, _, _ in _migrations() if n > BASELINE}
    pg = {n for n, _, _ in pg_migrations() if n > BASELINE}
    assert lite == pg, "add storage/migrations/postgresql/NNNN_name.sql beside each new SQLite migration"
    assert min(n for n, _, _ in pg_migrations()) == BASELINE


async def test_hosts_starting_together_apply_each_migration_once(postgres_server: str):
    import psycopg

    from tests.conftest import with_database

    name = "t_fresh_migrations"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    url = with_database(postgres_server, name)
    try:
        hosts = [PostgresDatabase(url, pool_size=2) for _ in range(4)]
        await asyncio.gather(*(h.open(migrate=False) for h in hosts))
        applied = await asyncio.gather(*(h.migrate() for h in hosts))
        assert sorted(n for one in applied for n in one) == sorted(n for n, _, _ in pg_migrations())
        rows = await hosts[0].fetchall("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [n for n, _, _ in pg_migrations()]
        await asyncio.gather(*(h.close() for h in hosts))
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
