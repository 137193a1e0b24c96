"""The companion page. For now a placeholder that says what the page will offer."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()

_PLACEHOLDER = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mpgpt</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 2em auto; padding: 0 1em">
<h1>mpgpt</h1>
<p>在公众号里直接发送文字即可和 AI 对话。</p>
<p>额度查询与充值页面即将开放。</p>
</body></html>
"""


@routes.get("/", name="index")
async def index(request: web.Request) -> web.Response:
    return web.Response(text=_PLACEHOLDER, content_type="text/html", charset="utf-8")
