"""[commands]: the words followers type for each command."""

from __future__ import annotations

from pydantic import model_validator

from bot.config.base import Section, Strs
from bot.config.errors import problem


class CommandsConfig(Section):
    more: Strs = ("继续",)
    reset: Strs = ("新对话",)
    help: Strs = ("帮助",)
    model: Strs = ("模型",)
    key: Strs = ("key", "KEY", "Key")
    balance: Strs = ("余额",)
    # Ask for a one-time link to the companion page; `登录 CODE` logs in a desktop browser showing CODE.
    login: Strs = ("登录",)
    # `兑换 CODE`: redeem a redemption code the owner made (`mpgpt codes create`).
    redeem: Strs = ("兑换",)
    # `邀请`: the follower's invite code; `邀请 CODE`: a new follower names who invited them.
    invite: Strs = ("邀请",)

    @model_validator(mode="after")
    def _login_words(self) -> CommandsConfig:
        for i, word in enumerate(self.login):
            if not word.strip():
                raise problem(f"login[{i}]", "must not be empty")
        return self
