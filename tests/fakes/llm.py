"""A fake LLM provider: OpenAI's and ZhipuAI's chat-completions wire protocol on loopback.

It speaks what the real servers speak, so the SDKs run unmodified against it:
  POST {base_url}/chat/completions           OpenAI style, base_url = http://127.0.0.1:P/v1
  POST {zhipu_base_url}/chat/completions     ZhipuAI style, base = http://127.0.0.1:P/api/paas/v4
Streaming answers are Server-Sent Events (`data: {json}\\n\\n` ... `data: [DONE]\\n\\n`), chunked, with
`choices[0].delta.content`, a `finish_reason` on the last content chunk and usage where each provider
puts it: OpenAI sends one extra chunk with empty `choices` when `stream_options.include_usage` is set;
ZhipuAI puts usage into the chunk that carries `finish_reason`; some OpenAI-compatible servers repeat a
growing (cumulative) usage in every chunk.

Each request is answered by a `Script`: from the `script_for` callable if it returns one, else the next
queued script, else the default. Every request is recorded in `.requests`.

    async with FakeLLM() as llm:
        llm.queue(Script.rate_limited(), Script(text="hi"))
        ... AsyncOpenAI(base_url=llm.base_url, api_key="sk-test") ...
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aiohttp import web

UsageMode = Literal["final", "cumulative", "with_finish", "none"]

OPENAI_PATH = "/v1/chat/completions"
ZHIPU_PATH = "/api/paas/v4/chat/completions"
TRANSCRIBE_PATHS = ("/v1/audio/transcriptions", "/api/paas/v4/audio/transcriptions")
# OpenAI's list: anything else is answered 400 "Invalid file format", as the real endpoint does
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")


@dataclass
class Transcription:
    """One multipart POST to /audio/transcriptions, as received."""

    path: str
    model: str
    filename: str
    content_type: str
    audio: bytes
    fields: dict[str, str]
    api_key: str


@dataclass(frozen=True)
class Script:
    """How the fake answers one request."""

    text: str = "你好，我是测试模型。"
    # Explicit chunks; default: `text` split into pieces of `chunk_chars` characters.
    chunks: Sequence[str] | None = None
    chunk_chars: int = 4
    # Seconds before the response headers, before the first chunk, and between chunks.
    header_delay: float = 0.0
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    # A non-200 status answers with `error_body` (OpenAI's {"error": {...}} shape) and no stream.
    status: int = 200
    error_body: dict[str, Any] | None = None
    # Close the connection after this many content chunks: no finish_reason, no [DONE].
    cut_after: int | None = None
    # After this many content chunks, wait until `release` is set (a test looks at the stream meanwhile).
    hold_after: int | None = None
    release: asyncio.Event | None = None
    # Send a chunk that is not JSON after this many content chunks.
    malformed_after: int | None = None
    # None: "final" on the OpenAI path, "with_finish" on the ZhipuAI path.
    usage: UsageMode | None = None
    prompt_tokens: int = 17
    # None: one completion token per chunk.
    completion_tokens: int | None = None
    finish_reason: str = "stop"

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        n = max(1, self.chunk_chars)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)] or [""]

    # Errors as the providers send them.
    @classmethod
    def error(cls, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
              **kw: Any) -> Script:
        body = {"error": {"message": message, "type": type, "param": None, "code": code}}
        return cls(status=status, error_body=body, **kw)

    @classmethod
    def rate_limited(cls, **kw: Any) -> Script:
        return cls.error(429, "Rate limit reached for requests", type="requests", code="rate_limit_exceeded", **kw)

    @classmethod
    def insufficient_quota(cls, **kw: Any) -> Script:
        return cls.error(429, "You exceeded your current quota, please check your plan and billing details.",
                         type="insufficient_quota", code="insufficient_quota", **kw)

    @classmethod
    def server_error(cls, status: int = 500, **kw: Any) -> Script:
        return cls.error(status, "The server had an error while processing your request.", type="server_error",
                         **kw)

    @classmethod
    def unauthorized(cls, **kw: Any) -> Script:
        return cls.error(401, "Incorrect API key provided: sk-te****. You can find your API key at "
                         "https://platform.openai.com/account/api-keys.", code="invalid_api_key", **kw)

    @classmethod
    def bad_request(cls, **kw: Any) -> Script:
        return cls.error(400, "This model's maximum context length is 8192 tokens.",
                         code="context_length_exceeded", **kw)

    @classmethod
    def content_filter(cls, **kw: Any) -> Script:
        return cls.error(400, "The response was filtered due to the prompt triggering the content management "
                         "policy.", code="content_filter", **kw)

    @classmethod
    def zhipu_error(cls, status: int, code: str, message: str, **kw: Any) -> Script:
        """ZhipuAI's shape: {"error": {"code": "1301", "message": "..."}}."""
        return cls(status=status, error_body={"error": {"code": code, "message": message}}, **kw)


