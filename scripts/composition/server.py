"""The whole server: the aiohttp app for /wechat, WeChat Pay and the companion page.

Resources are opened and closed in cleanup_ctx generators, in order: database, HTTP client, the
chat machinery (gateway, generator, background recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from bot import metrics
from bot.chat.admission import Admission
from bot.chat.commands import Commands
from bot.chat.delivery import Pusher
from bot.chat.generation import Generator
from bot.chat.media import PictureQuestions, VoiceQuestions
from bot.chat.own_keys import OwnKeys
from bot.chat.pages import AnswerPages
from bot.chat.service import ChatService
from bot.chat.typing import Typing
from bot.chat.web import WebChat
from bot.config import Config
from bot.economics.codes import Redeemer
from bot.economics.invites import Inviter
from bot.keys import ANSWER_PAGES, CHAT, CONFIG, DB, GENERATOR, HTTP, ROUTER, SIGNED_REQUESTS, WEBCHAT, WECHAT, WECHAT_API
from bot.media.guard import HostGuard
from bot.media.pictures import PictureSource, QuestionPictures
from bot.media.voice import Listener
from bot.metrics_http import record_request, setup_metrics
from bot.pay.routes import setup_pay
from bot.providers.router import Router
from bot.providers.speech import SpeechChannel
from bot.rules.chain import answer_check, build_chain, word_filter
from bot.wechat import edge
from bot.wechat.api import WeChatAPI
from bot.wechat.protocol import WeChatProtocol
from scripts.composition import database
from storage.answer_pages import AnswerPageRepo
from storage.answers import AnswerRepo
from storage.codes import CodeRepo
from storage.invites import InviteRepo
from storage.conversations import ConversationRepo
from storage.db import Database
from storage.generations import DisabledChannelRepo, GenerationRepo, ModelChoiceRepo
from storage.inbound import InboundRepo
from storage.ledger import Ledger
from storage.own_keys import OwnKeyRepo
from storage.pgpipeline import StorageBusy
from storage.pictures import PictureRepo
from storage.rate_events import Attempts, RateEvents
from storage.tokens import TokenRepo
from storage.users import UserRepo
from storage.wechat_requests import SignedRequests
from web_companion.answer_page import setup_answer_pages
from web_companion.chat import setup_webchat
from web_companion.login import Logins
from web_companion.routes import setup_companion
from web_companion.track import setup_tracking

log = structlog.get_logger(__name__)


def process_holder() -> str:
    """A name for this process in leases: unique even for two processes on one host."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def _database(app: web.Application) -> AsyncIterator[None]:
    db = database(app[CONFIG])
    await db.open()
    app[DB] = db
    app[SIGNED_REQUESTS] = SignedRequests(db)
    yield
    await db.close()


