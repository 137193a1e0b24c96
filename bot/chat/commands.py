"""Chat commands that change or report a follower's settings: 模型, key, 余额, 登录, 兑换, 邀请; and
帮助's list of the commands that are switched on.

A command is its word alone, or its word, white space and an argument. `key` only counts when
what follows looks like an API key (or 删除): "key points of …" stays a question; `兑换` only when
what follows looks like a code (letters and digits, dashes or spaces between): "兑换 美元怎么算"
stays a question too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from bot.chat.own_keys import OwnKeys
from bot.config import Config
from bot.economics.pricing import credits_text
from bot.providers.catalogue import ModelInfo
from bot.providers.router import ModelUnavailable, Router
from storage.generations import ModelChoiceRepo
from storage.redact import short_user

log = structlog.get_logger(__name__)

_API_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{15,255}")
_REMOVE = ("删除", "delete", "remove")
_INVITE_CODE = re.compile(r"[A-Za-z0-9]{6,16}")
_CODE_LIKE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|[\- ](?=[A-Za-z0-9])){11,47}")
_LOGIN_CODE = re.compile(r"\d{6}")


class LoginIssuer(Protocol):
    async def issue(self, openid: str) -> str: ...

    async def claim(self, openid: str, code: str) -> str: ...


class InviteCommand(Protocol):
    async def run(self, openid: str, code: str) -> str: ...


class CodeRedeemer(Protocol):
    async def redeem(self, openid: str, text: str) -> tuple[object, str]: ...


def parse(cfg: Config, text: str) -> tuple[str, str] | None:
    """(command, argument) when `text` is one of the settings commands, else None."""
    words = cfg.commands
    for name in ("model", "key", "balance", "login", "redeem", "invite"):
        for word in getattr(words, name, ()):
            if text == word:
                return name, ""
            if text.startswith(word) and text[len(word):len(word) + 1].isspace():
                arg = text[len(word):].strip()
                if name == "key" and not (arg in _REMOVE or _API_KEY.fullmatch(arg)):
                    continue
                if name == "redeem" and not _CODE_LIKE.fullmatch(arg):
                    continue
                # `登录 123456`: the code a desktop browser shows; other text after the word is a question
                if name == "login" and not _LOGIN_CODE.fullmatch(arg):
                    continue
                if name == "invite" and not _INVITE_CODE.fullmatch(arg):
                    continue
                if name in ("model", "key", "redeem", "login", "invite"):
                    return name, arg
    return None


def help_text(cfg: Config) -> str:
    """The reply to 帮助: [texts] help with a line for each command that is switched on (its words
    not empty; key only when followers may use their own keys, 邀请 only when invitations are on)."""
    switched = {"key": cfg.chat.allow_own_keys, "invite": cfg.invites.enabled}
    lines = []
    for name, line in cfg.texts.help_commands.items():
        words = getattr(cfg.commands, name, ())
        if line and words and switched.get(name, True):
            lines.append(line.format(word=words[0]))
    return cfg.texts.help.format(commands="\n".join(lines)).strip()


class Commands:
    def __init__(self, cfg: Config, router: Router, models: ModelChoiceRepo, own_keys: OwnKeys | None,
                 balance: Callable[[str], Awaitable[str]], login: LoginIssuer | None = None,
                 open_account: Callable[[str], Awaitable[object]] | None = None,
                 redeemer: CodeRedeemer | None = None, inviter: InviteCommand | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.router = router
        self.models = models
        self.own_keys = own_keys
        self.balance = balance
        self.login = login
        # 登录 is a message like any other: the follower's account (and trial) exists before the page shows it
        self.open_account = open_account
        self.redeemer = redeemer
        self.inviter = inviter
        self.clock = clock

    async def run(self, openid: str, name: str, arg: str) -> str:
        if name == "model":
            return await self._model(openid, arg)
        if name == "key":
            return await self._key(openid, arg)
        if name == "balance":
            return await self.balance(openid)
        if name == "invite":
            if self.inviter is None:
                return self.cfg.texts.invite_off
            if self.open_account is not None:
                await self.open_account(openid)
            return await self.inviter.run(openid, arg)
        if name == "redeem":
            if self.redeemer is None:
                return self.cfg.texts.redeem_invalid
            return (await self.redeemer.redeem(openid, arg))[1]
        assert self.login is not None, "the login command needs a Logins"
        if self.open_account is not None:
            await self.open_account(openid)
        return await self.login.claim(openid, arg) if arg else await self.login.issue(openid)

    async def chosen_model(self, openid: str) -> str:
        """The follower's model: their choice, else the configured default (aliases resolved)."""
        return self.model_or_default(await self.models.get(openid))

    def model_or_default(self, chosen: str | None) -> str:
        """A stored choice (None: none made), else the configured default (aliases resolved)."""
        return chosen or self.router.catalogue.resolve(self.cfg.chat.default_model) or self.cfg.chat.default_model

    def _price(self, info: ModelInfo) -> str:
        texts = self.cfg.texts
        if info.price is None:
            return texts.model_cost.format(cost=info.cost)
        prompt, completion = info.price.per_thousand()
        text = texts.model_token_price.format(prompt=prompt, completion=completion)
        if info.price.min_cost:
            text += texts.model_min_cost.format(min_cost=credits_text(info.price.min_cost))
        return text

    async def _model(self, openid: str, arg: str) -> str:
        texts = self.cfg.texts
        if not arg:
            current = await self.chosen_model(openid)
            lines = []
            for info in self.router.catalogue.served():
                shown = info.name if info.display_name == info.name else f"{info.name}（{info.display_name}）"
                mark = " ← 当前" if info.name == current else ""
                lines.append(f"• {shown}，{self._price(info)}{mark}")
            return texts.model_list.format(models="\n".join(lines))
        try:
            name = self.router.resolve(arg)
        except ModelUnavailable:
            return texts.model_no_such.format(model=arg[:40])
        await self.models.set(openid, name, self.clock())
        info = self.router.catalogue.info(name)
        return texts.model_switched.format(model=info.display_name if info else name)

    async def _key(self, openid: str, arg: str) -> str:
        texts = self.cfg.texts
        if self.own_keys is None:
            return texts.own_key_off
        if not arg:
            return texts.own_key_bad
        if arg in _REMOVE:
            return texts.own_key_removed if await self.own_keys.remove(openid) else texts.own_key_none
        await self.own_keys.store(openid, arg)
        log.info("own_key_saved", user=short_user(openid))  # never the key itself
        return texts.own_key_saved
