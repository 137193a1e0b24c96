"""Generations: one task per answer, streaming from the model into storage under a lease.

The task keeps the growing text in memory for waiters in this process and writes it to storage
every `progress_flush_interval` (renewing its lease), so another process — or this one after a
restart — can see what is complete. Each generation has a deadline; past it the user gets what was
written plus a note, or a clear message, and nothing dangles. Whatever reaches storage has passed
the answer check (sensitive words), so every delivery path sends reviewed text. Credits reserved for
the question are settled when the user got an answer and refunded when the model gave nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from bot.chat.textparts import to_plain
from bot.config import Config
from bot.economics.pricing import TokenPrice, delivered_usage
from bot.media.pictures import PictureUnavailable, QuestionPictures
from bot.providers.base import ChatMessage, Delta, ProviderError, Usage, estimate_tokens
from bot.providers.router import ModelUnavailable
from bot.rules.answers import AnswerCheck
from storage.answers import Answer, AnswerRepo, Closed
from storage.conversations import ConversationRepo
from storage.ledger import Ledger
from storage.redact import short_user
from storage.steps import together

log = structlog.get_logger(__name__)


class ModelSide(Protocol):
    """The router's two ways to a model: the owner's channels, or a follower's own key."""

    def stream(self, model: str, messages: Sequence[ChatMessage], *, user: str,
               msg_key: str | None = None) -> AsyncIterator[Delta]: ...

    def own_key_stream(self, api_key: str, model: str, messages: Sequence[ChatMessage], *, user: str,
                       msg_key: str | None = None) -> AsyncIterator[Delta]: ...


