"""Chat on the companion page: the same conversations, rules, credits, router and answer check as
WeChat, with the answer streamed as it is written.

A web question is an answer like any other (route 'web', never owed to WeChat), generated in the
background: a browser that goes away stops nothing. The answer is finished, settled (or refunded
when the model gave nothing) and kept; reopening the page shows it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

from bot.chat.admission import Admission
from bot.chat.commands import Commands
from bot.chat.generation import Generator, LiveAnswer
from bot.chat.labels import LABELLED_STATUSES, Labels
from bot.chat.media import PictureQuestions
from bot.config import Config
from bot.economics.pricing import credits_text, milli_text
from bot.providers.router import Router
from bot.rules.base import Refusal
from storage.answers import AnswerRepo, Draft
from storage.conversations import ConversationRepo
from storage.ledger import Ledger
from storage.redact import short_user

log = structlog.get_logger(__name__)

NO_VISION = "no_vision"

@dataclass(frozen=True, slots=True)
class Started:
    answer_id: int
    gen_key: str
    conversation_id: int | None
    model: str
    live: LiveAnswer


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: `delta` (text), `replace` (the whole text so far), `done` (final data)."""

    name: str
    data: Any


class WebChat:
    def __init__(self, cfg: Config, *, answers: AnswerRepo, conversations: ConversationRepo, generator: Generator,
                 admission: Admission, router: Router, commands: Commands, ledger: Ledger, holder: str,
                 pictures: PictureQuestions | None = None, clock=time.time) -> None:
        self.cfg = cfg
        self.answers = answers
        self.conversations = conversations
        self.generator = generator
        self.admission = admission
        self.router = router
        self.commands = commands
        self.ledger = ledger
        self.holder = holder
        self.pictures = pictures
        # the explicit AI-content label the page shows with each answer (ours, not the model's text)
        self.labels = Labels(cfg)
        self.clock = clock

    async def models_for(self, openid: str) -> list[dict[str, Any]]:
        """The models this follower may pick (the tier's allow-list), with the current one marked."""
        account = await self.ledger.account(openid)
        tier = account.tier if account else "free"
        allowed = self.cfg.rules.tier_models.get(tier)
        current = await self.commands.chosen_model(openid)
        return [{"name": m.name, "display_name": m.display_name, "cost": m.cost, "current": m.name == current,
                 # a token-priced model: credits per 1,000 prompt / completion tokens (exact decimals)
                 "price": ({"prompt": m.price.per_thousand()[0], "completion": m.price.per_thousand()[1],
                            "min_cost": credits_text(m.price.min_cost)} if m.price is not None else None)}
                for m in self.router.catalogue.served()
                if allowed is None or m.name in allowed or any(a in allowed for a in m.aliases)]

    async def ask(self, openid: str, message: str, model: str | None = None,
                  conversation_id: int | None = None, picture: tuple[bytes, str] | None = None) -> Refusal | Started:
        """Run the rules and start the answer; a Refusal says why not (nothing charged). A `picture`
        (bytes, image type; checked by the caller) goes to a vision model with the question."""
        now = self.clock()
        if conversation_id is not None and not await self.conversations.reopen(openid, conversation_id, now):
            raise LookupError(f"conversation {conversation_id} is not this follower's")
        gen_key = f"web:{uuid.uuid4().hex}"
        if picture is not None:
            model = await self._vision_model(openid, model)
            if model is None:
                return Refusal(NO_VISION, self.pictures.no_vision_reply() if self.pictures else self.cfg.texts.text_only)
        c = self.cfg.chat

        def draft(text: str, model: str, picture_id: int | None = None) -> Draft:
            return Draft(openid=openid, msg_key=gen_key, question=text, model=model, route="web", now=now,
                         deadline_at=now + c.generation_deadline, holder=self.holder, lease_until=now + c.lease_seconds,
                         asked_before=now, idle=c.conversation_idle, max_turns=c.max_turns, picture_id=picture_id)

        # Without a picture the answer is created with the question's reservation (one transaction);
        # a picture is stored between the two, so that answer is created after it.
        admitted = await self.admission.admit(openid, message, gen_key, model, pictures=int(picture is not None),
                                              then=draft if picture is None else None)
        if isinstance(admitted, Refusal):
            return admitted
        picture_id = None
        if picture is not None and self.pictures is not None:
            picture_id = await self.pictures.repo.add(openid, gen_key, now, data=picture[0], content_type=picture[1],
                                                      taken_by=gen_key)
        new = admitted.started or await self.answers.create(draft(admitted.question, admitted.model, picture_id))
        self.generator.start(new.answer, new.turns, admitted.own_key)
        log.info("web_question", answer=new.answer.id, user=short_user(openid), model=admitted.model)
        return Started(new.answer.id, gen_key, new.answer.conversation_id, admitted.model,
                       self.generator.live[new.answer.id])

    async def _left(self, openid: str) -> int:
        """What the follower has left, in milli-credits."""
        account = await self.ledger.account(openid)
        return account.balance_exact + account.daily_exact if account is not None else 0

    async def _vision_model(self, openid: str, asked: str | None) -> str | None:
        """The model a picture goes to: the one asked for if it sees pictures, else as in WeChat."""
        if self.pictures is None or not self.pictures.on:
            return None
        if asked is not None:
            resolved = self.router.catalogue.resolve(asked)
            return resolved if resolved in self.pictures.vision else None
        return await self.pictures.model_for(openid)

    async def stream(self, started: Started) -> AsyncIterator[Event]:
        """Text as it is written (checked for sensitive words before it leaves), then the final event."""
        live, sent = started.live, ""
        while not live.done.is_set():
            shown = await self.generator.reviewed(live)
            if len(shown) > len(sent):
                yield Event("delta", shown[len(sent):])
                sent = shown
            await live.changed()
        answer = await self.answers.get(started.answer_id)
        assert answer is not None
        final = answer.text
        if final.startswith(sent):
            if len(final) > len(sent):
                yield Event("delta", final[len(sent):])
        else:  # the final check masked something already shown: send the corrected whole
            yield Event("replace", final)
        reservation = await self.ledger.reservation(started.gen_key)
        charged = reservation.charged_milli if reservation is not None else 0
        usage = live.usage
        yield Event("done", {
            "status": answer.status, "model": started.model, "conversation_id": started.conversation_id,
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                      "estimated": usage.estimated} if usage else None,
            # whole credits as numbers (as before token pricing); a fraction as its exact decimal string
            "credits_charged": _credits(charged),
            "estimated": bool(reservation is not None and reservation.estimated),
            "balance": _credits(await self._left(answer.openid)),
            "ai_label": self.labels.text if answer.status in LABELLED_STATUSES else None,
            "ai_label_position": "start" if self.labels.at_start else "end",
        })


def _credits(milli: int) -> int | str:
    """Credits in the final event: a number when whole (as before token pricing), else the exact
    decimal as a string ("1.098"; a float would not be exact)."""
    return milli // 1000 if milli % 1000 == 0 else milli_text(milli)
