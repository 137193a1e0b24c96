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
from dataclasses import dataclass

import structlog

from bot import metrics
from bot.chat.admission import Admission
from bot.chat.commands import Commands, help_text
from bot.chat.commands import parse as parse_command
from bot.chat.delivery import ReplyPlanner
from bot.chat.generation import Generator, LiveAnswer
from bot.chat.labels import PageLinks
from bot.chat.media import Heard, PictureQuestions, VoiceQuestions
from bot.chat.messages import Inbound
from bot.chat.textparts import reserve, utf8_len
from bot.chat.typing import Typing
from bot.config import Config
from bot.rules.base import Refusal
from storage.answers import Answer, AnswerRepo, Closed, Draft, Taken
from storage.conversations import ConversationRepo
from storage.inbound import InboundRepo, Receipt
from storage.standing import Standing
from storage.users import UserRepo

log = structlog.get_logger(__name__)


class ChatService:
    def __init__(self, cfg: Config, *, inbound: InboundRepo, answers: AnswerRepo, users: UserRepo,
                 conversations: ConversationRepo, generator: Generator, admission: Admission, commands: Commands,
                 holder: str, voice: VoiceQuestions | None = None, pictures: PictureQuestions | None = None,
                 typing: Typing | None = None, clock=time.time) -> None:
        self.cfg = cfg
        self.admission = admission
        self.commands = commands
        self.inbound = inbound
        self.answers = answers
        self.users = users
        self.conversations = conversations
        self.generator = generator
        self.planner = ReplyPlanner(cfg)
        self.links = PageLinks(cfg)
        self.replies = ReplyCache()
        # decisions a retry took over from a dead host, run beside the delivery that took them
        self._taken_over: set[asyncio.Task] = set()
        self.holder = holder
        self.voice = voice or VoiceQuestions(cfg, None)
        self.pictures = pictures if pictures is not None and pictures.on else None
        # active mode: WeChat's typing indicator while an answer is written
        self.typing = typing
        self.clock = clock
        w = cfg.wechat
        # A question's own deliveries span this long; after it, what it is owed is fetched.
        self.question_window = w.window * w.deliveries + w.reply_margin
        # More than this much waiting is worth a reply at once (a whole part, with room for the marker).
        self.full_part = reserve(w.max_reply_bytes, cfg.texts.more_marker)
        # The config is frozen: 帮助's reply is the same text for every message (it was formatted
        # again per message, which showed in /wechat's command profile)
        self.help = help_text(cfg)

    async def handle(self, msg: Inbound, still_open: Callable[[], bool]) -> str:
        """The reply text for one delivery; "" means `success` (nothing shown to the user)."""
        cached = self.replies.get(msg.msg_key)
        if cached is not None:  # WeChat's retry of a message this process already answered
            return cached
        arrived = self.clock()
        instant = self._instant_reply(msg)
        receipt = await self.inbound.receive(msg.msg_key, msg.openid, msg.kind, arrived, instant,
                                             with_standing=instant is None and self._looks_like_a_question(msg),
                                             deciding_until=None if instant is not None else
                                             arrived + self.cfg.decide_lease)
        if receipt.first:
            metrics.message_received(msg.kind)
        if receipt.reply is not None:
            return self.replies.keep(msg.msg_key, receipt.reply)
        target: Target | None = None
        if receipt.first:
            decided = await self._decide(msg, arrived, receipt.model, receipt.standing)
            if isinstance(decided, str):
                return decided
            target = decided
        last = receipt.deliveries >= self.cfg.wechat.deliveries
        return await self._await_reply(msg, arrived, last, still_open, target, receipt.deliveries)

    # -- the first delivery decides what the message is -------------------------------------------

    async def _decide(self, msg: Inbound, now: float, chosen: str | None,
                      standing: Standing | None = None) -> "str | Target | None":
        """Decide a message under the deciding lease (renewed while it takes long): its stored reply,
        or the answer its reply will come from (None: one was made for it, learn which as a retry)."""
        stop_renewing = self._renewing(msg.msg_key)
        try:
            decided: str | Target | None = await self._start(msg, now, chosen, standing)
        except Exception:  # noqa: BLE001 - a message that cannot be decided still gets a reply
            decided = await self._undecided(msg)
            return self.replies.keep(msg.msg_key, decided) if isinstance(decided, str) else decided
        finally:
            stop_renewing()
        if isinstance(decided, str):
            return self.replies.keep(msg.msg_key, await self.inbound.set_reply(msg.msg_key, decided, self.clock()))
        return decided

    def _renewing(self, msg_key: str) -> Callable[[], None]:
        """Renew the deciding lease every half of it, for as long as deciding takes; call the result
        when decided. Most decisions take milliseconds: a timer, not a task, until half the lease."""
        lease = self.cfg.decide_lease
        renewals: list[asyncio.Task] = []

        async def keep() -> None:
            while True:
                try:
                    await self.inbound.renew_deciding(msg_key, self.clock() + lease)
                except Exception:  # noqa: BLE001 - the next renewal tries again; a lost lease only allows a takeover
                    log.warning("chat.deciding_not_renewed", exc_info=True)
                await asyncio.sleep(lease / 2)

        timer = asyncio.get_running_loop().call_later(lease / 2, lambda: renewals.append(asyncio.ensure_future(keep())))

        def stop() -> None:
            timer.cancel()
            for task in renewals:
                task.cancel()
        return stop

    async def _undecided(self, msg: Inbound) -> str | None:
        """The first delivery failed to decide its message (the database refused or failed midway, or
        a fault of ours). Its reply is a polite sentence instead of an error page, stored so that the
        message's retries read it too: they would otherwise wait for a decision that never comes.
        None when an answer was made for it after all (the reply comes from that, as for a retry).
        Credits are normally held in the answer's own transaction, so none are held without it;
        any that were (a failure past that step) go back with the sweep of stale reservations."""
        log.exception("chat.undecided", kind=msg.kind)
        sorry = self.cfg.texts.model_error
        try:
            stored = await self.inbound.get(msg.msg_key)
            if stored is not None and stored.answer_id is not None:
                return None
            return await self.inbound.set_reply(msg.msg_key, sorry, self.clock())
        except Exception:  # noqa: BLE001 - the database is failing: the reply is still the sentence
            log.warning("chat.undecided_unstored", exc_info=True)
            return sorry

    def _instant_reply(self, msg: Inbound) -> str | None:
        """Replies that depend on nothing stored: decided in the same step that records the message."""
        texts, question = self.cfg.texts, msg.content.strip()
        if msg.kind == "event":
            return ""
        if msg.kind == "other" or (msg.kind == "image" and self.pictures is None):
            return texts.text_only
        if msg.kind == "image":
            return None
        if msg.kind == "voice" and self.voice.needs_hearing(msg):
            return None  # heard (or not) when the message is started
        if msg.kind == "voice" and not question:
            return texts.voice_unrecognized
        if msg.kind in ("text", "voice") and (not question or question in self.cfg.commands.help):
            return self.help
        return None

    def _looks_like_a_question(self, msg: Inbound) -> bool:
        """A text that is no command: its sender's standing is read with the delivery (a question's
        round trips follow one another, and this one need not be one of them). Unused (a retry) it
        is dropped."""
        if msg.kind != "text":
            return False
        question, words = msg.content.strip(), self.cfg.commands
        return not (question in words.reset or question in words.more or parse_command(self.cfg, question) is not None)

    async def _start(self, msg: Inbound, now: float, chosen: str | None,
                     standing: Standing | None = None) -> "str | Target":
        """Act on a new message: its reply when known now, else the answer its reply will come from.
        `chosen`: the sender's model choice, read when the message was recorded; `standing`: theirs,
        if read with it."""
        texts, words = self.cfg.texts, self.cfg.commands
        if msg.kind == "subscribe":
            await self.users.set_subscribed(msg.openid, True, now)
            return texts.welcome
        if msg.kind == "unsubscribe":
            await self.users.set_subscribed(msg.openid, False, now)
            return ""
        heard = None
        if msg.kind == "image":
            return await self._picture(msg, now)
        if msg.kind == "voice":
            decided = await self.voice.hear(msg)
            if isinstance(decided, str):
                return decided
            heard = decided
        question = heard.text if heard is not None else msg.content.strip()
        if question in words.reset:
            await self.conversations.close_all(msg.openid)
            return texts.reset_done
        if question in words.more:
            owed = await self.answers.oldest_owed(msg.openid, now - self.question_window)
            if owed is None:
                return texts.nothing_waiting
            await self.inbound.set_target(msg.msg_key, owed.id, None)
            return Target(owed.id, None, owed)
        command = parse_command(self.cfg, question)
        if command is not None:
            return await self.commands.run(msg.openid, *command)
        picture_id, model = None, self.commands.model_or_default(chosen)
        if self.pictures is not None and msg.kind == "text":
            picture = await self.pictures.waiting_for(msg.openid, msg.msg_key, now)
            vision = await self.pictures.model_for(msg.openid) if picture is not None else None
            if picture is not None and vision is not None:
                model, picture_id = vision, picture.id
        return await self._ask(msg, question, now, heard=heard if msg.kind == "voice" else None,
                               picture_id=picture_id, model=model, standing=standing)

    async def _picture(self, msg: Inbound, now: float) -> "str | Target":
        """A picture: refused, or kept for the follower's next text, or asked about with the default prompt."""
        assert self.pictures is not None
        if self.pictures.refusal(msg) is not None:
            return self.cfg.texts.picture_failed
        if await self.pictures.model_for(msg.openid) is None:
            return self.pictures.no_vision_reply()
        picture_id = await self.pictures.keep(msg, now)
        if not await self.pictures.wait_for_text(picture_id, msg.msg_key, now):
            return ""  # the follower's text took it: that text's reply carries the answer
        model = await self.pictures.model_for(msg.openid)
        if model is None:
            return self.pictures.no_vision_reply()
        return await self._ask(msg, self.cfg.media.picture_prompt, now, picture_id=picture_id, model=model)

    async def _ask(self, msg: Inbound, question: str, now: float, *, heard: Heard | None = None,
                   picture_id: int | None = None, model: str | None = None,
                   standing: Standing | None = None) -> "str | Target":
        c, active = self.cfg.chat, self.cfg.wechat.mode == "active"
        note = self.cfg.texts.new_question_pushed if active else self.cfg.texts.new_question_started

        def draft(text: str, model: str) -> Draft:
            # `now` is the message's arrival (its own deliveries count from then); the lease and the
            # deadline start when the generation does — after a voice was heard, that is later
            started = self.clock()
            return Draft(
                openid=msg.openid, msg_key=msg.msg_key, question=text, model=model,
                route="push" if active else "reply", now=now, deadline_at=started + c.generation_deadline,
                holder=self.holder, lease_until=started + c.lease_seconds, asked_before=now - self.question_window,
                idle=c.conversation_idle, max_turns=c.max_turns, heard=text if heard is not None else None,
                picture_id=picture_id,
                # this message's reply: the older owed answer (with its note), else the new one (passive mode)
                reply_from_new=not active, owed_note=note,
            )

        # the rules create the answer with the question's reservation when they reserve credits
        # last (one transaction); else it is created here, after them
        admitted = await self.admission.admit(msg.openid, question, msg.msg_key, model,
                                              pictures=int(picture_id is not None),
                                              heard_cost=heard.cost if heard is not None else 0,
                                              standing=standing, then=draft)
        if isinstance(admitted, Refusal):
            return admitted.text
        new = admitted.started or await self.answers.create(draft(admitted.question, admitted.model))
        if new.created:
            self.generator.start(new.answer, new.turns, admitted.own_key)
            log.info("question", answer=new.answer.id, owed_first=new.owed_id is not None)
            if active and self.typing is not None:
                self.typing.start(msg.openid, now, self.generator.live[new.answer.id].done)
        if new.owed_id is not None:
            # this message's reply carries the older answer; the new one is fetched (or pushed) later
            return Target(new.owed_id, note, None)
        if active:
            return ""
        return Target(new.answer.id, None, new.answer)

    # -- every delivery waits for the reply -------------------------------------------------------

    async def _await_reply(self, msg: Inbound, arrived: float, last: bool, still_open: Callable[[], bool],
                           target: "Target | None", delivery: int = 1) -> str:
        """Wait, while this delivery's connection is open, until its reply can be decided.

        Each round reads top to bottom: a retry first learns which answer the first delivery chose;
        the reply is taken once the answer is finished or has more than a whole part waiting; the
        last delivery takes it anyway when its window is about to close (what is whole so far, or
        the hint); a delivery WeChat has given up on ends with ""; otherwise wait a little.
        """
        w = self.cfg.wechat
        closes_at = arrived + w.window - w.reply_margin  # only the last delivery keeps to it
        answer = target.answer if target else None
        watched: LiveAnswer | None = None  # this process's generation of the answer, once seen
        taking: asyncio.Task | None = None  # the decision this delivery took over, if it did
        while True:
            if target is None and taking is not None and taking.done():
                decided = taking.result()
                if isinstance(decided, str):
                    return decided
                target = decided  # None: an answer was made for it, read below
            if target is None:  # a retry: learn what the first delivery decided
                receipt = await self.inbound.get(msg.msg_key)
                if receipt is not None and receipt.reply is not None:
                    return self.replies.keep(msg.msg_key, receipt.reply)
                if receipt is not None and receipt.answer_id is not None:
                    target = Target(receipt.answer_id, receipt.note, None)
                elif receipt is not None and taking is None and await self._took_over(receipt):
                    # The first delivery's process died deciding: this delivery decides instead,
                    # beside its wait, so that a last delivery still answers before its window
                    # closes (with the hint) when deciding takes longer (a voice being heard).
                    taking = self._take_over(msg, receipt.received_at, await self.commands.chosen_model(msg.openid))
                    await asyncio.wait({taking}, timeout=max(0.0, closes_at - self.clock()) if last else None)
                    continue
            if not last and not still_open():
                # WeChat gave up on this delivery (the first may have been busy hearing a voice):
                # whatever it took would reach nobody; its retry, or the next message, carries on
                return ""
            now = self.clock()
            closing = last and now >= closes_at
            live = self.generator.live.get(target.answer_id) if target else None
            watched = live or watched
            generating_here = live is not None and not live.done.is_set()
            if target is None:
                if closing:
                    # The first delivery is still deciding (or died deciding): say something valid.
                    return self.cfg.texts.thinking
            else:
                if watched is not None and watched.recorded is not None:
                    # generated here and stored finished: its reply can be planned from what was stored
                    return await self._take_reply(msg, target, None, delivery, watched.recorded)
                if answer is None or not generating_here:
                    answer = await self.answers.get(target.answer_id)
                    assert answer is not None
                if closing or self._enough_to_reply(answer, live if generating_here else None):
                    return await self._take_reply(msg, target, live if generating_here else None, delivery)
            if not last and not still_open():
                return ""  # WeChat gave up on this delivery; its retry carries on
            await self._pause(live, closes_at - now if last else None, target.answer_id if target else None)

    def _take_over(self, msg: Inbound, arrived: float, chosen: str) -> asyncio.Task:
        """Decide `msg` in a task of its own: it goes on if the delivery that took it over returns.
        `arrived`: the message's first delivery (its deliveries, and what it is owed, count from it)."""
        task = asyncio.ensure_future(self._decide(msg, arrived, chosen))
        self._taken_over.add(task)

        def ended(done: asyncio.Task) -> None:
            self._taken_over.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.warning("chat.taken_over_decision_failed", exc_info=done.exception())
        task.add_done_callback(ended)
        return task

    async def _took_over(self, receipt: Receipt) -> bool:
        """Whether this delivery now decides an undecided message whose decider let the lease run out."""
        now = self.clock()
        if receipt.decided or receipt.deciding_until is None or receipt.deciding_until >= now:
            return False
        if not await self.inbound.claim_deciding(receipt.msg_key, now, now + self.cfg.decide_lease):
            return False
        log.warning("chat.decision_taken_over")
        return True

    def _enough_to_reply(self, answer: Answer, live: LiveAnswer | None) -> bool:
        """The answer is finished, or more than a whole part of it is waiting to be delivered.

        `live` is this process's generation of it, newer than storage's copy, when it runs here."""
        if live is None and answer.finished:
            return True
        text = live.raw if live is not None else answer.text
        return utf8_len(text[answer.delivered_upto:]) > self.full_part

    async def _take_reply(self, msg: Inbound, target: Target, live: LiveAnswer | None, delivery: int,
                          closed: Closed | None = None) -> str:
        """This message's reply, decided once in storage's transaction, and the delivery counted."""
        live_text = await self.generator.reviewed(live) if live is not None else None

        def plan(answer: Answer, token: str | None) -> Taken:
            return self.planner.plan(answer, target.note, token)

        now = self.clock()
        # A token for the answer page, used only if the answer has none and the reply links to it.
        page = (self.links.new_token(), self.links.expires_at(now)) if self.links.on else None
        took = await self.answers.take_reply(msg.msg_key, target.answer_id, plan, now, live_text, page, closed)
        if took.planned is not None:  # counted by the delivery whose plan was stored, once
            answer, taken = took.planned
            _count_delivery(answer, taken.upto, taken.owed, msg.msg_key, delivery, self.clock())
            if taken.linked:
                metrics.answer_page_event("linked")
        return self.replies.keep(msg.msg_key, took.reply)

    async def _pause(self, live: LiveAnswer | None, until_close: float | None, answer_id: int | None) -> None:
        """One poll interval (never past the last delivery's close); woken early when the answer
        generating in this process finishes, or (PostgreSQL) when another host saves or finishes it."""
        pause = self.cfg.chat.poll_interval
        if until_close is not None:
            pause = max(0.0, min(pause, until_close))
        if live is not None and not live.done.is_set():
            try:
                await asyncio.wait_for(live.done.wait(), pause)
            except TimeoutError:
                pass
        elif answer_id is not None:
            await self.answers.changed(answer_id, pause)
        else:
            await asyncio.sleep(pause)


