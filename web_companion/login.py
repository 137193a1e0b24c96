"""Logging in from chat without anything worth guessing.

- 登录 in chat answers a one-time link `{server.public_url}/#login=<token>`: the token has 192 random
  bits, is stored only as its SHA-256, works once and for `companion.login_code_ttl` seconds. It sits
  in the URL's fragment, which browsers never send, so no proxy or access log ever sees it; the page
  posts it to /api/login.
- A browser outside WeChat asks for a wait: it gets a secret of its own (a cookie, 192 bits, stored
  hashed) and a short code to show. The follower sends `登录 CODE` in chat, and that browser (the one
  holding the secret) is logged in to the sender's account; nobody else's.

Guessing gains nothing: a link token cannot be guessed, and a guessed short code only attaches a
stranger's waiting browser to the guesser's own account. So there is no global failure cap for an
attacker to trip: a follower's wrong codes only ever limit that follower (`code_attempts`), and one
address can start only `ip_waits` waits per window.
"""

from __future__ import annotations

import hashlib
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
from storage.login import LoginLinkRepo
from storage.rate_events import Attempts
from storage.redact import short_user

log = structlog.get_logger(__name__)

CODE = re.compile(r"\d{6}")
TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def draw_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


@dataclass(frozen=True, slots=True)
class WaitState:
    """What a waiting browser learns: its code and seconds left, or the follower it is now logged in as."""

    code: str
    expires_in: float
    openid: str | None = None
    # set when a new wait was started: the browser's secret, for its cookie
    secret: str | None = None


class TooManyWaits(Exception):
    """This address started `companion.ip_waits` waits within the window."""


class Logins:
    def __init__(self, cfg: Config, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.repo = LoginLinkRepo(db)
        self.attempts = Attempts(db)
        self.clock = clock

    def _minutes(self) -> int:
        return max(1, math.ceil(self.cfg.companion.login_code_ttl / 60))

    async def issue(self, openid: str) -> str:
        """The chat reply to 登录: a fresh one-time link (when server.public_url is set) and how to log in
        a desktop browser."""
        c = self.cfg.companion
        url = self.cfg.server.public_url
        word = (self.cfg.commands.login or ("登录",))[0]
        if not url:  # no link to send: how long the page's code lasts, and what to do with it
            return c.login_text_no_url.format(minutes=self._minutes(), word=word)
        token = secrets.token_urlsafe(24)
        await self.repo.add_link(_hash(token), openid, self.clock(), c.login_code_ttl)
        log.info("companion.link_issued", user=short_user(openid))
        link = f"{url.rstrip('/')}/#login={token}"
        return c.login_text.format(link=link, minutes=self._minutes(), url=url, word=word).strip()

    async def claim(self, openid: str, code: str) -> str:
        """The chat reply to `登录 CODE`: the browser showing CODE is now the sender's."""
        c = self.cfg.companion
        now = self.clock()
        if not await self.attempts.admit(f"login-code:{openid}", c.code_attempts, c.failure_window, now):
            metrics.login_attempted("code", "limited")
            return c.login_code_limited_text.format(minutes=max(1, math.ceil(c.failure_window / 60)))
        if CODE.fullmatch(code) and await self.repo.claim(code, openid, now):
            log.info("companion.wait_claimed", user=short_user(openid))
            return c.login_code_done_text
        metrics.login_attempted("code", "invalid")
        return c.login_code_wrong_text

    async def redeem_link(self, token: str) -> str | None:
        """The follower the link was sent to, used up now; None for anything else."""
        openid = await self.repo.use_link(_hash(token), self.clock()) if TOKEN.fullmatch(token) else None
        metrics.login_attempted("link", "ok" if openid else "invalid")
        if openid:
            log.info("companion.link_used", user=short_user(openid))
        return openid

    async def wait(self, secret: str | None, ip: str) -> WaitState:
        """The browser's wait (its cookie `secret`): logged in once claimed, else its code; a new wait
        when it has none live."""
        c = self.cfg.companion
        now = self.clock()
        if secret and TOKEN.fullmatch(secret):
            current = await self.repo.finish_wait(_hash(secret), now)
            if current is not None:
                if current.openid is not None:
                    metrics.login_attempted("code", "ok")
                return WaitState(current.code, current.expires_at - now, current.openid)
        if await self.repo.waits_from(ip, now - c.failure_window) >= c.ip_waits:
            raise TooManyWaits
        fresh = secrets.token_urlsafe(24)
        started = await self.repo.start_wait(_hash(fresh), draw_code, ip, now, c.login_code_ttl,
                                             limit=(c.ip_waits, now - c.failure_window))
        if started is None:  # other requests from this address took the last places meanwhile
            raise TooManyWaits
        return WaitState(started.code, started.expires_at - now, secret=fresh)
