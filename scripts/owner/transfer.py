"""`mpgpt migrate --to postgresql://…`: the owner's move from one SQLite file to PostgreSQL.

The SQLite database is brought to the latest schema, the PostgreSQL one is migrated (it must be
empty), every row is copied in one transaction with a progress bar, then the copy is checked: the
same row count per table, and the credits ledger's invariant on the copy.
"""

from __future__ import annotations

import sys
import time

import psycopg

from bot.config import Config
from scripts.owner.maintenance import ProgressBar
from storage.db import Database
from storage.ledger import Ledger
from storage.postgres import PostgresDatabase, StorageUnavailable, redact
from storage.transfer import TargetNotEmpty, copy_sqlite_to_postgres


def _fail(message: str) -> int:
    print(f"mpgpt: {message}", file=sys.stderr)
    return 1


async def migrate_to(cfg: Config, url: str) -> int:
    if not url.startswith(("postgresql://", "postgres://")):
        return _fail("--to: must be a postgresql:// URL")
    if cfg.storage.url:
        return _fail("storage.url is set: --to copies the SQLite database at storage.path (unset url first)")
    path = cfg.resolve_path(cfg.storage.path)
    if not path.exists():
        return _fail(f"no database at {str(path)!r} to copy")
    async with Database(path):  # pending SQLite migrations first: both schemas then match
        pass
    target = PostgresDatabase(url, pool_size=2)
    try:
        await target.open()
    except StorageUnavailable as e:
        return _fail(f"--to: {e}")
    bar = ProgressBar(label="copy", unit="rows")
    started = time.perf_counter()
    try:
        try:
            counts = await copy_sqlite_to_postgres(path, target, bar)
        except TargetNotEmpty as e:
            return _fail(f"--to: {e}")
        except psycopg.Error as e:
            return _fail(f"--to: the copy failed and was rolled back: {' '.join(str(e).split())}")
        finally:
            bar.finish()
        copied = {}
        for table in counts:
            row = await target.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
            copied[table] = row["n"] if row else 0
        mismatches = await Ledger(target).check_invariant()
    finally:
        await target.close()
    rows = sum(counts.values())
    print(f"copied {rows} rows of {len(counts)} tables to {redact(url)} in {time.perf_counter() - started:.1f} s")
    if copied != counts:
        return _fail(f"the copy's row counts differ: {[t for t in counts if copied[t] != counts[t]]}")
    if mismatches:
        return _fail(f"the copy's ledger does not balance: {len(mismatches)} mismatches")
    print("ledger: balances match the ledger on the copy")
    print(f'next: set [storage] url = "{redact(url)}" (with its password) on every host, then start them')
    return 0
