"""Sessions of the companion page: a signed token in a cookie, backed by a row logout can revoke.

The token is `v1.<session id>.<expiry>.<HMAC-SHA256>`; a token that does not verify never reaches
storage. The signing key is `companion.session_secret`, or one generated once and kept in storage so
every server process (and every restart) accepts the same cookies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

import structlog

from bot.config import Config
from storage.db import Database
from storage.login import SecretRepo, SessionRepo
from storage.redact import short_user

log = structlog.get_logger(__name__)

COOKIE = "mpgpt_session"
_VERSION = "v1"
_SECRET_NAME = "session_secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Sessions:
    def __init__(self, cfg: Config, repo: SessionRepo, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.repo = repo
        self._key = key
        self.clock = clock

    @classmethod
    async def open(cls, cfg: Config, db: Database, clock: Callable[[], float] = time.time) -> "Sessions":
        secret = cfg.companion.session_secret or await SecretRepo(db).get_or_create(
            _SECRET_NAME, lambda: secrets.token_urlsafe(48), clock())
        return cls(cfg, SessionRepo(db), secret.encode(), clock)

    @property
    def lifetime(self) -> float:
        return self.cfg.companion.session_days * 86400

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def _verify(self, token: str) -> str | None:
        """The session id of a well-formed, correctly signed, unexpired token."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            return None
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(self._sign(payload), parts[3]):
            return None
        try:
            expires = int(parts[2])
        except ValueError:
            return None
        return parts[1] if expires > self.clock() else None

    async def start(self, openid: str, method: str) -> str:
        """A new session for `openid`; returns the cookie value."""
        now = self.clock()
        session_id = secrets.token_urlsafe(18)
        expires = int(now + self.lifetime)
        await self.repo.create(session_id, openid, method, now, expires)
        log.info("companion.session_started", user=short_user(openid), method=method)
        payload = f"{_VERSION}.{session_id}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    async def openid(self, token: str | None) -> str | None:
        """Who the cookie belongs to, if it is valid and its session neither expired nor revoked."""
        session_id = self._verify(token) if token else None
        if session_id is None:
            return None
        session = await self.repo.active(session_id, self.clock())
        return session.openid if session else None

    async def end(self, token: str | None) -> bool:
        session_id = self._verify(token) if token else None
        return session_id is not None and await self.repo.revoke(session_id, self.clock())
