from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from storage.db import Database
from storage.postgres import PostgresDatabase

# What a broken constraint (or the append-only triggers) raises on either engine.
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)

Opener = Callable[[], Database]


@pytest.fixture
def open_database(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    """Another handle (not yet opened) to the test's one database, as another process would open
    it: SQLite at tmp_path / "mpgpt.db", or the test's own PostgreSQL database."""
    if engine == "sqlite":
        return lambda: Database(tmp_path / "mpgpt.db")
    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresDatabase(url, pool_size=8)  # type: ignore[return-value]


@pytest.fixture
async def db(open_database: Opener) -> AsyncIterator[Database]:
    """A real, migrated database of the test's own, on each engine: SQLite in the test's folder,
    PostgreSQL in a database copied from the migrated template."""
    async with open_database() as database:
        yield database
