"""Online backup of the live database, and the checks a copy must pass before it is trusted.

The copy is SQLite's backup API run on the Database's own reader connection, inside one read
transaction: in WAL mode that pins a snapshot, so the server keeps writing while we copy and the
copy is that snapshot, whole (without the pinned snapshot, a write by the server would make
SQLite restart the backup from the first page). It is written next to the target and renamed into
place only when complete.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.db import Database, owner_only

# (pages copied, pages in all), called from the database thread after each step.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class CopyCheck:
    integrity: str  # "ok" or SQLite's first complaint
    foreign_keys: int  # rows violating a foreign key
    pages: int

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and self.foreign_keys == 0


async def backup(db: Database, dest: Path, progress: Progress | None = None, step_pages: int = 256) -> int:
    """Copy the database to `dest` (replacing it); returns the number of pages copied. With a
    `progress`, steps are at most a tenth of the database, so it hears of every 10 %."""
    dest = Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    reader = db._reader  # the backup must run on the thread that owns this connection
    assert reader is not None, "database is not open"

    def run(source: sqlite3.Connection) -> int:
        copied = [0]

        def step(status: int, remaining: int, total: int) -> None:
            copied[0] = total
            if progress is not None:
                progress(total - remaining, total)

        # owner-only before SQLite writes a byte: the copy holds session ids and secrets too
        owner_only(partial)
        target = sqlite3.connect(partial)
        try:
            source.execute("BEGIN")
            source.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # take the snapshot now
            total = source.execute("PRAGMA page_count").fetchone()[0]
            pages = max(1, min(step_pages, total // 10)) if progress is not None else step_pages
            try:
                source.backup(target, pages=pages, progress=step, sleep=0)
            finally:
                source.execute("COMMIT")
            # One self-contained file (no -wal beside it) whatever mode the source is in.
            target.execute("PRAGMA journal_mode = DELETE").fetchall()
        finally:
            target.close()
        return copied[0]

    try:
        pages = await reader._execute(run, reader._conn)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return int(pages)


def check_copy(path: Path) -> CopyCheck:
    """SQLite's own integrity and foreign-key checks on a copy, opened read-only."""
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    except sqlite3.DatabaseError as e:
        return CopyCheck(f"not a database: {e}", 0, 0)
    finally:
        conn.close()
    first = integrity[0][0] if integrity else "no answer"
    return CopyCheck("ok" if first == "ok" else first, len(fk), int(pages))
