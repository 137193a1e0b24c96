"""[server]"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from bot.config.base import Section, Strs


class ServerConfig(Section):
    # mpgpt runs behind a TLS proxy on the same host: listen on loopback unless told otherwise.
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # The address followers reach the companion page at (used in links in chat replies).
    public_url: str = ""
    # WeChat's messages are a few hundred bytes; anything far larger is not WeChat.
    max_body_bytes: int = 64 * 1024
    # "auto": uvloop when installed (it is a dependency off Windows), else asyncio's own loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    # Peers (CIDRs) whose client-address header (companion/analytics client_ip_header) is believed.
    trusted_proxies: Strs = ("127.0.0.1/32", "::1/128")
    # SIGTERM/SIGINT: in-flight requests (a /wechat delivery waits up to wechat.window) get this long,
    # then storage closes; the process is ended regardless after twice this.
    shutdown_timeout: float = Field(10.0, gt=0, le=300)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                msg = f"{cidr!r} is not an address or CIDR network"
                raise ValueError(msg) from None
        return value
