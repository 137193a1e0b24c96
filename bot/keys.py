"""Typed application state keys: every shared resource the handlers reach through the app.

(The companion page's own keys, whose values are web_companion types, are in web_companion/keys.py.)"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from bot.chat.generation import Generator
from bot.chat.pages import AnswerPages
from bot.chat.service import ChatService
from bot.chat.web import WebChat
from bot.config import Config
from bot.pay.service import PayService
from bot.providers.router import Router
from bot.wechat.api import WeChatAPI
from bot.wechat.protocol import WeChatProtocol
from storage.db import Database
from storage.wechat_requests import SignedRequests

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", Database)
CHAT = web.AppKey("chat", ChatService)
GENERATOR = web.AppKey("generator", Generator)
WECHAT = web.AppKey("wechat", WeChatProtocol)
HTTP = web.AppKey("http", aiohttp.ClientSession)
WECHAT_API = web.AppKey("wechat_api", WeChatAPI)  # only in active mode (verified accounts)
ROUTER = web.AppKey("router", Router)
SIGNED_REQUESTS = web.AppKey("signed_requests", SignedRequests)  # plaintext /wechat: (timestamp, nonce) seen
PAY = web.AppKey("pay", PayService)  # only with a [pay] table
WEBCHAT = web.AppKey("webchat", WebChat)
ANSWER_PAGES = web.AppKey("answer_pages", AnswerPages)  # the answer page at /a/<token>