async def _http(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        yield


async def _recovery_loop(cfg: Config, db: Database, generator: Generator, pusher: Pusher | None) -> None:
    """Crash recovery and housekeeping, safe in every process at once (each step claims its work)."""
    ledger, rate_events, signed, attempts = Ledger(db), RateEvents(db), SignedRequests(db), Attempts(db)
    stale_after = cfg.chat.generation_deadline + cfg.chat.lease_seconds
    while True:
        try:
            await db.sync_clock()
            await generator.recover()
            if pusher is not None:
                await pusher.push_pending()
            # reservations of generations that can no longer finish (their process died)
            await ledger.sweep_stale(stale_after)
            await rate_events.prune(time.time() - cfg.rules.rate_window)
            await signed.prune(time.time() - cfg.wechat.timestamp_tolerance)
            await attempts.prune(time.time() - max(cfg.companion.failure_window, cfg.companion.order_window))
        except Exception:  # storage hiccups must not end the loop
            log.exception("recovery_failed")
        await asyncio.sleep(cfg.chat.recovery_interval)


async def _chat(app: web.Application) -> AsyncIterator[None]:
    cfg, db = app[CONFIG], app[DB]
    holder = process_holder()
    answers = AnswerRepo(db)
    router = Router.from_config(cfg, generations=GenerationRepo(db), disabled=DisabledChannelRepo(db))
    await router.load_disabled()
    words = word_filter(cfg)
    chain = build_chain(cfg, db, words)
    own_keys = OwnKeys(cfg.chat.key_secret, OwnKeyRepo(db)) if cfg.chat.allow_own_keys else None
    if own_keys is not None:
        await own_keys.upgrade()  # rows from before migration 0011 (idempotent in every process)
    pusher, typing = None, None
    # media/get (voice, pictures) needs the shared access_token, on every account type
    api = WeChatAPI(cfg.wechat, app[HTTP], TokenRepo(db)) if cfg.wechat.app_id and cfg.wechat.app_secret else None
    if cfg.wechat.mode == "active":
        assert api is not None  # the config demands app_id and app_secret in active mode
        app[WECHAT_API] = api
        pusher = Pusher(cfg, api, answers, holder, pages=AnswerPageRepo(db), clock=db.clock)
        typing = Typing(cfg, api)
    speech, voice = _speech(cfg, api)
    picture_repo = PictureRepo(db)
    picture_source = PictureSource(app[HTTP], HostGuard(cfg.media.hosts, cfg.wechat.api_base), api,
                                   max_bytes=cfg.media.max_picture_bytes, timeout=cfg.media.timeout)

    async def after_finish(answer) -> None:
        if pusher is not None and answer.route == "push":
            await pusher.push_pending(answer.id)

    conversations, ledger = ConversationRepo(db), Ledger(db, on_moved=metrics.credits_moved)
    generator = Generator(cfg, answers, conversations, router, ledger, answer_check(cfg, words), holder,
                          own_key_for=own_keys.key_for if own_keys else None, after_finish=after_finish,
                          pictures=QuestionPictures(picture_repo, picture_source), clock=db.clock)
    redeemer = Redeemer(cfg, CodeRepo(db), ledger.balance_milli, open_account=chain.wallet.open_day)
    commands = Commands(cfg, router, ModelChoiceRepo(db), own_keys, chain.wallet.balance_text, Logins(cfg, db),
                        open_account=chain.wallet.open_day, redeemer=redeemer,
                        inviter=Inviter(cfg, InviteRepo(db)))
    app[GENERATOR] = generator
    app[ROUTER] = router
    admission = Admission(cfg, router, chain, commands, own_keys)

    async def tier_of(openid: str) -> str:
        account = await ledger.account(openid)
        return account.tier if account is not None else "free"

    pictures = PictureQuestions(cfg, picture_repo, picture_source, router.catalogue, commands, tier_of)
    app[CHAT] = ChatService(cfg, inbound=InboundRepo(db), answers=answers, users=UserRepo(db),
                            conversations=conversations, generator=generator, admission=admission,
                            commands=commands, holder=holder, voice=voice, pictures=pictures, typing=typing,
                            clock=db.clock)
    app[ANSWER_PAGES] = AnswerPages(cfg, AnswerPageRepo(db), generator)
    app[WEBCHAT] = WebChat(cfg, answers=answers, conversations=conversations, generator=generator,
                           admission=admission, router=router, commands=commands, ledger=ledger, holder=holder,
                           pictures=pictures, clock=db.clock)
    loop_task = asyncio.create_task(_recovery_loop(cfg, db, generator, pusher))
    # Everything built so far lives as long as the process: keep the collector from walking it
    # again and again (a full collection over the SDKs' objects stalled every request ~70 ms).
    gc.freeze()
    log.info("chat_ready", mode=cfg.wechat.mode, holder=holder,
             event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0])
    yield
    loop_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop_task
    await generator.aclose()
    if typing is not None:
        await typing.aclose()
    await router.aclose()
    if speech is not None:
        await speech.aclose()


def _speech(cfg: Config, api: WeChatAPI | None) -> tuple[SpeechChannel | None, VoiceQuestions]:
    """The speech channel ([speech] channel) and what hears voice messages with it."""
    s = cfg.speech
    if not s.channel or api is None:
        return None, VoiceQuestions(cfg, None)
    channel = SpeechChannel(next(ch for ch in cfg.channels if ch.name == s.channel), s)
    listener = Listener(api, channel, ffmpeg=s.ffmpeg, convert_timeout=s.convert_timeout, max_bytes=s.max_bytes,
                        download_timeout=cfg.media.timeout)
    return channel, VoiceQuestions(cfg, listener)


@web.middleware
async def _requests(request: web.Request, handler) -> web.StreamResponse:
    """Every request passes here once: counted and timed for /metrics, and an unexpected failure is
    logged once and answered without a traceback. (One layer for both: each costs every request.)"""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    except StorageBusy:
        # the database cannot keep up (a flood): refused at once, and the client may come back
        status = 503
        log.warning("request_refused_storage_busy", route=request.match_info.route.name)
        return web.json_response({"error": "busy, try again shortly"}, status=503, headers={"Retry-After": "1"})
    except Exception:
        log.exception("request_failed", route=request.match_info.route.name)
        return web.json_response({"error": "internal error"}, status=500)
    finally:
        record_request(request, status, time.perf_counter() - started)


def _topup_notice(app: web.Application):
    """After a top-up is committed: tell the follower in WeChat, where the account may push."""
    async def notify(order) -> None:  # type: ignore[no-untyped-def]
        api = app.get(WECHAT_API)
        if api is None:
            return
        text = app[CONFIG].texts.topup_done.format(credits=order.credits)
        await api.send_text(order.openid, text)
    return notify


def create_app(cfg: Config) -> web.Application:
    app = web.Application(middlewares=[_requests], client_max_size=cfg.server.max_body_bytes)
    app[CONFIG] = cfg
    app[WECHAT] = WeChatProtocol(cfg.wechat)
    app.cleanup_ctx.extend([_database, _http, _chat])
    setup_pay(app, cfg, on_credited=_topup_notice(app))
    app.add_routes(edge.routes)
    setup_companion(app, cfg)
    setup_webchat(app)
    setup_answer_pages(app)
    setup_tracking(app, cfg)
    setup_metrics(app, cfg)  # last: it reads the router the chat context built
    return app
