"""[log]"""

from __future__ import annotations

from typing import Literal

from bot.config.base import Section


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": console when stderr is a terminal, JSON otherwise.
    format: Literal["auto", "json", "console"] = "auto"
