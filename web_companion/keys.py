"""The companion page's own typed AppKeys (the server's shared ones are in bot/keys.py).

They live here, not in bot/keys.py, because their values are this package's types and bot must
not import web_companion."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from bot.config import Config
from bot.economics.codes import Redeemer
from bot.economics.invites import Inviter
from storage.rate_events import Attempts
from web_companion.account import AccountView
from web_companion.analytics import EventSink, IpRateLimit
from web_companion.login import Logins
from web_companion.sessions import Sessions


@dataclass
class Companion:
    """The page's services, built once the database is open."""

    cfg: Config
    login: Logins
    sessions: Sessions
    account: AccountView
    redeemer: Redeemer
    attempts: Attempts
    # records an invitation when a follower who opened an invite link logs in
    inviter: Inviter | None = None


COMPANION = web.AppKey("companion", Companion)
SINK = web.AppKey("analytics_sink", EventSink)
LIMIT = web.AppKey("analytics_limit", IpRateLimit)
