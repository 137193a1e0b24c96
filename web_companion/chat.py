"""The companion page's chat: `POST /api/chat` answers as Server-Sent Events, and the history.

Events: `delta` (text as it is written), `replace` (the whole text, when the final check changed
something already shown), `refusal` (reason code and the same sentence WeChat would show), `done`
(status, usage, credits charged, new balance). A browser that disconnects stops nothing: the
answer is finished, settled and kept, and the history shows it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import structlog
from aiohttp import web

from bot.chat.web import Started
from bot.keys import CONFIG, WEBCHAT
from bot.media.pictures import sniff
from bot.rules.base import Refusal
from web_companion import jsonin
from web_companion.views import Refused, error_response, int_param, json_body, refusals, session_user

log = structlog.get_logger(__name__)

MAX_MESSAGE_CHARS = 4000


def _sse(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _chat_body(request: web.Request) -> dict[str, Any]:
    """The question as JSON, which may carry a picture: read up to the picture limit (plus the
    question) instead of server.max_body_bytes — still JSON only, so no cross-site form can send it."""
    if request.content_type != "application/json":
        raise Refused(error_response(415, "请求格式错误", "json_required"))
    cfg = request.app[CONFIG]
    limit = cfg.media.max_picture_bytes * 4 // 3 + cfg.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Refused(error_response(413, "图片太大了", "picture_too_large"))
    raw = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        raw += chunk
        if len(raw) > limit:
            raise Refused(error_response(413, "图片太大了", "picture_too_large"))
    try:
        body = jsonin.loads(bytes(raw))  # bounded JSON, as every other companion body
    except (ValueError, UnicodeDecodeError):
        raise Refused(error_response(400, "请求内容不是有效的 JSON", "bad_json")) from None
    if not isinstance(body, dict):
        raise Refused(error_response(400, "请求内容应为 JSON 对象", "bad_json"))
    return body


def _picture(request: web.Request, value: Any) -> tuple[bytes, str] | None:
    """`image`: a data URL of a JPEG, PNG, GIF or WebP within media.max_picture_bytes (its bytes checked)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refused(error_response(400, "图片格式无效", "bad_picture"))
    head, _, b64 = value.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise Refused(error_response(400, "图片应为 data:image/...;base64 格式", "bad_picture"))
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(error_response(400, "图片格式无效", "bad_picture")) from None
    if len(data) > request.app[CONFIG].media.max_picture_bytes:
        raise Refused(error_response(413, "图片太大了", "picture_too_large"))
    mime = sniff(data)
    if mime is None:
        raise Refused(error_response(415, "只支持 JPEG、PNG、GIF 或 WebP 图片", "not_a_picture"))
    return data, mime


@refusals
async def chat(request: web.Request) -> web.StreamResponse:
    openid = await session_user(request)
    body = await _chat_body(request)
    picture = _picture(request, body.get("image"))
    message, model, conversation_id = body.get("message"), body.get("model"), body.get("conversation_id")
    if picture is not None and message is None:
        message = request.app[CONFIG].media.picture_prompt
    if not isinstance(message, str) or not message.strip():
        raise Refused(error_response(400, "请输入问题", "empty_message"))
    if len(message) > MAX_MESSAGE_CHARS:
        raise Refused(error_response(413, f"问题太长了（最多 {MAX_MESSAGE_CHARS} 字）", "message_too_long"))
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise Refused(error_response(400, "模型名称无效", "bad_model"))
    if conversation_id is not None and (isinstance(conversation_id, bool) or not isinstance(conversation_id, int)):
        raise Refused(error_response(400, "conversation_id 应为整数", "bad_conversation"))
    try:
        outcome = await request.app[WEBCHAT].ask(openid, message.strip(), model, conversation_id, picture)
    except LookupError:
        raise Refused(error_response(404, "没有这个对话", "conversation_not_found")) from None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    if isinstance(outcome, Refusal):
        await response.write(_sse("refusal", {"code": outcome.code, "text": outcome.text}))
        return response
    assert isinstance(outcome, Started)
    await response.write(_sse("start", {"conversation_id": outcome.conversation_id, "model": outcome.model}))
    try:
        async for event in request.app[WEBCHAT].stream(outcome):
            await response.write(_sse(event.name, event.data))
    except (ConnectionResetError, ConnectionError):
        # The browser went away; the generation goes on and is kept (see the module docstring).
        log.info("web_stream_left", answer=outcome.answer_id)
    return response


@refusals
async def models(request: web.Request) -> web.StreamResponse:
    openid = await session_user(request)
    return web.json_response({"models": await request.app[WEBCHAT].models_for(openid)})


@refusals
async def conversations(request: web.Request) -> web.StreamResponse:
    openid = await session_user(request)
    limit = int_param(request, "limit", 20, 1, 100)
    offset = int_param(request, "offset", 0, 0, 1_000_000)
    items = await request.app[WEBCHAT].conversations.list(openid, limit, offset)
    return web.json_response({"conversations": items, "offset": offset, "limit": limit})


@refusals
async def conversation(request: web.Request) -> web.StreamResponse:
    openid = await session_user(request)
    try:
        conversation_id = int(request.match_info["id"])
        if not 0 < conversation_id <= jsonin.MAX_INT:
            raise ValueError
    except ValueError:
        raise Refused(error_response(400, "对话编号应为整数", "bad_conversation")) from None
    limit = int_param(request, "limit", 50, 1, 200)
    offset = int_param(request, "offset", 0, 0, 1_000_000)
    turns = await request.app[WEBCHAT].conversations.turns(openid, conversation_id, limit, offset)
    if turns is None:
        raise Refused(error_response(404, "没有这个对话", "conversation_not_found"))
    labels = request.app[WEBCHAT].labels  # every assistant turn kept is generated text
    return web.json_response({"id": conversation_id, "turns": turns, "offset": offset, "limit": limit,
                              "ai_label": labels.text, "ai_label_position": "start" if labels.at_start else "end"})


@refusals
async def new_conversation(request: web.Request) -> web.StreamResponse:
    """The page's "new conversation": the same as 新对话 in WeChat."""
    openid = await session_user(request)
    await json_body(request)  # JSON only: another site's plain form cannot end the follower's conversation
    await request.app[WEBCHAT].conversations.close_all(openid)
    return web.json_response({"ok": True})


def setup_webchat(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/chat", chat, name="webchat_ask")
    r.add_get("/api/models", models, name="webchat_models")
    r.add_get("/api/conversations", conversations, name="webchat_conversations")
    r.add_post("/api/conversations/new", new_conversation, name="webchat_new_conversation")
    r.add_get("/api/conversations/{id}", conversation, name="webchat_conversation")
