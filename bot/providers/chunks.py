"""Reading a provider's stream of chat-completion chunks: text as it comes, then one Usage.

Both SDKs hand us chunks of the same shape (`choices[0].delta.content`, `finish_reason`, `usage`).
Usage is the provider's *last* report: OpenAI sends it once at the end, ZhipuAI in the finish
chunk, and some servers repeat a growing total in every chunk, so summing would over-bill.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bot.providers.base import ChatMessage, Delta, ProviderError, Usage
from bot.providers.errors import estimate_usage, finish_error


async def read_chunks(chunks: AsyncIterator[Any], first_at: float, total_at: float,
                      messages: Sequence[ChatMessage]) -> AsyncIterator[Delta]:
    """Yield text deltas then one Usage; deadlines (loop time) for the first text and the whole answer.

    The deadline wraps each wait for a chunk, never a `yield`: a timeout that fired while the consumer
    holds the generator suspended would cancel the consumer's own code.
    """
    it = chunks.__aiter__()
    text: list[str] = []
    usage = None
    finish = None
    while True:
        try:
            async with asyncio.timeout_at(total_at if text else first_at):
                chunk = await it.__anext__()
        except StopAsyncIteration:
            break
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content = choice.delta.content if choice.delta is not None else None
        if content:
            text.append(content)
            yield content
        if choice.finish_reason:
            finish = choice.finish_reason
    if finish is None:
        raise ProviderError("protocol", "stream ended without a finish_reason (cut short)")
    err = finish_error(finish)
    if err is not None:
        raise err
    if usage is not None:
        yield Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)
    else:
        yield estimate_usage(messages, "".join(text))
