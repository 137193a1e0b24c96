"""The companion page's edge: the page, its JSON API and the web OAuth hops.

    setup_companion(app, cfg)     # in the app factory, after the database (and pay) cleanup_ctx

adds the routes and one cleanup_ctx that builds the services (app[COMPANION]). Handlers are thin:
parse, call a service, map its answer to a status. Errors are JSON `{"error": "<what the user
reads>", "reason": "<machine word>"}`: 400/415 bad input, 401 not logged in, 404 unknown, 429 too
many requests, 502/503 WeChat Pay trouble or top-ups off.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog
from aiohttp import web

from bot import metrics
from bot.config import Config
from bot.economics.codes import Redeemer
from bot.economics.invites import LINK_PATH, Inviter
from bot.keys import DB, HTTP, PAY
from bot.pay.service import OrderFailed, ProductNotFound
from storage.codes import CodeRepo
from storage.invites import InviteRepo
from storage.rate_events import Attempts
from web_companion import oauth
from web_companion.account import HISTORY_PAGE, AccountView
from web_companion.clientip import client_ip, from_trusted_proxy
from web_companion.keys import COMPANION, Companion
from web_companion.login import Logins, TooManyWaits
from web_companion.sessions import COOKIE, Sessions
from web_companion.page import setup_page
from web_companion.shop import NOT_OPEN, in_wechat, order_view, product_view
from web_companion.views import error_response, int_param, json_body, refusals, session_user

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
STATE_COOKIE = "mpgpt_oauth_state"
WAIT_COOKIE = "mpgpt_login_wait"
INVITE_COOKIE = "mpgpt_invite"
# An invite code as InviteRepo makes them (8 of 31 unambiguous characters); anything else is ignored.
_INVITE_CODE = re.compile(r"[2-9A-HJKMNP-Z]{8}")
# The page's own files only; QR codes arrive as data: images; WeixinJSBridge is WeChat's, not a script.
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

# -- helpers only these views use ----------------------------------------------------------------


def _client_ip(request: web.Request, cfg: Config) -> str:
    return client_ip(request, cfg.companion.client_ip_header, cfg.server.trusted_proxies)


def _https(request: web.Request, cfg: Config) -> bool:
    """Cookies are Secure whenever the page is served over https: a public_url of https (the usual
    TLS proxy in front), a TLS socket, or X-Forwarded-Proto: https from a trusted proxy."""
    if cfg.server.public_url.lower().startswith("https://") or request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and from_trusted_proxy(request, cfg.server.trusted_proxies)


def _unit(request: web.Request) -> str:
    return request.app[COMPANION].cfg.texts.unit


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: float) -> None:
    response.set_cookie(name, value, max_age=int(max_age), path="/", httponly=True, samesite="Lax",
                        secure=_https(request, request.app[COMPANION].cfg))


# -- the page -----------------------------------------------------------------------------------------


_SECURITY_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                     "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response the app sends (pages, static files, the API, errors, streams): a page of
    ours never runs another site's script or sits in another site's frame, and no file is sniffed
    into a type it is not. A handler that sets its own policy keeps it."""
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


# -- login --------------------------------------------------------------------------------------------

@refusals
async def login(request: web.Request) -> web.StreamResponse:
    """A one-time link's token (the page reads it from the link's fragment) logs this browser in."""
    companion = request.app[COMPANION]
    body = await json_body(request)
    token = body.get("token")
    if not isinstance(token, str) or not token:
        return error_response(400, "缺少登录链接", "token_required")
    openid = await companion.login.redeem_link(token[:128])
    if openid is None:
        word = (companion.cfg.commands.login or ("登录",))[0]
        return error_response(401, f"登录链接已失效或已使用，请在公众号重新发送「{word}」。", "invalid")
    return await _logged_in(request, web.json_response({"ok": True}), openid, "code")


@refusals
async def login_wait(request: web.Request) -> web.StreamResponse:
    """A browser without the link: its short code to send in chat, or (once claimed) its session."""
    companion = request.app[COMPANION]
    await json_body(request)
    try:
        state = await companion.login.wait(request.cookies.get(WAIT_COOKIE), _client_ip(request, companion.cfg))
    except TooManyWaits:
        return error_response(429, "请求登录码太频繁，请稍后再试。", "limited")
    if state.openid is not None:
        response = web.json_response({"ok": True})
        response.del_cookie(WAIT_COOKIE, path="/")
        return await _logged_in(request, response, state.openid, "code")
    word = (companion.cfg.commands.login or ("登录",))[0]
    response = web.json_response({"ok": False, "code": state.code, "expires_in": round(state.expires_in, 1),
                                  "send": f"{word} {state.code}"})
    if state.secret is not None:
        _set_cookie(request, response, WAIT_COOKIE, state.secret, companion.cfg.companion.login_code_ttl)
    return response


