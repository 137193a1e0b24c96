"""The page as this owner brands it: index.html filled from config once at start-up, the colours as a
small stylesheet (the CSP allows no inline style), and a favicon drawn in the brand colour.

Config values enter the HTML escaped; the page's own scripts read the unit and the title from the
<body>'s data attributes.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.config import Config

# the page before it is branded: outside static/, so its {{placeholders}} are never served as they are
TEMPLATE = Path(__file__).parent / "templates" / "index.html"


def index_html(cfg: Config) -> bytes:
    c, unit = cfg.companion, cfg.texts.unit
    footer = f"{unit}仅用于{c.account_name} AI 服务"
    if cfg.pay.enabled:  # who handles the money is only worth saying when money is taken
        footer = "支付由微信支付提供 · " + footer
    values = {"title": c.title, "unit": unit, "account": c.account_name, "footer": footer}
    text = TEMPLATE.read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", html.escape(value, quote=True))
    return text.encode("utf-8")


def brand_css(cfg: Config) -> bytes:
    c = cfg.companion
    return f":root {{ --brand: {c.color}; --page: {c.background}; }}\n".encode()


def favicon_svg(cfg: Config) -> bytes:
    """A speech bubble in the brand colour: small (well under 1 KB), no text, so no font is needed."""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
        f'<rect width="32" height="32" rx="7" fill="{cfg.companion.color}"/>'
        '<path d="M8 9h16a2 2 0 0 1 2 2v9a2 2 0 0 1-2 2h-9l-5 4v-4H8a2 2 0 0 1-2-2v-9a2 2 0 0 1 2-2z" fill="#fff"/>'
        "</svg>"
    ).encode()


# The page's own files go gzipped to a browser that takes it: a phone on a slow network downloads a
# third of the bytes. Only these types: the API's answers (sessions, balances) are never compressed.
_COMPRESSED = ("text/html", "text/css", "text/javascript", "application/javascript", "image/svg+xml")


@web.middleware
async def compress_page_files(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.method != "GET":  # only GETs are compressed; /wechat's POSTs leave at once
        return response
    if isinstance(response, web.FileResponse):  # its type is only looked up when it is sent
        ours = request.path.startswith("/static/") and request.path.endswith((".js", ".css", ".html"))
    else:
        ours = response.content_type in _COMPRESSED and len(getattr(response, "body", b"") or b"") > 512
    if ours and not response.prepared and "Content-Encoding" not in response.headers:
        response.headers["Vary"] = "Accept-Encoding"  # a cache in between keeps both forms apart
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            response.enable_compression(web.ContentCoding.gzip)
    return response


def setup_page(app: web.Application, cfg: Config) -> None:
    """Mount / (the page), /brand.css and the favicon; each built once, answered from memory."""
    page, css, icon = index_html(cfg), brand_css(cfg), favicon_svg(cfg)
    app.middlewares.append(compress_page_files)

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def brand(request: web.Request) -> web.Response:
        return web.Response(body=css, content_type="text/css", charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def favicon(request: web.Request) -> web.Response:
        return web.Response(body=icon, content_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    app.router.add_get("/", index, name="companion_index")
    app.router.add_get("/brand.css", brand, name="companion_brand")
    app.router.add_get("/favicon.svg", favicon, name="companion_favicon")
    # browsers ask for /favicon.ico on their own; an SVG answers there too (nosniff: the type decides)
    app.router.add_get("/favicon.ico", favicon, name="companion_favicon_ico")