@dataclass
class LiveAnswer:
    """What waiters in this process can see of a generation before it reaches storage."""

    raw: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # WeChat shows plain text; the companion page renders markdown itself
    plain: bool = True
    usage: Usage | None = None
    # done, and the answer stored as finished (a waiter needs not read it back to know, and may plan
    # its reply from what the close returned)
    recorded: Closed | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        """Wake everyone waiting for more text (a web stream)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        """Return when the text grew or the generation ended."""
        if not self.done.is_set():
            await self._changed.wait()

    def shown(self) -> str:
        return to_plain(self.raw) if self.plain else self.raw


class Generator:
    def __init__(self, cfg: Config, answers: AnswerRepo, conversations: ConversationRepo, models: ModelSide,
                 ledger: Ledger, check: AnswerCheck, holder: str, *,
                 own_key_for: Callable[[str], Awaitable[str | None]] | None = None,
                 after_finish: Callable[[Answer], Awaitable[None]] | None = None,
                 pictures: QuestionPictures | None = None, clock=time.time) -> None:
        self.cfg = cfg
        self.answers = answers
        self.conversations = conversations
        self.models = models
        self.ledger = ledger
        self.check = check
        self.holder = holder
        # looks up a follower's own API key again when a generation is taken over after a crash
        self.own_key_for = own_key_for
        # called once a generation is final (active mode pushes from here)
        self.after_finish = after_finish
        # the pictures questions are about (fetched when the generation starts)
        self.pictures = pictures
        self.clock = clock
        self.live: dict[int, LiveAnswer] = {}
        self._tasks: set[asyncio.Task] = set()

    def start(self, answer: Answer, turns: list[tuple[str, str]] | None = None, own_key: str | None = None) -> None:
        """Generate `answer` in the background; `turns` is its conversation so far when already read."""
        live = self.live.setdefault(answer.id, LiveAnswer(plain=answer.route != "web"))
        task = asyncio.create_task(self._run(answer, live, turns, own_key), name=f"generation-{answer.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        # Cancelling loses nothing: the lease runs out and a restarted process takes the answer over.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until no generation runs (tests and graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def reviewed(self, live: LiveAnswer) -> str:
        """The part of a growing answer that may be shown: plain text, checked, no word cut in half."""
        r = await self.check.review(live.shown(), final=False)
        return r.text[: r.upto]

    async def reviewed_markdown(self, live: LiveAnswer) -> str:
        """The same, as the model writes it (markdown), for the answer page to render."""
        if not live.plain:
            return await self.reviewed(live)
        r = await self.check.review(live.raw, final=False)
        return r.text[: r.upto]

    async def _context(self, answer: Answer, turns: list[tuple[str, str]] | None) -> list[ChatMessage]:
        c = self.cfg.chat
        if turns is None:
            turns = []
            if answer.conversation_id is not None:
                turns = await self.conversations.recent_turns(answer.conversation_id, c.max_turns * 2)
        budget = c.max_context_tokens - estimate_tokens(c.system_prompt) - estimate_tokens(answer.question)
        kept: list[ChatMessage] = []
        for role, content in reversed(turns):
            budget -= estimate_tokens(content)
            if budget < 0:
                break
            kept.append(ChatMessage(role, content))  # type: ignore[arg-type]
        kept.reverse()
        if kept and kept[0].role == "assistant":
            kept = kept[1:]
        image = None
        if answer.picture_id is not None:
            if self.pictures is None:
                raise PictureUnavailable("pictures are off")
            image = await self.pictures.image(answer.picture_id)
        return [ChatMessage("system", c.system_prompt), *kept, ChatMessage("user", answer.question, image)]

    def heading(self, answer: Answer) -> str:
        """What goes above the answer: for a voice question, what was heard."""
        if answer.heard is None:
            return ""
        return self.cfg.texts.voice_heard.format(text=answer.heard) + "\n\n"

    async def _keep_lease(self, answer: Answer, live: LiveAnswer) -> None:
        c = self.cfg.chat
        every = min(c.progress_flush_interval, c.lease_seconds / 3)
        written = None
        last_renewal = self.clock()
        while True:
            await asyncio.sleep(every)
            now = self.clock()
            if live.raw == written and now - last_renewal < c.lease_seconds / 3:
                continue
            text = await self.reviewed(live)
            markdown = await self.reviewed_markdown(live) if live.plain else None
            ok = await self.answers.save_progress(answer.id, self.holder, text, now + c.lease_seconds,
                                                  now if text else None, markdown)
            if not ok:
                raise LeaseLost()
            written, last_renewal = live.raw, now

    def _stream(self, answer: Answer, messages: list[ChatMessage], own_key: str | None) -> AsyncIterator[Delta]:
        if own_key:
            return self.models.own_key_stream(own_key, answer.model, messages, user=answer.openid,
                                              msg_key=answer.msg_key)
        return self.models.stream(answer.model, messages, user=answer.openid, msg_key=answer.msg_key)

    def _failure_text(self, err: ProviderError, answer: Answer, own_key: str | None) -> str:
        texts = self.cfg.texts
        if isinstance(err, ModelUnavailable):
            return texts.model_unavailable.format(model=answer.model)
        if own_key and err.kind == "auth":
            return texts.own_key_rejected
        return texts.refused if err.kind == "refused" else texts.model_error

    async def _run(self, answer: Answer, live: LiveAnswer, turns: list[tuple[str, str]] | None,
                   own_key: str | None) -> None:
        bound = log.bind(answer=answer.id, msg_id=answer.msg_key, user=short_user(answer.openid), model=answer.model)
        texts = self.cfg.texts
        started = self.clock()
        status, note = "done", None
        usage: Usage | None = None
        messages: list[ChatMessage] | None = None
        head = self.heading(answer)
        live.raw = head
        keeper = asyncio.create_task(self._keep_lease(answer, live))
        try:
            messages = await self._context(answer, turns)
            async with asyncio.timeout(max(0.0, answer.deadline_at - self.clock())):
                async for delta in _racing(self._stream(answer, messages, own_key), keeper):
                    if isinstance(delta, Usage):
                        usage = live.usage = delta
                    else:
                        live.raw += delta
                        live.notify()
        except LeaseLost:
            bound.warning("generation_lease_lost")
            live.done.set()
            live.notify()
            self.live.pop(answer.id, None)
            return
        except TimeoutError:
            status, note = ("cut", texts.cut) if live.raw != head else ("timed_out", texts.deadline)
        except PictureUnavailable:
            status, note = "failed", texts.picture_failed
        except ProviderError as e:
            bound.warning("generation_failed", kind=e.kind, status=e.status, had_text=live.raw != head)
            status, note = ("cut", texts.cut) if live.raw != head else ("failed", self._failure_text(e, answer, own_key))
        except Exception:  # a bug must not leave the user without an answer, nor the answer dangling
            bound.exception("generation_crashed")
            status, note = ("cut", texts.cut) if live.raw != head else ("failed", texts.model_error)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        try:
            body = (await self.check.review(live.shown())).text if live.raw != head else ""
            # a cut answer's usage never came (it is the stream's last item): estimated from what was delivered
            said = live.raw.removeprefix(head)
            markdown = (await self.check.review(live.raw)).text if live.plain and live.raw != head else None
            closed = await self._close(answer, status, body, note,
                                       delivered_usage(usage if status == "done" else None, messages,
                                                       answer.question, self.cfg.chat.system_prompt, said),
                                       markdown)
            live.recorded = closed
            if answer.picture_id is not None and self.pictures is not None:
                await self.pictures.done(answer.picture_id)
        except Exception:
            # the answer stays generating in storage: recovery takes it over when its lease runs out
            bound.exception("generation_close_failed", status=status)
            return
        finally:
            # whatever happened, nobody may wait on this process's live text any longer (the web
            # chat's stream and the answer page read storage from here on)
            live.done.set()
            live.notify()
            self.live.pop(answer.id, None)
        bound.info("generation_finished", status=status, seconds=round(self.clock() - started, 3),
                   prompt_tokens=usage.prompt_tokens if usage else None,
                   completion_tokens=usage.completion_tokens if usage else None, recorded=closed is not None)
        if closed is not None and self.after_finish is not None:
            await self.after_finish(answer)

    async def _close(self, answer: Answer, status: str, body: str, note: str | None,
                     usage: Usage | None = None, markdown: str | None = None) -> Closed | None:
        """Settle or refund the question's credits and make the answer final, in one transaction:
        never an answer delivered but refunded, nor credits taken for an answer left generating."""
        if status in ("done", "cut"):
            spent, estimated = self._spent(answer, body, usage)
            credits = self.ledger.settle_step(answer.msg_key, spent, estimated=estimated)
        else:
            credits = self.ledger.refund_step(answer.msg_key)
        text = "\n".join(part for part in (body, note) if part)
        # the conversation keeps what was said: a picture as a placeholder, the answer without its heading
        question = answer.question
        if answer.picture_id is not None:
            question = f"{self.cfg.media.picture_placeholder} {question}"
        said = body.removeprefix(self.heading(answer).strip()).strip() if answer.heard is not None else body
        turns = (question, said) if status in ("done", "cut") and said else None
        page = "\n".join(part for part in (markdown, note) if part) if markdown is not None else None
        _, closed = await together(credits, self.answers.finish_step(answer.id, self.holder, status, text,
                                                                     self.clock(), turns, page))
        return closed

    def _spent(self, answer: Answer, body: str, usage: Usage | None) -> tuple[int | None, bool]:
        """What a token-priced answer spent, in milli-credits (None: a fixed cost spends what it
        reserved), and whether the usage was estimated. The answer's fixed extras (a picture's
        image_cost, hearing a voice message) are charged as reserved; the settle never takes more than
        the reservation (an own key's reserved only the extras, so its tokens cost nothing)."""
        price = TokenPrice.of(self.cfg.models.get(answer.model))
        if price is None:
            return None, False
        if usage is None:
            said = body.removeprefix(self.heading(answer).strip()).strip() if answer.heard is not None else body
            usage = delivered_usage(None, None, answer.question, self.cfg.chat.system_prompt, said)
        model = self.cfg.models[answer.model]
        extras = (model.image_cost if answer.picture_id is not None else 0) + (
            self.cfg.speech.cost if answer.heard is not None else 0)
        return extras * 1000 + price.milli(usage), usage.estimated

    async def recover(self) -> int:
        """Take over generations whose process died; restart them, or close them if text was given out."""
        now = self.clock()
        claimed = await self.answers.claim_stale(now, self.holder, now + self.cfg.chat.lease_seconds)
        for answer in claimed:
            bound = log.bind(answer=answer.id, msg_id=answer.msg_key, user=short_user(answer.openid))
            if now >= answer.deadline_at:
                status = "cut" if answer.text else "timed_out"
                await self._close(answer, status, answer.text, self.cfg.texts.cut if answer.text else self.cfg.texts.deadline)
                bound.info("generation_recovered", action="closed_past_deadline")
            elif await self.answers.reset_text(answer.id, self.holder):
                bound.info("generation_recovered", action="restarted")
                own_key = await self.own_key_for(answer.openid) if self.own_key_for else None
                self.start(answer, own_key=own_key)
            else:
                await self._close(answer, "cut", answer.text, self.cfg.texts.cut)
                bound.info("generation_recovered", action="closed_partly_delivered")
        return len(claimed)


class LeaseLost(Exception):
    """Another process took this generation over: this one must stop writing."""


async def _racing(stream: AsyncIterator[Delta], keeper: asyncio.Task) -> AsyncIterator[Delta]:
    """Iterate the stream, but stop at once if the lease keeper fails (lease lost, storage down)."""
    it = stream.__aiter__()
    nxt: asyncio.Future | None = None
    try:
        while True:
            nxt = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({nxt, keeper}, return_when=asyncio.FIRST_COMPLETED)
            if nxt in done:
                try:
                    delta = nxt.result()
                except StopAsyncIteration:
                    return
                yield delta
                continue
            keeper.result()  # raises LeaseLost (or the storage error)
            return
    finally:
        # A cancelled wait (the deadline) leaves the stream mid-step: stop that step before closing.
        if nxt is not None and not nxt.done():
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
