"""Generations: one task per answer, streaming from the model into storage under a lease.

The task keeps the growing text in memory for waiters in this process and writes it to storage
every `progress_flush_interval` (renewing its lease), so another process — or this one after a
restart — can see what is complete. Each generation has a deadline; past it the user gets what was
written plus a note, or a clear message, and nothing dangles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from bot.chat.textparts import to_plain
from bot.config import Config
from bot.providers.base import ChatMessage, Delta, ProviderError, Usage, estimate_tokens
from storage.answers import Answer, AnswerRepo
from storage.conversations import ConversationRepo

log = structlog.get_logger(__name__)


class Gateway(Protocol):
    def stream(self, model: str, messages: Sequence[ChatMessage], *, user: str) -> AsyncIterator[Delta]: ...


@dataclass
class LiveAnswer:
    """What waiters in this process can see of a generation before it reaches storage."""

    raw: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return to_plain(self.raw)


class Generator:
    def __init__(self, cfg: Config, answers: AnswerRepo, conversations: ConversationRepo, gateway: Gateway,
                 owner: str, clock=time.time, after_finish=None) -> None:
        self.cfg = cfg
        self.answers = answers
        self.conversations = conversations
        self.gateway = gateway
        self.owner = owner
        self.clock = clock
        # called with the answer id once a generation is final (active mode pushes from here)
        self.after_finish = after_finish
        self.live: dict[int, LiveAnswer] = {}
        self._tasks: set[asyncio.Task] = set()

    def start(self, answer: Answer, turns: list[tuple[str, str]] | None = None) -> None:
        """Generate `answer` in the background; `turns` is its conversation so far when already read."""
        live = self.live.setdefault(answer.id, LiveAnswer())
        task = asyncio.create_task(self._run(answer, live, turns), name=f"generation-{answer.id}")
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
        return [ChatMessage("system", c.system_prompt), *kept, ChatMessage("user", answer.question)]

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
            text = live.text
            ok = await self.answers.save_progress(answer.id, self.owner, text, now + c.lease_seconds,
                                                  now if text else None)
            if not ok:
                raise LeaseLost()
            written, last_renewal = live.raw, now

    async def _run(self, answer: Answer, live: LiveAnswer, turns: list[tuple[str, str]] | None) -> None:
        bound = log.bind(answer=answer.id, msg_id=answer.msg_key, user=answer.openid[-6:], model=answer.model)
        texts = self.cfg.texts
        started = self.clock()
        status, note = "done", None
        usage: Usage | None = None
        keeper = asyncio.create_task(self._keep_lease(answer, live))
        try:
            messages = await self._context(answer, turns)
            async with asyncio.timeout(max(0.0, answer.deadline_at - self.clock())):
                stream = self.gateway.stream(answer.model, messages, user=answer.openid)
                async for delta in _racing(stream, keeper):
                    if isinstance(delta, Usage):
                        usage = delta
                    else:
                        live.raw += delta
        except LeaseLost:
            bound.warning("generation_lease_lost")
            live.done.set()
            self.live.pop(answer.id, None)
            return
        except TimeoutError:
            status, note = ("cut", texts.cut) if live.raw else ("timed_out", texts.deadline)
        except ProviderError as e:
            bound.warning("generation_failed", kind=e.kind, status=e.status, had_text=bool(live.raw))
            if live.raw:
                status, note = "cut", texts.cut
            else:
                status, note = "failed", texts.refused if e.kind == "refused" else texts.model_error
        except Exception:  # a bug must not leave the user without an answer, nor the answer dangling
            bound.exception("generation_crashed")
            status, note = ("cut", texts.cut) if live.raw else ("failed", texts.model_error)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        body = live.text
        text = "\n".join(part for part in (body, note) if part)
        turns = (answer.question, body) if status in ("done", "cut") and body else None
        finished = await self.answers.finish(answer.id, self.owner, status, text, self.clock(), turns)
        live.done.set()
        self.live.pop(answer.id, None)
        bound.info("generation_finished", status=status, seconds=round(self.clock() - started, 3),
                   prompt_tokens=usage.prompt_tokens if usage else None,
                   completion_tokens=usage.completion_tokens if usage else None, recorded=finished)
        if finished and self.after_finish is not None:
            await self.after_finish(answer)

    async def recover(self) -> int:
        """Take over generations whose process died; restart them, or close them if text was given out."""
        now = self.clock()
        claimed = await self.answers.claim_stale(now, self.owner, now + self.cfg.chat.lease_seconds)
        for answer in claimed:
            bound = log.bind(answer=answer.id, msg_id=answer.msg_key, user=answer.openid[-6:])
            if now >= answer.deadline_at:
                text = "\n".join(p for p in (answer.text, self.cfg.texts.cut if answer.text else self.cfg.texts.deadline) if p)
                await self.answers.finish(answer.id, self.owner, "cut" if answer.text else "timed_out", text, now, None)
                bound.info("generation_recovered", action="closed_past_deadline")
            elif await self.answers.reset_text(answer.id, self.owner):
                bound.info("generation_recovered", action="restarted")
                self.start(answer)
            else:
                text = "\n".join((answer.text, self.cfg.texts.cut))
                await self.answers.finish(answer.id, self.owner, "cut", text, now, (answer.question, answer.text))
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
