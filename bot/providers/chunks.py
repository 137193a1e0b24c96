"""Reading a provider's stream of chat-completion chunks: text as it comes, then one Usage.

Both SDKs hand us chunks of the same shape (`choices[0].delta.content`, `finish_reason`, `usage`).
Usage is the provider's *last* report: OpenAI sends it once at the end, ZhipuAI in the finish
chunk, and some servers repeat a growing total in every chunk, so summing would over-bill.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bot.providers.base import ChatMessage, Delta, ProviderError, Usage
from bot.providers.errors import classify_status, estimate_usage, finish_error


# One chunk as the stream reader needs it: (text delta, finish_reason, (prompt, completion) usage).
Piece = tuple[str | None, str | None, tuple[int, int] | None]


async def sdk_pieces(chunks: AsyncIterator[Any]) -> AsyncIterator[Piece]:
    """Pieces from an SDK's parsed chunk objects (the zhipuai SDK)."""
    async for chunk in chunks:
        usage = chunk.usage
        used = (usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage is not None else None
        if not chunk.choices:
            yield None, None, used
            continue
        choice = chunk.choices[0]
        yield (choice.delta.content if choice.delta is not None else None), choice.finish_reason, used


async def sse_pieces(lines: AsyncIterator[str]) -> AsyncIterator[Piece]:
    """Pieces straight from the OpenAI wire format (`data: {json}` lines, then `data: [DONE]`).

    Parsing the JSON ourselves instead of letting the SDK build a pydantic model per chunk is most of
    the CPU a streaming call costs (bench/RESULTS.md, provider layer)."""
    async for line in lines:
        if not line.startswith("data:"):
            continue  # comments, `event:` lines, blank keep-alives
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderError("protocol", "malformed chunk: not JSON") from None
        if not isinstance(chunk, dict):
            raise ProviderError("protocol", "malformed chunk: not an object")
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            raise classify_status(None, {"error": error}, str(error.get("message", "")))
        usage = chunk.get("usage")
        used = ((usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                if isinstance(usage, dict) else None)
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            yield None, None, used
            continue
        delta = choices[0].get("delta") or {}
        yield (delta.get("content") if isinstance(delta, dict) else None), choices[0].get("finish_reason"), used


async def read_chunks(pieces: AsyncIterator[Piece], first_at: float, total_at: float,
                      messages: Sequence[ChatMessage]) -> AsyncIterator[Delta]:
    """Yield text deltas then one Usage; deadlines (loop time) for the first text and the whole answer.

    The deadline wraps each wait for a chunk, never a `yield`: a timeout that fired while the consumer
    holds the generator suspended would cancel the consumer's own code.
    """
    it = pieces.__aiter__()
    text: list[str] = []
    usage = None
    finish = None
    while True:
        try:
            async with asyncio.timeout_at(total_at if text else first_at):
                content, finish_reason, used = await it.__anext__()
        except StopAsyncIteration:
            break
        if used is not None:
            usage = used  # the last report counts: some providers repeat a growing total
        if content:
            text.append(content)
            yield content
        if finish_reason:
            finish = finish_reason
    if finish is None:
        raise ProviderError("protocol", "stream ended without a finish_reason (cut short)")
    err = finish_error(finish)
    if err is not None:
        raise err
    if usage is not None:
        yield Usage(usage[0], usage[1])
    else:
        yield estimate_usage(messages, "".join(text))
