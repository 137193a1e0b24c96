"""An OpenAI-compatible channel (OpenAI, DeepSeek, Ollama, vLLM, ...) through the `openai` SDK.

The SDK runs on its aiohttp transport: on two cores it sustains ~520 streaming calls/s against
~350 with its default httpx transport. The SDK's own retries are off (`max_retries=0`): failing
over is the router's decision, and a retry inside the SDK would hide the first failure from it.

Deadlines are ours, checked around each await on the SDK (never around a `yield`, which would
cancel the consumer's code instead of ours): the first token must come within
`first_token_timeout`, the whole answer within `total_timeout`.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
import json
from collections.abc import AsyncIterator, Sequence
import openai
import structlog
from openai import AsyncOpenAI, DefaultAioHttpClient

from bot.providers.base import ChatMessage, Delta, ProviderError
from bot.providers.chunks import read_chunks, sse_pieces
from bot.providers.slots import StreamSlots
from bot.providers.errors import classify_status, is_connect_failure

log = structlog.get_logger(__name__)


class OpenAIChannel(StreamSlots):
    provider = "openai"

    def __init__(self, name: str, base_url: str, api_key: str, models: Sequence[str], *,
                 connect_timeout: float = 5.0, first_token_timeout: float = 30.0, total_timeout: float = 120.0,
                 max_streams: int = 64) -> None:
        super().__init__(name, models, connect_timeout=connect_timeout, first_token_timeout=first_token_timeout,
                         total_timeout=total_timeout, max_streams=max_streams)
        limits = openai.DEFAULT_CONNECTION_LIMITS.__class__(max_connections=max_streams,
                                                            max_keepalive_connections=max_streams)
        timeout = openai.Timeout(total_timeout, connect=connect_timeout, pool=connect_timeout)
        self._client = AsyncOpenAI(
            base_url=base_url or None, api_key=api_key, max_retries=0, timeout=timeout,
            http_client=DefaultAioHttpClient(timeout=timeout, limits=limits),
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, model: str, messages: Sequence[ChatMessage], *,
                     max_tokens: int | None = None) -> AsyncIterator[Delta]:
        # only given for token-priced models (some models refuse max_tokens; the others keep working)
        limit = {"max_tokens": max_tokens} if max_tokens is not None else {}
        opened = False
        async with self.slot() as deadlines:
            try:
                # The SDK makes the request (auth, base_url, error statuses); we read the SSE lines
                # ourselves instead of having it build a pydantic model per chunk. The messages go as
                # extra_body: the SDK walks every message of `messages` through its type transform
                # in Python (~0.13 ms each; a 10-turn conversation cost 3.7 ms before the request
                # left), while extra_body is sent as given, and its key replaces the empty list.
                async with AsyncExitStack() as stack:
                    async with asyncio.timeout_at(deadlines.first_at):
                        response = await stack.enter_async_context(
                            self._client.chat.completions.with_streaming_response.create(
                                model=model, messages=[], stream=True, stream_options={"include_usage": True},
                                extra_body={"messages": [m.wire() for m in messages]}, **limit,
                            ))
                    opened = True
                    pieces = sse_pieces(response.iter_lines())
                    async for item in read_chunks(pieces, deadlines.first_at, deadlines.total_at, messages):
                        yield item
            except ProviderError:
                raise
            except TimeoutError:
                raise deadlines.timed_out(self.name, asyncio.get_running_loop().time()) from None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - no raw SDK or transport error leaves a channel
                raise _to_provider_error(self.name, exc, opened) from None


def _to_provider_error(channel: str, exc: Exception, opened: bool) -> ProviderError:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        return classify_status(exc.status_code, body, str(exc.message))
    if isinstance(exc, openai.APIConnectionError):
        if opened:
            return ProviderError("protocol", f"{channel}: stream broke off: {type(exc.__cause__).__name__}")
        if isinstance(exc, openai.APITimeoutError) and not is_connect_failure(exc):
            return ProviderError("timeout", f"{channel}: request timed out")
        return ProviderError("connect", f"{channel}: cannot connect: {_root(exc)}")
    if isinstance(exc, openai.APIError):
        # An `error` event inside the stream: the SDK gives its body but no status.
        body = exc.body if isinstance(exc.body, dict) else {}
        return classify_status(None, {"error": body} if "error" not in body else body, str(exc.message))
    if isinstance(exc, (json.JSONDecodeError, ValueError, openai.APIResponseValidationError)):
        return ProviderError("protocol", f"{channel}: malformed chunk: {type(exc).__name__}")
    log.warning("provider_unexpected_error", channel=channel, error=type(exc).__name__)
    return ProviderError("protocol", f"{channel}: {type(exc).__name__}: {exc}")


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}"
