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
from bot.chat.textparts import reserve, take_part, utf8_len
from bot.config import Config
from bot.wechat.api import WeChatAPI, WeChatAPIError
from storage.answers import Answer, AnswerRepo
from storage.redact import short_user

log = structlog.get_logger(__name__)


def _join(*lines: str | None) -> str:
    return "\n".join(line for line in lines if line)


class ReplyPlanner:
    """Builds the text of one reply from an answer's undelivered rest."""

    def __init__(self, cfg: Config) -> None:
        self.max_bytes = cfg.wechat.max_reply_bytes
        self.texts = cfg.texts

    def plan(self, answer: Answer, note: str | None) -> tuple[str, int, bool]:
        """(reply, new delivered offset, whether the user is still owed more)."""
        tail_lines = self.texts.more_marker + ("\n" + note if note else "")
        budget = reserve(self.max_bytes, tail_lines)
        part, upto = take_part(answer.text, answer.delivered_upto, budget, complete=answer.finished)
        rest_owed = not answer.finished or bool(answer.text[upto:].strip())
        if not part:
            # Nothing whole to give yet (or the rest was taken by another message meanwhile).
            if not answer.finished:
                return _join(self.texts.thinking, note), answer.delivered_upto, True
            return _join(self.texts.nothing_waiting, note), answer.delivered_upto, False
        if not rest_owed and utf8_len(_join(part, note)) <= self.max_bytes:
            return _join(part, note), upto, False
        return _join(part, self.texts.more_marker if rest_owed else None, note), upto, rest_owed


class Pusher:
    """Active mode: customer-service messages, at most `push_budget` per user message."""

    def __init__(self, cfg: Config, api: WeChatAPI, answers: AnswerRepo, holder: str, clock=time.time) -> None:
        self.cfg = cfg
        self.api = api
        self.answers = answers
        self.holder = holder
        self.clock = clock

    async def push_pending(self, answer_id: int | None = None) -> int:
        """Push every finished, unpushed answer this process can claim; return how many it handled."""
        now = self.clock()
        claimed = await self.answers.claim_push(now, self.holder, now + self.cfg.chat.lease_seconds, answer_id)
        for answer in claimed:
            await self._push(answer)
        return len(claimed)

    async def _push(self, answer: Answer) -> None:
        max_bytes = self.cfg.wechat.max_reply_bytes
        marker = self.cfg.texts.more_marker
        upto = answer.delivered_upto
        bound = log.bind(answer=answer.id, user=short_user(answer.openid))
        for sent in range(self.cfg.wechat.push_budget):
            last_allowed = sent == self.cfg.wechat.push_budget - 1
            part, new_upto = take_part(answer.text, upto, max_bytes, complete=True)
            if not part:
                break
            more = bool(answer.text[new_upto:].strip())
            if more and last_allowed:
                # The budget's last message: leave room for the marker, the rest is fetched.
                part, new_upto = take_part(answer.text, upto, reserve(max_bytes, marker), complete=True)
                part = _join(part, marker)
            try:
                await self.api.send_text(answer.openid, part)
            except WeChatAPIError as e:
                bound.warning("push_failed", errcode=e.errcode, parts_sent=sent)
                await self.answers.record_push(answer.id, self.holder, upto, owed=True, done=True)
                return
            upto = new_upto
            await self.answers.record_push(answer.id, self.holder, upto, owed=False, done=False)
        owed = bool(answer.text[upto:].strip())
        await self.answers.record_push(answer.id, self.holder, upto, owed=owed, done=True)
        bound.info("pushed", owed=owed)
        if not owed and upto > answer.delivered_upto:
            metrics.answer_delivered(metrics.delivery_outcome(status=answer.status, pushed=True),
                                     self.clock() - answer.created_at)
