"""Redemption codes: making them, reading what a follower typed, and redeeming one.

A code is 20 characters of Crockford's base32 (100 bits from `secrets`), shown in groups of five:
`K7Q2M-9XRTB-…`. Guessing is useless: with a million live codes a guess hits one with odds of
10^-24, and wrong guesses are limited per follower ([codes] max_failures). Only the SHA-256 of a
code's normal form is stored, so a copy of the database hands out no codes. What followers type
is forgiven the way Crockford intends: case, spaces and dashes are ignored, O reads as 0, I and L
as 1.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog

from bot import metrics
from bot.config import Config
from bot.economics.pricing import milli_text
from storage.codes import CodeRepo, Redemption
from storage.redact import short_user

log = structlog.get_logger(__name__)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 20
GROUP = 5
_READS_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_IGNORED = str.maketrans("", "", " -_\t\u3000")


def new_code() -> str:
    """A fresh code, grouped for reading."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i:i + GROUP] for i in range(0, LENGTH, GROUP))


def normalise(text: str) -> str | None:
    """The code's normal form, or None when `text` cannot be a code at all."""
    s = text.strip().upper().translate(_IGNORED).translate(_READS_AS)
    if len(s) != LENGTH or any(c not in ALPHABET for c in s):
        return None
    return s


def code_hash(normal: str) -> str:
    return hashlib.sha256(f"mpgpt-code:{normal}".encode()).hexdigest()


def hash_of(text: str) -> str | None:
    normal = normalise(text)
    return code_hash(normal) if normal is not None else None


# A shape no code has: a malformed guess still takes a wrong-code slot (it is a guess), and finds nothing.
_NO_CODE = "0" * 64


class Redeemer:
    """兑换 CODE, in WeChat and on the page: the reply the follower reads."""

    def __init__(self, cfg: Config, codes: CodeRepo, balance_milli: Callable[[str], Awaitable[int]],
                 open_account: Callable[[str], Awaitable[object]] | None = None) -> None:
        self.cfg = cfg
        self.codes = codes
        # in milli-credits: the reply shows the exact balance, as 余额 does (9.985, not 9)
        self.balance_milli = balance_milli
        # the account (and its trial) exists before a code is credited to it, as for any message
        self.open_account = open_account

    async def redeem(self, openid: str, text: str) -> tuple[Redemption, str]:
        texts, c = self.cfg.texts, self.cfg.codes
        if not text.strip():
            return Redemption("invalid"), texts.redeem_usage
        if self.open_account is not None:
            await self.open_account(openid)
        result = await self.codes.redeem(openid, hash_of(text[:64]) or _NO_CODE, limit=c.max_failures,
                                         window=c.failure_window)
        metrics.code_redeemed(result.outcome)
        log.info("codes.redeem", user=short_user(openid), outcome=result.outcome)  # never the code
        if result.outcome == "redeemed":
            reply = texts.redeem_done.format(credits=result.credits, balance=milli_text(await self.balance_milli(openid)))
        elif result.outcome == "mine":
            reply = texts.redeem_mine.format(credits=result.credits)
        elif result.outcome == "limited":
            reply = texts.redeem_limited.format(minutes=max(1, int(result.retry_after // 60) + 1))
        else:
            reply = getattr(texts, f"redeem_{result.outcome}")
        return result, reply


def parse_duration(text: str) -> float:
    """'30d', '12h', '90m' or '45s' in seconds; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    if len(t) < 2 or t[-1] not in units:
        msg = f"{text!r} is not a duration like 30d, 12h or 90m"
        raise ValueError(msg)
    try:
        value = float(t[:-1])
    except ValueError:
        msg = f"{text!r} is not a duration like 30d, 12h or 90m"
        raise ValueError(msg) from None
    if value <= 0:
        msg = f"{text!r}: a duration must be greater than 0"
        raise ValueError(msg)
    return value * units[t[-1]]


def expiry(after: str | None, now: float | None = None) -> float | None:
    return None if after is None else (time.time() if now is None else now) + parse_duration(after)
