"""Copying a SQLite database into an empty PostgreSQL one (the owner's way to several hosts).

The whole copy is one PostgreSQL transaction (COPY per table, parents before children): it lands
whole or not at all, and an interrupted copy leaves the target empty to try again. The SQLite file
is read through a read-only connection of its own, in one read transaction (a consistent snapshot
even while a server still writes to it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg

from storage.postgres import PostgresDatabase

Progress = Callable[[int, int], None]
_BATCH = 2000


class TargetNotEmpty(Exception):
    pass


def _tables(src: sqlite3.Connection) -> list[str]:
    """Every table, each after the tables its foreign keys point at."""
    names = [r[0] for r in src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " AND name != 'schema_migrations' ORDER BY name")]
    parents = {n: {r[2] for r in src.execute(f"PRAGMA foreign_key_list({n})")} - {n} for n in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= set(ordered)]
        if not ready:  # a cycle: none in this schema; copy the rest as they come
            ready = [n for n in names if n not in ordered]
        ordered += ready
    return ordered


def _copy(path: Path, target: psycopg.Connection, progress: Progress | None) -> dict[str, int]:
    src = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    try:
        src.execute("BEGIN")  # one snapshot for the whole read
        tables = _tables(src)
        total = sum(src.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)
        for t in tables:
            if target.execute(f"SELECT EXISTS (SELECT 1 FROM {t})").fetchone()[0]:
                raise TargetNotEmpty(f"the PostgreSQL database already has rows in {t}: copy into an empty one")
        counts, done = {}, 0
        if progress:
            progress(0, total)
        with target.transaction():
            for t in tables:
                columns = [r[1] for r in src.execute(f"PRAGMA table_info({t})")]
                names = ", ".join(columns)
                rows = src.execute(f"SELECT {names} FROM {t} ORDER BY rowid")
                counts[t] = 0
                with target.cursor().copy(f"COPY {t} ({names}) FROM STDIN") as copy:
                    while batch := rows.fetchmany(_BATCH):
                        for row in batch:
                            copy.write_row(row)
                        counts[t] += len(batch)
                        done += len(batch)
                        if progress:
                            progress(done, total)
                sequence = None
                if "id" in columns:
                    sequence = target.execute("SELECT pg_get_serial_sequence(%s, 'id')", (t,)).fetchone()[0]
                if sequence is not None:  # identity columns continue after the copied ids
                    target.execute(f"SELECT setval(%s, COALESCE((SELECT MAX(id) FROM {t}), 0) + 1, false)",
                                   (sequence,))
        return counts
    finally:
        src.close()


async def copy_sqlite_to_postgres(path: Path, target: PostgresDatabase,
                                  progress: Progress | None = None) -> dict[str, int]:
    """Copy every row of the SQLite file at `path` into `target` (migrated, empty); rows per table."""
    return await target.with_connection(lambda conn: _copy(Path(path), conn, progress))
