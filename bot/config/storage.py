"""[storage]"""

from __future__ import annotations

from bot.config.base import PositiveInt, Section


class StorageConfig(Section):
    path: str = "data/mpgpt.db"
    busy_timeout_ms: int = 5000
    # `mpgpt prune` deletes inbound messages, answers and conversations older than this many days.
    retention_days: PositiveInt = 90
