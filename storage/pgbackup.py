"""`mpgpt backup` on PostgreSQL: pg_dump of one exported snapshot, checked in that same snapshot.

A connection opens a REPEATABLE READ transaction and exports its snapshot; pg_dump dumps exactly that
snapshot (--snapshot) while the servers keep writing, and the ledger invariant is checked on the
same snapshot, so the check speaks for the dump. Then `pg_restore --list` reads the archive back.
The password travels in pg_dump's environment, never on its command line.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from storage.pgconn import configure
from storage.postgres import PostgresDatabase

Progress = Callable[[int, int], None]


class DumpFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class DumpCheck:
    tables: int
    ledger_mismatches: int
    archive_entries: int


def _tool(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise DumpFailed(f"{name} is not installed (apt-get install postgresql-client)")
    return path


def _env(url: str) -> dict[str, str]:
    parts = conninfo_to_dict(url)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE",
             "sslmode": "PGSSLMODE"}
    return {**os.environ, **{names[k]: str(v) for k, v in parts.items() if k in names and v is not None}}


def _dump(url: str, out: Path, progress: Progress | None) -> DumpCheck:
    with psycopg.connect(url) as conn:
        configure(conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        tables = conn.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
                              ).fetchone()[0]
        partial = out.with_name(out.name + ".partial")
        proc = subprocess.Popen([_tool("pg_dump"), "--format=custom", "--verbose", f"--snapshot={snapshot}",
                                 f"--file={partial}"], env=_env(url), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        done, errors = 0, []
        assert proc.stderr is not None
        for line in proc.stderr:
            if "dumping contents of table" in line:
                done += 1
                if progress:
                    progress(min(done, tables), tables)
            elif "error" in line.lower():
                errors.append(line.strip())
        if proc.wait() != 0:
            partial.unlink(missing_ok=True)
            raise DumpFailed("pg_dump failed: " + (errors[-1] if errors else f"exit {proc.returncode}"))
        mismatches = _mismatches(conn)
        conn.execute("COMMIT")
    os.chmod(partial, 0o600)
    os.replace(partial, out)
    listed = subprocess.run([_tool("pg_restore"), "--list", str(out)], capture_output=True, text=True)
    if listed.returncode != 0:
        raise DumpFailed(f"pg_restore cannot read the dump: {listed.stderr.strip()[:200]}")
    entries = sum(1 for line in listed.stdout.splitlines() if line and not line.startswith(";"))
    return DumpCheck(tables, mismatches, entries)


def _mismatches(conn: psycopg.Connection) -> int:
    """Accounts whose buckets differ from their ledger sums, in the dump's own snapshot."""
    sums = conn.execute(
        "SELECT COUNT(*) FROM (SELECT a.openid FROM accounts a LEFT JOIN ledger l ON l.openid = a.openid"
        " GROUP BY a.openid HAVING a.balance != COALESCE(SUM(l.amount), 0)"
        " OR a.daily != COALESCE(SUM(l.daily_amount), 0)) AS off").fetchone()[0]
    return int(sums)


async def dump(db: PostgresDatabase, out: Path, progress: Progress | None = None) -> DumpCheck:
    return await asyncio.to_thread(_dump, db.url, Path(out), progress)
