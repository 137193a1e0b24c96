from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A real, migrated SQLite database in the test's own folder (tmp_path / "mpgpt.db")."""
    async with Database(tmp_path / "mpgpt.db") as database:
        yield database
