from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests import pgcluster
from tests.fakes.llm import FakeLLM

TEMPLATE = "mpgpt_template"


@pytest.fixture
async def llm():
    async with FakeLLM() as fake:
        yield fake


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _migrate(url: str) -> None:
    from storage.postgres import PostgresDatabase

    async def run() -> None:
        async with PostgresDatabase(url, pool_size=2):
            pass

    # a thread of its own: no event loop may be running where asyncio.run starts one
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(errors, lambda: asyncio.run(run())))
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _capture(errors: list[BaseException], fn) -> None:  # noqa: ANN001
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - re-raised in the fixture
        errors.append(e)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster's admin URL: $MPGPT_TEST_POSTGRES_URL, else a throwaway cluster started
    here when the server binaries are installed; skipped without one (failed under
    MPGPT_REQUIRE_POSTGRES=1, as .ci/run sets). A migrated template database is made once."""
    import psycopg

    url = os.environ.get(pgcluster.URL_ENV)
    base = None
    if not url:
        try:
            url, base = pgcluster.start()
        except (RuntimeError, OSError, Exception) as e:  # noqa: BLE001 - any failure to start is a skip
            if os.environ.get(pgcluster.REQUIRE_ENV):
                pytest.fail(f"PostgreSQL is required (MPGPT_REQUIRE_POSTGRES) but cannot start: {e}", pytrace=False)
            pytest.skip(f"no PostgreSQL for the tests: {e}")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEMPLATE}")
    _migrate(with_database(url, TEMPLATE))
    try:
        yield url
    finally:
        if base is not None:
            pgcluster.stop(base)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """MPGPT_TEST_ENGINE=postgresql runs the apps on PostgreSQL: a test that reaches into the SQLite
    file itself (a backup copy, a lock on the file, a table dropped) has nothing to reach."""
    if os.environ.get("MPGPT_TEST_ENGINE") != "postgresql":
        return
    skip = pytest.mark.skip(reason="reaches into the SQLite file; the apps run on PostgreSQL here")
    for item in items:
        if item.get_closest_marker("sqlite_file") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _apps_on_postgresql(request: pytest.FixtureRequest) -> None:
    """MPGPT_TEST_ENGINE=postgresql (tests/harness.py): every app's database is a copy of the
    migrated template, which the PostgreSQL fixture makes; without it no app could start."""
    if os.environ.get("MPGPT_TEST_ENGINE") == "postgresql":
        request.getfixturevalue("postgres_server")


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A migrated database of the test's own (a copy of the template: ~50 ms), dropped afterwards."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield with_database(postgres_server, name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    """Which database engine a storage test runs on (every such test runs on both)."""
    return request.param
