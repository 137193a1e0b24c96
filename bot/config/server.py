"""[server]"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bot.config.base import Section


class ServerConfig(Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    # The address followers reach the companion page at (used in links in chat replies).
    public_url: str = ""
    # WeChat's messages are a few hundred bytes; anything far larger is not WeChat.
    max_body_bytes: int = 64 * 1024
    # "auto": uvloop when installed (it is a dependency off Windows), else asyncio's own loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
