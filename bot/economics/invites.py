"""邀请 in WeChat: a follower's invite code and link, and a new follower naming who invited them (邀请
CODE in WeChat, or arriving through the link: the page keeps the code in a cookie until the follower
logs in, then records it the same way).

The reward itself is paid by the order that credits the invitee's first paid top-up (storage.orders
→ storage.invites.reward_invite), in its transaction; here only the relation is recorded, once.
"""

from __future__ import annotations

from typing import Any

import structlog

from bot.config import Config
from storage.invites import InviteRepo
from storage.redact import short_user

log = structlog.get_logger(__name__)

# Where an invite link points on the page's address (the page's route serves it).
LINK_PATH = "/i/"


class Inviter:
    def __init__(self, cfg: Config, invites: InviteRepo) -> None:
        self.cfg = cfg
        self.invites = invites

    async def run(self, openid: str, code: str) -> str:
        texts, c = self.cfg.texts, self.cfg.invites
        if not c.enabled:
            return texts.invite_off
        if not code:
            mine = await self.invites.code_for(openid)
            count, _ = await self.invites.invited(openid)
            reply = texts.invite_mine.format(code=mine, reward=c.inviter_reward, count=count)
            if self.cfg.server.public_url:
                reply += "\n" + texts.invite_link.format(link=self.link(mine))
            return reply
        outcome = await self.invites.record(openid, code[:16], "wechat", c.window)
        log.info("invites.record", user=short_user(openid), outcome=outcome)
        if outcome == "recorded":
            return texts.invite_recorded.format(reward=c.invitee_reward)
        if outcome == "self":
            return texts.invite_self
        if outcome == "already":
            return texts.invite_already
        return texts.invite_refused

    def link(self, code: str) -> str:
        """The page link that invites whoever opens it (LINK_PATH on the public address)."""
        return self.cfg.server.public_url.rstrip("/") + LINK_PATH + code

    async def page_view(self, openid: str) -> dict[str, Any] | None:
        """The page's 邀请 card: the follower's code, its link, what to send in WeChat instead, how many
        it brought and the reward; None when invitations are off (no code is made then)."""
        if not self.cfg.invites.enabled:
            return None
        code = await self.invites.code_for(openid)
        count, _ = await self.invites.invited(openid)
        word = (self.cfg.commands.invite or ("邀请",))[0]
        # without a public address the page is still served from somewhere: it resolves the bare path itself
        link = self.link(code) if self.cfg.server.public_url else LINK_PATH + code
        return {"code": code, "link": link, "send": f"{word} {code}", "invited": count,
                "reward": self.cfg.invites.inviter_reward}

    async def arrived(self, openid: str, code: str) -> str:
        """A follower logged in on the page after opening an invite link: record it as 邀请 CODE
        would (once, only a new follower, no self-invitation or circles). The outcome, for the log."""
        if not self.cfg.invites.enabled:
            return "off"
        outcome = await self.invites.record(openid, code[:16], "page", self.cfg.invites.window)
        log.info("invites.record", user=short_user(openid), outcome=outcome, via="page")
        return outcome
