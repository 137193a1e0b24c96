"""[wechat]: the account, its AES key and WeChat's delivery timing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bot.config.base import HttpUrl, Positive, Section
from bot.config.errors import problem


class WechatConfig(Section):
    token: str = ""
    app_id: str = ""
    app_secret: str = ""
    encoding_aes_key: str = ""
    mode: Literal["passive", "active"] = "passive"
    api_base: HttpUrl = "https://api.weixin.qq.com"
    # WeChat sends no freshness guarantee; we refuse signatures older (or newer) than this.
    timestamp_tolerance: Positive = 300.0
    # WeChat waits `window` seconds for each delivery and delivers a message `deliveries` times.
    window: Positive = 5.0
    deliveries: int = Field(3, ge=1)
    # On the last delivery we answer this long before the window closes, with what we have.
    reply_margin: Positive = 0.6
    max_reply_bytes: int = Field(2000, ge=200, le=2048)
    # Customer-service messages allowed per user message (WeChat's rule since 2023).
    push_budget: int = Field(5, ge=1, le=5)
    api_timeout: Positive = 5.0
    # Active mode: WeChat's typing indicator while an answer is written. WeChat allows it only within
    # `typing_after` seconds of the follower's message, shows it `typing_lasts` seconds, refuses it
    # again within that time, and a message cancels it.
    typing: bool = True
    typing_lasts: Positive = 15.0
    typing_after: Positive = 30.0
    token_refresh_margin: float = 300.0

    @model_validator(mode="after")
    def _account(self) -> WechatConfig:
        if not self.token:
            raise problem("token", "is required (or set MPGPT_WECHAT_TOKEN)")
        if self.encoding_aes_key:
            if len(self.encoding_aes_key) != 43:
                raise problem("encoding_aes_key", "must be the 43 characters WeChat shows, or \"\" for plaintext mode")
            if not self.app_id:
                raise problem("app_id", "is required when wechat.encoding_aes_key is set")
        if self.mode == "active" and not (self.app_id and self.app_secret):
            raise problem("app_secret" if self.app_id else "app_id", "is required in active mode")
        if self.reply_margin >= self.window:
            raise problem("reply_margin", "must be smaller than wechat.window")
        return self
