"""[analytics]: the companion page's tracker and how long its events are kept."""

from __future__ import annotations

from pydantic import Field

from bot.config.base import Positive, PositiveInt, Section


class AnalyticsConfig(Section):
    """Companion-page analytics: the tracker's POST /api/track and how long its events are kept."""

    enabled: bool = True
    # Events older than this are deleted by `mpgpt prune`.
    retention_days: PositiveInt = 90
    # Events accepted per client IP per `rate_window` seconds (each process counts its own).
    rate_limit: PositiveInt = 120
    rate_window: Positive = 60.0
    max_body_bytes: int = Field(4096, ge=256, le=65536)
    # Accepted events are answered at once and written together this often.
    flush_interval: Positive = 1.0
    # Events waiting to be written at most; beyond it new ones are dropped (and counted).
    max_queue: PositiveInt = 10000
    # Behind a reverse proxy: the header holding the client's address (e.g. "X-Real-IP"); "" = the peer.
    client_ip_header: str = ""