async def _logged_in(request: web.Request, response: web.StreamResponse, openid: str, method: str) -> web.StreamResponse:
    companion = request.app[COMPANION]
    token = await companion.sessions.start(openid, method)
    _set_cookie(request, response, COOKIE, token, companion.sessions.lifetime)
    invite = request.cookies.get(INVITE_COOKIE)
    if invite is not None:
        if companion.inviter is not None and _INVITE_CODE.fullmatch(invite):
            await companion.inviter.arrived(openid, invite)
        response.del_cookie(INVITE_COOKIE, path="/")  # tried once, whatever the outcome
    return response


async def invite_link(request: web.Request) -> web.StreamResponse:
    """An invite link: keep its code in a cookie until this browser logs in (which records the
    invitation if the follower is new), then show the page. A malformed code is not kept."""
    cfg = request.app[COMPANION].cfg
    code = request.match_info["code"].strip().upper()
    response = _redirect("/")
    if cfg.invites.enabled and _INVITE_CODE.fullmatch(code):
        _set_cookie(request, response, INVITE_COOKIE, code, cfg.invites.window)
    return response


@refusals
async def logout(request: web.Request) -> web.StreamResponse:
    await json_body(request)  # JSON only: another site's form cannot log the follower out
    await request.app[COMPANION].sessions.end(request.cookies.get(COOKIE))
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/")
    return response


# -- web OAuth ----------------------------------------------------------------------------------------


async def oauth_start(request: web.Request) -> web.StreamResponse:
    cfg = request.app[COMPANION].cfg
    if not cfg.companion.oauth:
        return error_response(404, "未开启微信授权登录", "oauth_off")
    state = secrets.token_urlsafe(16)
    response = _redirect(oauth.authorize_url(cfg, state))
    _set_cookie(request, response, STATE_COOKIE, state, 600)
    return response


async def oauth_callback(request: web.Request) -> web.StreamResponse:
    cfg = request.app[COMPANION].cfg
    if not cfg.companion.oauth:
        return error_response(404, "未开启微信授权登录", "oauth_off")
    failed = _redirect("/?login=failed")
    failed.del_cookie(STATE_COOKIE, path="/")
    state, expected = request.query.get("state", ""), request.cookies.get(STATE_COOKIE, "")
    code = request.query.get("code", "")
    # The state ties the callback to the browser that started it (no logging in someone else's session).
    if not code or not expected or not secrets.compare_digest(state.encode(), expected.encode()):
        log.warning("companion.oauth_bad_state", has_code=bool(code))
        metrics.login_attempted("oauth", "invalid")
        return failed
    try:
        openid = await oauth.exchange(request.app[HTTP], cfg, code)
    except oauth.OAuthFailed as e:
        log.warning("companion.oauth_failed", problem=str(e))
        metrics.login_attempted("oauth", "error")
        return failed
    metrics.login_attempted("oauth", "ok")
    response = _redirect("/")
    response.del_cookie(STATE_COOKIE, path="/")
    return await _logged_in(request, response, openid, "oauth")


# -- account, products, orders -------------------------------------------------------------------------


@refusals
async def me(request: web.Request) -> web.StreamResponse:
    openid = await session_user(request)
    offset = int_param(request, "offset", 0, 0, 1_000_000)
    limit = int_param(request, "limit", HISTORY_PAGE, 1, 50)
    companion = request.app[COMPANION]
    body = await companion.account.me(openid, offset, limit)
    body["invite"] = await companion.inviter.page_view(openid) if companion.inviter is not None else None
    return web.json_response(body)


async def products(request: web.Request) -> web.StreamResponse:
    pay = request.app.get(PAY)
    if pay is None:
        return web.json_response({"open": False, "message": NOT_OPEN, "products": []})
    # Read from storage each time: the owner may change what is on sale while the server runs.
    on_sale = await pay.load_products()
    return web.json_response({"open": True, "message": None, "products": [product_view(p, _unit(request)) for p in on_sale]})


