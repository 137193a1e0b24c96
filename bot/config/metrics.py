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
    # 0: /metrics on the main server. Otherwise its own server on host:port, e.g. reachable only
    # from inside the network, and the main server does not serve it. (Config checks it is not server.port.)
    port: int = Field(0, ge=0, le=65535)
    host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _served(self) -> MetricsConfig:
        if self.port and not self.host:
            raise problem("host", "is required when metrics.port is set")
        if self.token and (self.token != self.token.strip() or len(self.token) < 16):
            raise problem("token", "must be at least 16 characters without surrounding spaces")
        return self
