"""Voice and pictures in the chat: what a voice message says, which model sees a picture.

The chat service asks these; they know nothing of WeChat's delivery windows. A picture alone is
kept (storage) for the follower's next text within `media.picture_wait`; the first question to take
it — that text, or the picture's own default question — gets it (one conditional update).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from bot.chat.commands import Commands
from bot.chat.messages import Inbound
from bot.config import Config
from bot.media.pictures import PictureSource
from bot.media.voice import Listener, NotHeard
from bot.providers.catalogue import Catalogue
from storage.pictures import Picture, PictureRepo

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Heard:
    """A voice message as a question: its text, and the credits hearing it cost."""

    text: str
    cost: int


class VoiceQuestions:
    def __init__(self, cfg: Config, listener: Listener | None) -> None:
        self.cfg = cfg
        self.listener = listener

    def needs_hearing(self, msg: Inbound) -> bool:
        """Whether mpgpt transcribes this voice message itself (else WeChat's Recognition is it)."""
        if self.listener is None or not msg.media_id:
            return False
        return not (msg.recognized and self.cfg.speech.use_recognition)

    async def hear(self, msg: Inbound) -> Heard | str:
        """The voice as a question, or the reply when it cannot be one."""
        texts = self.cfg.texts
        if not self.needs_hearing(msg):
            question = msg.content.strip()
            return Heard(question, 0) if question else texts.voice_unrecognized
        assert self.listener is not None
        try:
            text = await self.listener.hear(msg.media_id)
        except NotHeard:  # logged where it happened (a missing ffmpeg as an error)
            return texts.voice_unavailable
        if not text.strip():
            return texts.voice_unrecognized  # nothing heard: nothing reserved, nothing charged
        return Heard(text.strip(), self.cfg.speech.cost)


class PictureQuestions:
    def __init__(self, cfg: Config, repo: PictureRepo, source: PictureSource | None, catalogue: Catalogue,
                 commands: Commands, tier_of: Callable[[str], Awaitable[str]], clock=time.time) -> None:
        self.cfg = cfg
        self.repo = repo
        self.source = source
        self.catalogue = catalogue
        self.commands = commands
        self.tier_of = tier_of
        self.clock = clock
        served = self.catalogue.served()
        self.vision = [info.name for info in served if info.vision]

    @property
    def on(self) -> bool:
        """Some model can see pictures (otherwise a picture gets the text-only reply)."""
        return bool(self.vision)

    async def model_for(self, openid: str) -> str | None:
        """The model that sees the follower's picture: their own choice when it can, else the first
        vision model their tier may use; None when there is none."""
        chosen = self.catalogue.resolve(await self.commands.chosen_model(openid))
        if chosen in self.vision:
            return chosen
        tiers = self.cfg.rules.tier_models
        if not tiers:
            return self.vision[0]
        aliases = {a: name for name, m in self.cfg.models.items() for a in m.aliases}
        allowed = {aliases.get(m, m) for m in tiers.get(await self.tier_of(openid), ())}
        return next((m for m in self.vision if m in allowed), None)

    def no_vision_reply(self) -> str:
        shown = [self.catalogue.info(m).display_name for m in self.vision]  # type: ignore[union-attr]
        return self.cfg.texts.picture_no_vision.format(models="、".join(shown))

    def refusal(self, msg: Inbound) -> str | None:
        if self.source is None:
            return "pictures cannot be fetched"
        return self.source.refusal(msg.pic_url, msg.media_id)

    async def keep(self, msg: Inbound, now: float) -> int:
        return await self.repo.add(msg.openid, msg.msg_key, now, pic_url=msg.pic_url, media_id=msg.media_id)

    async def wait_for_text(self, picture_id: int, msg_key: str, arrived: float) -> bool:
        """Wait for the follower's text to take the picture; True when this picture message takes it
        itself (no text came within `picture_wait`), False when a text took it."""
        until = arrived + self.cfg.media.picture_wait
        while self.clock() < until:
            await asyncio.sleep(min(self.cfg.chat.poll_interval, max(0.0, until - self.clock())))
            picture = await self.repo.get(picture_id)
            if picture is None or picture.taken_by is not None:
                return False
        return await self.repo.take(picture_id, msg_key)

    async def waiting_for(self, openid: str, msg_key: str, now: float) -> Picture | None:
        """A picture the follower sent just before this text, now taken by it (or None)."""
        picture = await self.repo.waiting(openid, now - self.cfg.media.picture_wait)
        if picture is None or not await self.repo.take(picture.id, msg_key):
            return None
        return picture
