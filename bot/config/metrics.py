"""[metrics]: GET /metrics for Prometheus."""

from __future__ import annotations

from pydantic import Field, model_validator

from bot.config.base import Section
from bot.config.errors import problem


class MetricsConfig(Section):
    """GET /metrics for Prometheus (issue 6)."""

    enabled: bool = True
    # Prometheus must send `Authorization: Bearer <token>`; "" serves /metrics to anyone who reaches it.
    token: str = ""
    # /metrics on a server of its own at host:port (loopback by default), and not on the main server:
    # it shows revenue, login failures and channel names. 0: on the main server, which needs `token`.
    # (Config checks it is not server.port.)
    port: int = Field(9464, ge=0, le=65535)
    host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _served(self) -> MetricsConfig:
        if self.enabled and not self.port and not self.token:
            raise problem("token", "is required when metrics.port is 0 (/metrics on the public server)"
                                   " — or leave metrics.port at its own loopback port (default 9464)")
        if self.port and not self.host:
            raise problem("host", "is required when metrics.port is set")
        if self.token and (self.token != self.token.strip() or len(self.token) < 16):
            raise problem("token", "must be at least 16 characters without surrounding spaces")
        return self
