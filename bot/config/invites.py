"""[invites]: invitations (邀请) and their rewards."""

from __future__ import annotations

from pydantic import Field

from bot.config.base import Positive, Section


class InvitesConfig(Section):
    enabled: bool = True
    # A new follower may send `邀请 CODE` this many seconds after first writing (or subscribing).
    window: Positive = 86400.0
    # Credits paid once per invitee, when the invitee's first paid order is credited (0: none).
    inviter_reward: int = Field(50, ge=0)
    invitee_reward: int = Field(0, ge=0)