def _count_delivery(answer: Answer, upto: int, owed: bool, msg_key: str, delivery: int, now: float) -> None:
    """Count the answer as delivered when this reply handed over its last part (once per answer)."""
    if owed or not answer.finished or upto <= answer.delivered_upto:
        return
    outcome = metrics.delivery_outcome(status=answer.status, own_message=answer.msg_key == msg_key,
                                       delivery=delivery, given_before=answer.delivered_upto)
    metrics.answer_delivered(outcome, now - answer.created_at)


@dataclass(frozen=True, slots=True)
class Target:
    """The answer a message's reply comes from, and a line to add under it."""

    answer_id: int
    note: str | None
    # the row as the first delivery saw it (saves a read); None when not at hand
    answer: Answer | None


class ReplyCache:
    """Replies already stored for recent messages, so WeChat's retries need no storage round trip.

    A reply never changes once stored, so a copy cannot go stale; storage stays the record (a
    retry landing on another process reads it there).
    """

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._replies: dict[str, str] = {}

    def get(self, msg_key: str) -> str | None:
        return self._replies.get(msg_key)

    def keep(self, msg_key: str, reply: str) -> str:
        if len(self._replies) >= self.size:
            # dicts keep insertion order: drop the oldest tenth at once
            for key in list(self._replies)[: self.size // 10]:
                del self._replies[key]
        self._replies[msg_key] = reply
        return reply
