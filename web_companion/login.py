"""Login codes: a follower sends 登录 in chat, gets a 6-digit code, and types it on the page.

A code is valid `companion.login_code_ttl` seconds and once; asking again while it is live re-sends
the same code; no two live codes are equal (a storage constraint). Wrong codes are counted per client
address and over all clients, in storage, so guessing is slow for everyone: with the defaults and a
handful of live codes, a million possible codes take years of guessing.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bot import metrics
from bot.config import Config
from storage.db import Database
from storage.login import LoginCodeRepo, Refusal

log = structlog.get_logger(__name__)

CODE = re.compile(r"\d{6}")


@dataclass(frozen=True, slots=True)
class LoginRefused:
    """Why a code did not log anyone in: `invalid` (wrong, used or expired, or not six digits),
    `ip_limited` / `global_limited` (too many wrong codes lately; try again in `retry_after` s)."""

    reason: Refusal
    retry_after: float = 0.0


def draw_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


class LoginCodes:
    def __init__(self, cfg: Config, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.repo = LoginCodeRepo(db)
        self.clock = clock

    async def issue(self, openid: str) -> str:
        """The chat reply carrying the user's login code (the live one again, if there is one)."""
        c = self.cfg.companion
        issued = await self.repo.issue(openid, draw_code, self.clock(), c.login_code_ttl)
        log.info("companion.code_issued", user=openid[-6:], fresh=issued.fresh)
        url = self.cfg.server.public_url
        lines = c.login_text.split("\n")
        if not url:
            lines = [ln for ln in lines if "{url}" not in ln]
        minutes = max(1, math.ceil(c.login_code_ttl / 60))
        return "\n".join(lines).format(code=issued.code, minutes=minutes, url=url).strip()

    async def redeem(self, code: str, ip: str) -> str | LoginRefused:
        """The openid the code belongs to, used up now; or why not."""
        c = self.cfg.companion
        code = code.strip()
        # Malformed input is refused like a wrong code, and counted like one.
        candidate = code if CODE.fullmatch(code) else "x"
        result = await self.repo.redeem(candidate, ip, self.clock(), window=c.failure_window,
                                        ip_limit=c.ip_failures, global_limit=c.global_failures)
        metrics.login_attempted("code", "ok" if result.openid is not None else str(result.refusal))
        if result.openid is not None:
            log.info("companion.code_redeemed", user=result.openid[-6:])
            return result.openid
        assert result.refusal is not None
        (log.warning if result.refusal != "invalid" else log.info)("companion.code_refused", reason=result.refusal)
        return LoginRefused(result.refusal, result.retry_after)