@dataclass
class RecordedRequest:
    path: str
    model: str
    messages: list[dict[str, Any]]
    authorization: str
    stream: bool
    body: dict[str, Any]
    # The api key the client used (a ZhipuAI JWT is verified and mapped back to its "id.secret" key).
    api_key: str
    received_at: float = field(default_factory=time.monotonic)

    @property
    def is_zhipu(self) -> bool:
        return self.path == ZHIPU_PATH


class FakeLLM:
    def __init__(self, default: Script | None = None, *,
                 script_for: Callable[[RecordedRequest], Script | None] | None = None,
                 zhipu_keys: Sequence[str] = ()) -> None:
        self.default = default or Script()
        self.script_for = script_for
        self.requests: list[RecordedRequest] = []
        self.transcriptions: list[Transcription] = []
        # what /audio/transcriptions hears: a text, or a callable of the request
        self.heard: str | Callable[[Transcription], str] = "今天天气怎么样"
        self.transcribe_delay = 0.0
        self._queue: deque[Script] = deque()
        self._zhipu_keys = {k.split(".", 1)[0]: k for k in zhipu_keys if "." in k}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Streams currently open, and the most at once (tests of max_streams read these).
        self.open_streams = 0
        self.max_open_streams = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        # OpenAI takes requests of many MB (pictures as data URLs): aiohttp's 1 MB default is not the API's
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(OPENAI_PATH, self._handle)
        app.router.add_post(ZHIPU_PATH, self._handle)
        for path in TRANSCRIBE_PATHS:
            app.router.add_post(path, self._transcribe)
        return app

    async def start(self, port: int = 0) -> FakeLLM:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def zhipu_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/paas/v4"

    def queue(self, *scripts: Script) -> None:
        self._queue.extend(scripts)

    def unqueue(self) -> list[Script]:
        """Drop the scripts no request has taken yet (a test that gave up before its request came)."""
        left, self._queue = list(self._queue), deque()
        return left

    # -- answering -------------------------------------------------------------------------------
    def _pick(self, rec: RecordedRequest) -> Script:
        if self.script_for is not None:
            chosen = self.script_for(rec)
            if chosen is not None:
                return chosen
        return self._queue.popleft() if self._queue else self.default

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response({"error": {"message": "We could not parse the JSON body of your request.",
                                                "type": "invalid_request_error", "param": None, "code": None}},
                                     status=400)
        auth = request.headers.get("Authorization", "")
        rec = RecordedRequest(path=request.path, model=str(body.get("model", "")), messages=body.get("messages", []),
                              authorization=auth, stream=bool(body.get("stream")), body=body,
                              api_key=self._api_key(auth))
        self.requests.append(rec)
        script = self._pick(rec)
        if script.usage is None:
            script = replace(script, usage="with_finish" if rec.is_zhipu else "final")
        if script.header_delay:
            await asyncio.sleep(script.header_delay)
        if script.status != 200:
            return web.json_response(script.error_body or {"error": {"message": "error", "type": "error"}},
                                     status=script.status)
        if not rec.stream:
            return await self._complete(rec, script)
        return await self._stream(request, rec, script)

    async def _transcribe(self, request: web.Request) -> web.Response:
        """OpenAI's (and ZhipuAI's) speech-to-text: multipart `file` + `model`; answers {"text": ...}."""
        def bad(message: str) -> web.Response:
            return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                                "param": None, "code": None}}, status=400)

        if not request.content_type.startswith("multipart/form-data"):
            return bad("Expected multipart/form-data")
        fields: dict[str, str] = {}
        audio, filename, ctype = None, "", ""
        async for part in await request.multipart():
            if part.name == "file":
                filename, ctype = part.filename or "", part.headers.get("Content-Type", "")
                audio = await part.read()
            elif part.name:
                fields[part.name] = await part.text()
        if audio is None or not fields.get("model"):
            return bad("You must provide a file and a model.")
        if filename.rsplit(".", 1)[-1].lower() not in AUDIO_EXTENSIONS:
            return bad(f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}")
        rec = Transcription(request.path, fields["model"], filename, ctype, bytes(audio), fields,
                            self._api_key(request.headers.get("Authorization", "")))
        self.transcriptions.append(rec)
        if self.transcribe_delay:
            await asyncio.sleep(self.transcribe_delay)
        text = self.heard(rec) if callable(self.heard) else self.heard
        return web.json_response({"text": text})

    def _api_key(self, auth: str) -> str:
        token = auth.removeprefix("Bearer ").strip()
        if token.count(".") == 2 and self._zhipu_keys:
            return self._verify_zhipu_jwt(token)
        return token

    def _verify_zhipu_jwt(self, token: str) -> str:
        """ZhipuAI's SDK may sign a short-lived HS256 JWT with the key's secret instead of sending the key."""
        head, payload, sig = token.split(".")
        try:
            claims = json.loads(_b64d(payload))
            full = self._zhipu_keys[claims["api_key"]]
        except (ValueError, KeyError):
            return ""
        secret = full.split(".", 1)[1].encode()
        expected = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _b64d(sig)) or claims.get("exp", 0) < time.time() * 1000:
            return ""
        return full

    @staticmethod
    def _usage(prompt: int, done: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    async def _complete(self, rec: RecordedRequest, script: Script) -> web.Response:
        await asyncio.sleep(script.first_delay)
        pieces = script.pieces()
        completion = script.completion_tokens if script.completion_tokens is not None else len(pieces)
        body: dict[str, Any] = {
            "id": f"chatcmpl-fake{next(self._ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": rec.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                         "finish_reason": script.finish_reason}],
        }
        if script.usage != "none":
            body["usage"] = self._usage(script.prompt_tokens, completion)
        return web.json_response(body)

    async def _stream(self, request: web.Request, rec: RecordedRequest, script: Script) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        self.open_streams += 1
        self.max_open_streams = max(self.max_open_streams, self.open_streams)
        try:
            await resp.prepare(request)
            await self._write_stream(request, resp, rec, script)
        except ConnectionResetError:
            pass  # the client went away (its own timeout, or it stopped reading): nothing to answer
        finally:
            self.open_streams -= 1
        return resp

    async def _write_stream(self, request: web.Request, resp: web.StreamResponse, rec: RecordedRequest,
                            script: Script) -> None:
        cid = f"chatcmpl-fake{next(self._ids)}"
        created = int(time.time())
        pieces = script.pieces()
        total = script.completion_tokens if script.completion_tokens is not None else len(pieces)
        finish_reason = script.finish_reason
        limit = rec.body.get("max_tokens")
        if isinstance(limit, int) and total > limit:  # as providers do: stop at max_tokens, say "length"
            pieces = pieces[: max(1, len(pieces) * limit // total)]
            total, finish_reason = limit, "length"
        include_usage = bool((rec.body.get("stream_options") or {}).get("include_usage"))
        mode = script.usage

        def chunk(delta: dict[str, Any], finish: str | None, usage: dict[str, int] | None,
                  choices: bool = True) -> bytes:
            obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                   "model": rec.model,
                                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices
                                   else []}
            if usage is not None:
                obj["usage"] = usage
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        await asyncio.sleep(script.first_delay)
        for i, piece in enumerate(pieces):
            if script.cut_after is not None and i >= script.cut_after:
                return _cut(request)
            if script.malformed_after is not None and i == script.malformed_after:
                await resp.write(b'data: {"id": "' + cid.encode() + b'", "choices": [{"delta": {"content": \n\n')
            if i and script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
            if script.hold_after is not None and i == script.hold_after and script.release is not None:
                await script.release.wait()
            done = min(total, round(total * (i + 1) / len(pieces)))
            usage = self._usage(script.prompt_tokens, done) if mode == "cumulative" else None
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            await resp.write(chunk(delta, None, usage))
        if script.cut_after is not None:
            return _cut(request)
        final = self._usage(script.prompt_tokens, total)
        finish_usage = final if mode in ("cumulative", "with_finish") else None
        await resp.write(chunk({}, finish_reason, finish_usage))
        if mode == "final" and include_usage:
            await resp.write(chunk({}, None, final, choices=False))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()


def _cut(request: web.Request) -> None:
    # Drop the connection mid-body: the client sees an unterminated chunked stream.
    if request.transport is not None:
        request.transport.abort()


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
