"""[storage]"""

from __future__ import annotations

from pydantic import Field, field_validator

from bot.config.base import PositiveInt, Section


class StorageConfig(Section):
    path: str = "data/mpgpt.db"
    # PostgreSQL instead of the SQLite file (several hosts on one database); "" = SQLite at `path`.
    url: str = ""
    busy_timeout_ms: int = 5000
    # PostgreSQL connections per process (pool_size x processes must stay under max_connections).
    pool_size: int = Field(10, ge=1, le=200)
    # PostgreSQL: statements one connection holds in flight at most; past that (on every connection) a
    # statement waits up to `busy_wait` seconds for room, then its request gets 503 with Retry-After.
    statements_in_flight: int = Field(256, ge=1, le=100_000)
    busy_wait: float = Field(30.0, gt=0, le=3600)
    # `mpgpt prune` deletes inbound messages, answers and conversations older than this many days.
    retention_days: PositiveInt = 90

    @field_validator("url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (or empty for SQLite at storage.path)")
        return value