@refusals
async def create_order(request: web.Request) -> web.StreamResponse:
    openid = await session_user(request)
    body = await json_body(request)
    pay = request.app.get(PAY)
    if pay is None:
        return error_response(503, NOT_OPEN, "topups_closed")
    product_id, kind = body.get("product_id"), body.get("kind")
    if not isinstance(product_id, str) or not product_id:
        return error_response(400, "请选择要购买的套餐", "product_required")
    if kind is None:
        kind = "jsapi" if in_wechat(request.headers.get("User-Agent", "")) else "native"
    if kind not in ("native", "jsapi"):
        return error_response(400, "支付方式应为 native 或 jsapi", "bad_kind")
    c = request.app[COMPANION].cfg.companion
    if not await request.app[COMPANION].attempts.admit(f"orders:{openid}", c.order_limit, c.order_window, time.time()):
        return error_response(429, "下单太频繁，请稍后再试。", "limited")
    try:
        checkout = await pay.create_order(openid, product_id, kind)
    except ProductNotFound:
        return error_response(404, "该套餐不存在或已下架", "no_such_product")
    except OrderFailed as e:
        status = 503 if e.retry else 502
        return error_response(status, "微信支付暂时无法下单，请稍后再试。", "pay_unavailable")
    return web.json_response(order_view(checkout.order, checkout, _unit(request)))


@refusals
async def get_order(request: web.Request) -> web.StreamResponse:
    openid = await session_user(request)
    pay = request.app.get(PAY)
    order = await pay.order_for(openid, request.match_info["no"]) if pay is not None else None
    if order is None:
        return error_response(404, "没有这个订单", "no_such_order")
    view = order_view(order, unit=_unit(request))
    view["balance"] = await request.app[COMPANION].account.exact_balance(openid)
    return web.json_response(view)


# -- redemption codes ---------------------------------------------------------------------------------

# Outcome -> HTTP status; the body carries the sentence the follower reads either way.
_REDEEM_STATUS = {"redeemed": 200, "mine": 200, "used": 409, "expired": 410, "disabled": 410, "invalid": 400,
                  "limited": 429}


@refusals
async def redeem(request: web.Request) -> web.StreamResponse:
    openid = await session_user(request)
    body = await json_body(request)
    code = body.get("code")
    companion = request.app[COMPANION]
    if not isinstance(code, str) or not code.strip():
        return error_response(400, companion.cfg.texts.redeem_usage, "code_required")
    result, text = await companion.redeemer.redeem(openid, code[:64])
    status = _REDEEM_STATUS[result.outcome]
    if status != 200:
        response = error_response(status, text, result.outcome)
        if status == 429:
            response.headers["Retry-After"] = str(max(1, int(result.retry_after + 0.999)))
        return response
    return web.json_response({"ok": True, "outcome": result.outcome, "credits": result.credits, "message": text,
                              "balance": await companion.account.exact_balance(openid)})


# -- mounting -----------------------------------------------------------------------------------------


def setup_companion(app: web.Application, cfg: Config, *, clock: Callable[[], float] = time.time) -> None:
    """Mount the page and its API on `app` (app[DB] must be open by the time its cleanup_ctx runs;
    app[HTTP] too when companion.oauth is on)."""

    async def companion_ctx(app: web.Application) -> AsyncIterator[None]:
        db = app[DB]
        account = AccountView(cfg, db, clock)
        redeemer = Redeemer(cfg, CodeRepo(db, clock), account.ledger.balance_milli, open_account=account.wallet.open_day)
        app[COMPANION] = Companion(cfg, Logins(cfg, db, clock), await Sessions.open(cfg, db, clock), account,
                                   redeemer, Attempts(db), Inviter(cfg, InviteRepo(db, clock)))
        yield

    app.cleanup_ctx.append(companion_ctx)
    app.on_response_prepare.append(_security_headers)
    r = app.router
    setup_page(app, cfg)
    r.add_static("/static/", STATIC, name="companion_static")
    r.add_post("/api/login", login, name="companion_login")
    r.add_post("/api/login/wait", login_wait, name="companion_login_wait")
    r.add_post("/api/logout", logout, name="companion_logout")
    r.add_get("/api/me", me, name="companion_me")
    r.add_get("/api/products", products, name="companion_products")
    r.add_post("/api/orders", create_order, name="companion_create_order")
    r.add_get("/api/orders/{no}", get_order, name="companion_order")
    r.add_post("/api/redeem", redeem, name="companion_redeem")
    r.add_get(LINK_PATH + "{code}", invite_link, name="companion_invite_link")
    r.add_get("/auth/wechat", oauth_start, name="companion_oauth")
    r.add_get(oauth.CALLBACK_PATH, oauth_callback, name="companion_oauth_callback")
