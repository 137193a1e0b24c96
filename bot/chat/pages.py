"""The answer page's side of the chat: which answer a token opens, and the answer as it is written.

Works whichever process generates the answer: the text is followed in storage (a cheap status and
length check every `answer_page.poll_interval`, the text read again only when it changed). When the
generation runs in this very process, its text is shown as it is written instead (checked as the web
chat's is), so the page is as quick as the web chat. The page shows the answer as the model wrote it
(markdown, rendered by the page like the web chat's), where chat replies carry it as plain text.

"Read on the page": once a browser's stream has been given the final answer whole, chat owes the
follower nothing more of it (delivered_upto moves to the end, as if 继续 had fetched it all), so the
next message is not answered with text already read. A bare GET (a link preview, a page read
without JavaScript) marks nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bot import metrics
from bot.chat.generation import Generator
from bot.chat.labels import LABELLED_STATUSES, Labels
from bot.config import Config
from storage.answer_pages import AnswerPageRepo, PageAnswer

# What a token looks like (PageLinks.new_token: 32 URL-safe characters); anything else is not looked up.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True, slots=True)
class PageEvent:
    """`replace` (the whole text so far), `delta` (more text), `done` (status, label), `keepalive`."""

    name: str
    data: Any


class AnswerPages:
    def __init__(self, cfg: Config, repo: AnswerPageRepo, generator: Generator, clock=time.time) -> None:
        self.cfg = cfg
        self.repo = repo
        self.generator = generator
        self.labels = Labels(cfg)
        self.clock = clock
        # a stream gives up after the longest a generation can take (the browser reconnects)
        self.longest = cfg.chat.generation_deadline + 2 * cfg.chat.lease_seconds

    async def open(self, token: str) -> PageAnswer | None:
        """The answer `token` opens; None for a malformed, unknown or expired token."""
        if not _TOKEN.fullmatch(token):
            return None
        return await self.repo.open(token, self.clock())

    def label(self, status: str) -> str | None:
        """The explicit label under (or above) the answer: for generated text only."""
        return self.labels.text if status in LABELLED_STATUSES else None

    @staticmethod
    def produce_id(page: PageAnswer) -> str:
        """The implicit label's content id: stable for the answer, reveals nothing about it."""
        return hashlib.sha256(page.msg_key.encode()).hexdigest()[:24]

    async def stream(self, page: PageAnswer) -> AsyncIterator[PageEvent]:
        """The text so far, then more as it is written, then `done`; the final text shown whole marks
        the answer read (see the module docstring)."""
        current = await self.repo.text(page.answer_id)
        if current is None:
            return
        status, sent = current
        yield PageEvent("replace", sent)
        give_up = self.clock() + self.longest
        quiet_since = self.clock()
        while status == "generating":
            now = self.clock()
            if now > give_up:
                return
            if now - quiet_since > self.cfg.answer_page.keepalive:
                yield PageEvent("keepalive", None)
                quiet_since = now
            live = self.generator.live.get(page.answer_id)
            if live is not None and not live.done.is_set():
                shown = await self.generator.reviewed_markdown(live)
                if len(shown) > len(sent) and shown.startswith(sent):
                    yield PageEvent("delta", shown[len(sent):])
                    sent, quiet_since = shown, self.clock()
                try:
                    await asyncio.wait_for(live.changed(), self.cfg.answer_page.poll_interval)
                except TimeoutError:
                    pass
                if not live.done.is_set():
                    continue
            else:
                await asyncio.sleep(self.cfg.answer_page.poll_interval)
                progress = await self.repo.progress(page.answer_id)
                if progress is None:
                    return  # pruned meanwhile
                if progress == (status, len(sent)):
                    continue
            current = await self.repo.text(page.answer_id)
            if current is None:
                return
            status, text = current
            if text == sent:
                continue
            if text.startswith(sent):
                yield PageEvent("delta", text[len(sent):])
            else:  # the final check masked something already shown
                yield PageEvent("replace", text)
            sent, quiet_since = text, self.clock()
        yield PageEvent("done", {"status": status, "label": self.label(status)})
        if await self.repo.mark_read(page.answer_id, len(sent)):
            metrics.answer_page_event("read")
