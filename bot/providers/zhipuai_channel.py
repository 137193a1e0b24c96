"""A ZhipuAI (GLM) channel through the `zhipuai` SDK, whose streaming is synchronous.

Each stream runs in a worker thread from a bounded pool shared by all zhipuai channels; the worker
hands every chunk to the event loop the moment it arrives (`call_soon_threadsafe` into an
asyncio.Queue), so the loop never blocks on the SDK. When the consumer stops (answer complete, deadline,
cancellation) a stop flag is set: the worker stops reading and closes the response at the next chunk,
or at the latest when its socket read times out (`first_token_timeout`) — a blocked read cannot be
interrupted from another thread, so that read timeout bounds how long a worker can linger.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import structlog
import zhipuai
from zhipuai.core import _errors as zerr

from bot.providers.base import ChatMessage, Delta, ProviderError
from bot.providers.chunks import read_chunks, sdk_pieces
from bot.providers.slots import StreamSlots
from bot.providers.errors import classify_status, is_connect_failure

log = structlog.get_logger(__name__)

_END = object()


def make_executor(threads: int) -> ThreadPoolExecutor:
    """The pool zhipuai channels share (config: router.zhipuai_threads)."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="zhipuai")


class _Call:
    """One stream's shared state between its worker thread and the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.stop = threading.Event()
        self.opened = False

    def put(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            self.stop.set()  # the loop is closed: nobody is listening any more

    async def items(self) -> AsyncIterator[Any]:
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class ZhipuAIChannel(StreamSlots):
    provider = "zhipuai"

    def __init__(self, name: str, base_url: str, api_key: str, models: Sequence[str], *,
                 executor: ThreadPoolExecutor, connect_timeout: float = 5.0, first_token_timeout: float = 30.0,
                 total_timeout: float = 120.0, max_streams: int = 64) -> None:
        super().__init__(name, models, connect_timeout=connect_timeout, first_token_timeout=first_token_timeout,
                         total_timeout=total_timeout, max_streams=max_streams)
        self._executor = executor
        # The read timeout is per socket read: it bounds both the wait for headers and a lingering worker.
        timeout = httpx.Timeout(first_token_timeout, connect=connect_timeout)
        self._http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=max_streams,
                                                                       max_keepalive_connections=max_streams))
        self._client = zhipuai.ZhipuAI(api_key=api_key, base_url=base_url or None, max_retries=0, timeout=timeout,
                                       http_client=self._http)

    async def aclose(self) -> None:
        self._http.close()

    async def stream(self, model: str, messages: Sequence[ChatMessage], *,
                     max_tokens: int | None = None) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        async with self.slot() as deadlines:
            call = _Call(loop)
            payload = [m.wire() for m in messages]
            try:
                loop.run_in_executor(self._executor, self._pump, call, model, payload, max_tokens)
                try:
                    pieces = sdk_pieces(call.items())
                    async for item in read_chunks(pieces, deadlines.first_at, deadlines.total_at, messages):
                        yield item
                except ProviderError:
                    raise
                except TimeoutError:
                    raise deadlines.timed_out(self.name, loop.time()) from None
                except Exception as exc:  # noqa: BLE001 - no raw SDK or transport error leaves a channel
                    raise _to_provider_error(self.name, exc, call.opened) from None
            finally:
                call.stop.set()

    def _pump(self, call: _Call, model: str, payload: list[dict[str, str]], max_tokens: int | None = None) -> None:
        """Runs in a worker thread: read the SDK's stream, hand each chunk over at once."""
        if call.stop.is_set():
            return  # waited in the pool past the consumer's patience
        try:
            limit = {"max_tokens": max_tokens} if max_tokens is not None else {}
            resp = self._client.chat.completions.create(model=model, messages=payload, stream=True, **limit)
            call.opened = True
            try:
                for chunk in resp:
                    if call.stop.is_set():
                        break
                    call.put(chunk)
            finally:
                resp.response.close()
            call.put(_END)
        except Exception as exc:  # noqa: BLE001 - classified on the loop side
            if not call.stop.is_set():
                call.put(exc)


def _status_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.text)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _to_provider_error(channel: str, exc: Exception, opened: bool) -> ProviderError:
    if isinstance(exc, zerr.APIStatusError):
        body = _status_body(exc.response)
        return classify_status(exc.status_code, body, f"HTTP {exc.status_code}")
    if isinstance(exc, zerr.APITimeoutError):
        if is_connect_failure(exc):
            return ProviderError("connect", f"{channel}: cannot connect")
        return ProviderError("timeout", f"{channel}: request timed out")
    if isinstance(exc, zerr.APIConnectionError):
        return ProviderError("connect", f"{channel}: cannot connect: {type(exc.__cause__).__name__}")
    if isinstance(exc, zerr.APIResponseError):
        # An `error` event inside the stream.
        data = exc.json_data if isinstance(exc.json_data, dict) else {}
        return classify_status(None, {"error": data}, exc.message)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError("timeout", f"{channel}: read timed out")
    if isinstance(exc, (httpx.TransportError, httpx.StreamError)):
        kind = "protocol" if opened else "connect"
        return ProviderError(kind, f"{channel}: stream broke off: {type(exc).__name__}")
    if isinstance(exc, ValueError):  # json.JSONDecodeError, pydantic's validation errors
        return ProviderError("protocol", f"{channel}: malformed chunk: {type(exc).__name__}")
    log.warning("provider_unexpected_error", channel=channel, error=type(exc).__name__)
    return ProviderError("protocol", f"{channel}: {type(exc).__name__}: {exc}")
