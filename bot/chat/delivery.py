"""How an answer reaches the user: which part goes into a reply, and pushes in active mode.

Passive replies and customer-service pushes both walk the answer with `take_part`, so a long answer
is given in parts of at most `max_reply_bytes` UTF-8 bytes, each ending at a paragraph or sentence
where possible. Whatever a push cannot deliver (window closed, budget used up, too long, any error)
stays owed and is fetched by the user's next message, as in passive mode.
"""

from __future__ import annotations

import time

import structlog

from bot import metrics
from bot.chat.labels import Labels, PageLinks
from bot.chat.textparts import reserve, take_part, utf8_len
from bot.config import Config
from bot.wechat.api import WeChatAPI, WeChatAPIError
from storage.answer_pages import AnswerPageRepo
from storage.answers import Answer, AnswerRepo, Taken
from storage.redact import short_user

log = structlog.get_logger(__name__)


def _join(*lines: str | None) -> str:
    return "\n".join(line for line in lines if line)


class ReplyPlanner:
    """Builds the text of one reply from an answer's undelivered rest."""

    def __init__(self, cfg: Config) -> None:
        self.max_bytes = cfg.wechat.max_reply_bytes
        self.texts = cfg.texts
        self.page = cfg.answer_page
        self.links = PageLinks(cfg)
        self.labels = Labels(cfg)

    def plan(self, answer: Answer, note: str | None, token: str | None = None) -> Taken:
        """The reply, the new delivered offset, whether the user is still owed more. With `token` (and
        server.public_url) a reply that cannot carry the whole answer links to its page."""
        link = self.links.url(token) if token is not None and self.links.on else None
        more = self.page.link_text.format(link=link) if link else self.texts.more_marker
        label = self.labels.due(answer)
        budget = reserve(self.max_bytes, _join(more, note, label))
        part, upto = take_part(answer.text, answer.delivered_upto, budget, complete=answer.finished)
        rest_owed = not answer.finished or bool(answer.text[upto:].strip())
        if not part:
            # Nothing whole to give yet (or the rest was taken by another message meanwhile).
            if not answer.finished:
                if link:
                    return Taken(_join(self.page.thinking_text.format(link=link), note), answer.delivered_upto,
                                 True, linked=True)
                return Taken(_join(self.texts.thinking, note), answer.delivered_upto, True)
            return Taken(_join(self.texts.nothing_waiting, note), answer.delivered_upto, False)
        # The last part in chat: the answer's end, or the part that hands the rest to the page.
        body, labelled = self.labels.around(part, label, first=answer.delivered_upto == 0,
                                            last=not rest_owed or link is not None)
        if not rest_owed and utf8_len(_join(body, note)) <= self.max_bytes:
            return Taken(_join(body, note), upto, False, labelled=labelled)
        return Taken(_join(body, more if rest_owed else None, note), upto, rest_owed,
                     linked=rest_owed and link is not None, labelled=labelled)


class Pusher:
    """Active mode: customer-service messages, at most `push_budget` per user message. When the
    budget cannot carry the whole answer, its last message links to the answer page (with
    server.public_url), else asks for 继续."""

    def __init__(self, cfg: Config, api: WeChatAPI, answers: AnswerRepo, holder: str, clock=time.time,
                 pages: AnswerPageRepo | None = None) -> None:
        self.cfg = cfg
        self.api = api
        self.answers = answers
        self.holder = holder
        self.clock = clock
        self.pages = pages
        self.links = PageLinks(cfg)
        self.labels = Labels(cfg)

    async def push_pending(self, answer_id: int | None = None) -> int:
        """Push every finished, unpushed answer this process can claim; return how many it handled."""
        now = self.clock()
        claimed = await self.answers.claim_push(now, self.holder, now + self.cfg.chat.lease_seconds, answer_id)
        for answer in claimed:
            await self._push(answer)
        return len(claimed)

    async def _more(self, answer: Answer) -> str:
        """The budget's last message ends with this: the page's link, or the 继续 marker."""
        if self.pages is None or not self.links.on:
            return self.cfg.texts.more_marker
        now = self.clock()
        token = await self.pages.ensure(answer.id, self.links.new_token(), now, self.links.expires_at(now))
        metrics.answer_page_event("linked")
        return self.cfg.answer_page.link_text.format(link=self.links.url(token))

    async def _push(self, answer: Answer) -> None:
        max_bytes = self.cfg.wechat.max_reply_bytes
        label = self.labels.due(answer)
        # every part keeps room for the label: which part is the last is known only once it is cut
        room = reserve(max_bytes, label) if label else max_bytes
        upto, labelled = answer.delivered_upto, False
        bound = log.bind(answer=answer.id, user=short_user(answer.openid))
        for sent in range(self.cfg.wechat.push_budget):
            last_allowed = sent == self.cfg.wechat.push_budget - 1
            part, new_upto = take_part(answer.text, upto, room, complete=True)
            if not part:
                break
            more = bool(answer.text[new_upto:].strip())
            tail = None
            if more and last_allowed:
                # The budget's last message: leave room for the link (or marker), the rest is fetched.
                tail = await self._more(answer)
                part, new_upto = take_part(answer.text, upto, reserve(max_bytes, _join(tail, label)), complete=True)
            part, with_label = self.labels.around(part, None if labelled else label, first=upto == 0,
                                                  last=not more or tail is not None)
            part = _join(part, tail)
            try:
                await self.api.send_text(answer.openid, part)
            except WeChatAPIError as e:
                bound.warning("push_failed", errcode=e.errcode, parts_sent=sent)
                await self.answers.record_push(answer.id, self.holder, upto, owed=True, done=True, labelled=labelled)
                return
            upto, labelled = new_upto, labelled or with_label
            await self.answers.record_push(answer.id, self.holder, upto, owed=False, done=False, labelled=labelled)
        owed = bool(answer.text[upto:].strip())
        await self.answers.record_push(answer.id, self.holder, upto, owed=owed, done=True, labelled=labelled)
        bound.info("pushed", owed=owed)
        if not owed and upto > answer.delivered_upto:
            metrics.answer_delivered(metrics.delivery_outcome(status=answer.status, pushed=True),
                                     self.clock() - answer.created_at)
