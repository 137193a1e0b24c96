"""The chat service: decides the reply to every WeChat delivery.

WeChat waits `window` seconds for each delivery of a message and delivers it `deliveries` times.
The first delivery to reach storage owns the message (one generation per MsgId, whichever process
receives it); every delivery then waits for the answer while its connection is open. A delivery
that finds the answer ready replies with it (or its first part). The last delivery does not wait
past its window: it replies with the whole sentences written so far, or a short hint, and the rest
is owed — the user's next message fetches it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from bot.chat.delivery import ReplyPlanner
from bot.chat.generation import Generator
from bot.chat.messages import Inbound
from bot.chat.textparts import reserve, utf8_len
from bot.config import Config
from storage.answers import AnswerRepo
from storage.conversations import ConversationRepo
from storage.inbound import InboundRepo
from storage.users import UserRepo

log = structlog.get_logger(__name__)


class ChatService:
    def __init__(self, cfg: Config, *, inbound: InboundRepo, answers: AnswerRepo, users: UserRepo,
                 conversations: ConversationRepo, generator: Generator, owner: str, clock=time.time) -> None:
        self.cfg = cfg
        self.inbound = inbound
        self.answers = answers
        self.users = users
        self.conversations = conversations
        self.generator = generator
        self.planner = ReplyPlanner(cfg)
        self.owner = owner
        self.clock = clock
        w = cfg.wechat
        # A question's own deliveries span this long; after it, what it is owed is fetched.
        self.question_window = w.window * w.deliveries + w.reply_margin

    async def handle(self, msg: Inbound, still_open: Callable[[], bool]) -> str:
        """The reply text for one delivery; "" means `success` (nothing shown to the user)."""
        arrived = self.clock()
        receipt = await self.inbound.receive(msg.msg_key, msg.openid, msg.kind, arrived)
        if receipt.reply is not None:
            return receipt.reply
        if receipt.first:
            decided = await self._start(msg, arrived)
            if decided is not None:
                return await self.inbound.set_reply(msg.msg_key, decided, self.clock())
        last = receipt.deliveries >= self.cfg.wechat.deliveries
        return await self._await_reply(msg, arrived, last, still_open)

    # -- the first delivery decides what the message is -------------------------------------------

    async def _start(self, msg: Inbound, now: float) -> str | None:
        """Act on a new message; return its reply when known now, None when it waits for an answer."""
        texts, words = self.cfg.texts, self.cfg.commands
        if msg.kind == "subscribe":
            await self.users.set_subscribed(msg.openid, True, now)
            return texts.welcome
        if msg.kind == "unsubscribe":
            await self.users.set_subscribed(msg.openid, False, now)
            return ""
        await self.users.touch(msg.openid, now)
        if msg.kind == "event":
            return ""
        if msg.kind == "other":
            return texts.text_only
        question = msg.content.strip()
        if msg.kind == "voice" and not question:
            return texts.voice_unrecognized
        if not question:
            return texts.help
        if question in words.help:
            return texts.help
        if question in words.reset:
            await self.conversations.close_all(msg.openid)
            return texts.reset_done
        owed = await self.answers.oldest_owed(msg.openid, now - self.question_window)
        if question in words.more:
            if owed is None:
                return texts.nothing_waiting
            await self.inbound.set_target(msg.msg_key, owed.id, None)
            return None
        return await self._ask(msg, question, now, owed.id if owed else None)

    async def _ask(self, msg: Inbound, question: str, now: float, owed_id: int | None) -> str | None:
        c, active = self.cfg.chat, self.cfg.wechat.mode == "active"
        conversation_id = await self.conversations.current(msg.openid, now, c.conversation_idle)
        answer_id, created = await self.answers.create(
            openid=msg.openid, msg_key=msg.msg_key, question=question, model=c.default_model,
            route="push" if active else "reply", conversation_id=conversation_id, now=now,
            deadline_at=now + c.generation_deadline, owner=self.owner, lease_until=now + c.lease_seconds,
            # its own deliveries carry the owed answer, so the new one is fetched (or pushed) later
            awaiting_fetch=owed_id is not None and not active,
        )
        if created:
            answer = await self.answers.get(answer_id)
            assert answer is not None
            self.generator.start(answer)
            log.info("question", msg_id=msg.msg_key, user=msg.short_user, answer=answer_id,
                     owed_first=owed_id is not None)
        if owed_id is not None:
            note = self.cfg.texts.new_question_pushed if active else self.cfg.texts.new_question_started
            await self.inbound.set_target(msg.msg_key, owed_id, note)
            return None
        if active:
            return ""
        await self.inbound.set_target(msg.msg_key, answer_id, None)
        return None

    # -- every delivery waits for the reply -------------------------------------------------------

    async def _await_reply(self, msg: Inbound, arrived: float, last: bool, still_open: Callable[[], bool]) -> str:
        w, c = self.cfg.wechat, self.cfg.chat
        give_up_at = arrived + w.window - w.reply_margin
        full_part = reserve(w.max_reply_bytes, self.cfg.texts.more_marker)
        while True:
            receipt = await self.inbound.get(msg.msg_key)
            if receipt is None:  # pragma: no cover - the row was written by this very delivery
                return ""
            if receipt.reply is not None:
                return receipt.reply
            now = self.clock()
            live = self.generator.live.get(receipt.answer_id) if receipt.answer_id is not None else None
            if receipt.answer_id is not None:
                answer = await self.answers.get(receipt.answer_id)
                assert answer is not None
                live_text = live.text if live is not None else None
                text = live_text if live_text is not None else answer.text
                ready = answer.finished or (live is not None and live.done.is_set())
                big = utf8_len(text[answer.delivered_upto:]) > full_part
                if ready or big or (last and now >= give_up_at):
                    return await self.answers.take_reply(
                        msg.msg_key, answer.id, lambda a: self.planner.plan(a, receipt.note), self.clock(),
                        live_text)
            elif last and now >= give_up_at:
                # The first delivery is still deciding (or died deciding): say something valid.
                return self.cfg.texts.thinking
            if not last and not still_open():
                return ""  # WeChat gave up on this delivery; its retry carries on
            pause = c.poll_interval
            if last:
                pause = max(0.0, min(pause, give_up_at - now))
            if live is not None:
                try:
                    await asyncio.wait_for(live.done.wait(), pause)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(pause)
