"""The chat service's view of the model side: `stream(model, messages, user=...)`.

This first gateway sends each model to the first configured channel that lists it; the router
(priorities, weights, failover, breakers) replaces it behind the same method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from bot.config import Config
from bot.providers.base import Channel, ChatMessage, Delta, ProviderError
from bot.providers.openai_channel import OpenAIChannel


def build_channels(cfg: Config) -> list[Channel]:
    channels: list[Channel] = []
    for ch in cfg.channels:
        if ch.provider == "openai":
            channels.append(OpenAIChannel(ch.name, ch.base_url, ch.api_key, ch.models))
    return channels


class SingleChannelGateway:
    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels = list(channels)

    async def stream(self, model: str, messages: Sequence[ChatMessage], *, user: str) -> AsyncIterator[Delta]:
        for channel in self.channels:
            if model in channel.models:
                async for delta in channel.stream(model, messages):
                    yield delta
                return
        raise ProviderError("bad_request", f"no channel serves model {model!r}")

    async def aclose(self) -> None:
        for channel in self.channels:
            await channel.aclose()
