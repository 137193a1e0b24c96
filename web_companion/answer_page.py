"""The answer page's edge: `GET /a/<token>` (the page, the text so far in its HTML) and
`GET /a/<token>/events` (Server-Sent Events: `replace`, `delta`, `done`).

No login: the token is the capability. A malformed, unknown or expired token gets the same plain
404 page. The page is readable without JavaScript (the text is in the HTML, escaped); with it,
markdown.js renders the answer as the web chat does and answer.js follows the stream.

Implicit AI labels: `<meta name="ai-generated" content="true">`, `<meta name="AIGC" content=JSON>`
in the shape of GB 45438-2025's metadata (Label, ContentProducer, ProduceID), and
`data-ai-generated="true"` on the answer's element.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

import structlog
from aiohttp import web

from bot.keys import ANSWER_PAGES, CONFIG

log = structlog.get_logger(__name__)

_STATUS = {"generating": "正在生成…", "done": "", "cut": "回答不完整", "failed": "回答失败", "timed_out": "回答超时"}
# The token in the address must not travel on to another site, nor the page be kept by a cache.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow"}

_HEAD = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="format-detection" content="telephone=no">
<meta name="robots" content="noindex, nofollow">
<link rel="icon" href="data:,">
{meta}<title>{title}</title>
<link rel="stylesheet" href="/static/app.css">
<link rel="stylesheet" href="/static/chat.css">
<link rel="stylesheet" href="/static/answer.css">
</head>
<body>
<header class="bar"><h1>{title}</h1></header>
<main>
"""

_NOT_FOUND = _HEAD.format(meta="", title="页面不存在") + """<div class="card">
<p>这个回答链接不存在或已过期。</p>
<p class="muted">请回到公众号重新提问，或回复「继续」获取回答。</p>
</div>
</main>
</body>
</html>
"""


def _not_found() -> web.Response:
    return web.Response(status=404, text=_NOT_FOUND, content_type="text/html", headers=_HEADERS)


def _label(text: str | None, cls: str) -> str:
    return f'<p class="ai-label {cls}">{escape(text)}</p>\n' if text else ""


async def page(request: web.Request) -> web.StreamResponse:
    pages, cfg = request.app[ANSWER_PAGES], request.app[CONFIG]
    token = request.match_info["token"]
    found = await pages.open(token)
    if found is None:
        return _not_found()
    label, at_start = pages.label(found.status), cfg.ai_label.position == "start"
    aigc = json.dumps({"Label": "1", "ContentProducer": "mpgpt", "ProduceID": pages.produce_id(found)},
                      separators=(",", ":"))
    meta = ('<meta name="ai-generated" content="true">\n'
            f'<meta name="AIGC" content="{escape(aigc)}">\n')
    title = escape(cfg.answer_page.title)
    live = " live" if not found.finished else ""
    body = (
        f'<div class="turn me"><div class="bubble" id="question">{escape(found.question)}</div></div>\n'
        f'<article id="answer" class="turn bot{live}" data-ai-generated="true" data-status="{escape(found.status)}"'
        f' data-events="/a/{escape(token)}/events">\n'
        + (_label(label, "top") if at_start else "")
        + f'<div id="answer-text" class="md plain">{escape(found.text)}</div>\n'
        + (_label(label, "bottom") if not at_start else "")
        + '<div class="turn-foot"><button type="button" id="copy" class="copy" hidden>复制</button>'
        f'<span id="answer-status" class="meta">{_STATUS.get(found.status, "")}</span></div>\n'
        "</article>\n"
        + ('<noscript><p class="muted">回答仍在生成，刷新本页查看最新内容。</p></noscript>\n' if live else "")
        + "</main>\n"
        '<script src="/static/markdown.js"></script>\n<script src="/static/answer.js"></script>\n'
        "</body>\n</html>\n"
    )
    return web.Response(text=_HEAD.format(meta=meta, title=title) + body, content_type="text/html", headers=_HEADERS)


def _sse(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    pages = request.app[ANSWER_PAGES]
    found = await pages.open(request.match_info["token"])
    if found is None:
        return _not_found()
    response = web.StreamResponse(headers={**_HEADERS, "Content-Type": "text/event-stream; charset=utf-8",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        async for event in pages.stream(found):
            await response.write(b": keepalive\n\n" if event.name == "keepalive" else _sse(event.name, event.data))
    except (ConnectionResetError, ConnectionError):
        log.info("answer_page_left", answer=found.answer_id)
    return response


def setup_answer_pages(app: web.Application) -> None:
    """Mount the page (app[ANSWER_PAGES] is built with the chat, once the database is open)."""
    app.router.add_get("/a/{token}", page, name="answer_page")
    app.router.add_get("/a/{token}/events", events, name="answer_page_events")
