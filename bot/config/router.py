"""[router]: breakers, failover and the endpoint of followers' own keys."""

from __future__ import annotations

from bot.config.base import HttpUrl, Positive, PositiveInt, Section


class RouterConfig(Section):
    # A channel that fails `breaker_failures` times within `breaker_window` seconds is left alone for
    # `breaker_cooldown` seconds; then one probe request decides whether it is healthy again.
    breaker_failures: PositiveInt = 3
    breaker_window: Positive = 60.0
    breaker_cooldown: Positive = 30.0
    # A 429 rests the channel this long; it is not a breaker failure and never disables it.
    rate_limit_cooldown: Positive = 10.0
    # Channels tried for one question at most (never the same channel twice).
    max_attempts: PositiveInt = 3
    # Threads shared by all zhipuai channels (its SDK streams synchronously).
    zhipuai_threads: PositiveInt = 16
    # The OpenAI-compatible endpoint a follower's own key is used with.
    own_key_base_url: HttpUrl = "https://api.openai.com/v1"
    # How often (seconds) a running router re-reads the disabled channels from storage, so that
    # `mpgpt channels enable|disable` reaches every server process.
    disabled_sync_interval: Positive = 5.0
