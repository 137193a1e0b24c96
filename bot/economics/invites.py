"""邀请 in WeChat: a follower's invite code, and a new follower naming who invited them.

The reward itself is paid by the order that credits the invitee's first paid top-up (storage.orders
→ storage.invites.reward_invite), in its transaction; here only the relation is recorded, once.
"""

from __future__ import annotations

import structlog

from bot.config import Config
from storage.invites import InviteRepo
from storage.redact import short_user

log = structlog.get_logger(__name__)


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
            return texts.invite_mine.format(code=mine, reward=c.inviter_reward, count=count)
        outcome = await self.invites.record(openid, code[:16], "wechat", c.window)
        log.info("invites.record", user=short_user(openid), outcome=outcome)
        if outcome == "recorded":
            return texts.invite_recorded.format(reward=c.invitee_reward)
        if outcome == "self":
            return texts.invite_self
        if outcome == "already":
            return texts.invite_already
        return texts.invite_refused
