"""[chat]: the conversation, and the timings of generation, leases and recovery."""

from __future__ import annotations

from pydantic import model_validator

from bot.config.base import Positive, PositiveInt, Section
from bot.config.errors import problem


class ChatConfig(Section):
    default_model: str = "gpt-4o-mini"
    system_prompt: str = "你是一个乐于助人的助手。回答简洁，使用纯文本，不要使用 Markdown。"
    generation_deadline: Positive = 120.0
    conversation_idle: Positive = 1800.0
    max_turns: PositiveInt = 10
    max_context_tokens: PositiveInt = 3000
    # Cross-process waits poll storage this often; same-process waits are woken at once.
    poll_interval: Positive = 0.1
    # The growing answer is written to storage this often, so another process (or a restart)
    # can give the user what is complete so far.
    progress_flush_interval: Positive = 0.5
    # A generating process renews its lease; a lease left to expire means the process died.
    lease_seconds: Positive = 30.0
    # A message's first delivery decides it under a lease renewed every half of this; a retry finding
    # it run out (the process died deciding) decides the message itself. Shorter than wechat.window,
    # so the next delivery can take over; unset, 0.4 × wechat.window (2 s at WeChat's 5 s).
    decide_lease: Positive | None = None
    recovery_interval: Positive = 5.0
    # Followers may send `key sk-...` to use their own OpenAI-compatible key (no credits charged);
    # it is stored encrypted with key_secret (or MPGPT_CHAT_KEY_SECRET), at least 16 characters.
    allow_own_keys: bool = False
    key_secret: str = ""

    @model_validator(mode="after")
    def _own_keys(self) -> ChatConfig:
        if self.allow_own_keys and len(self.key_secret) < 16:
            raise problem("key_secret", "must be at least 16 characters when chat.allow_own_keys is on"
                                        " (or set MPGPT_CHAT_KEY_SECRET)")
        return self
