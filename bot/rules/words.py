"""Rule: a question with a block-list word is refused; mask-list words are starred out before the
model sees the question. Logs name the dictionaries, never the question."""

from __future__ import annotations

import structlog

from bot.rules.base import GO, SENSITIVE_QUESTION, Go, Question, Refusal
from bot.rules.wordfilter import WordFilter
from storage.redact import short_user

log = structlog.get_logger(__name__)


class WordsRule:
    name = "words"

    def __init__(self, words: WordFilter, text: str, mask_char: str = "*") -> None:
        self.words = words
        self.text = text
        self.mask_char = mask_char

    async def check(self, q: Question) -> Go | Refusal:
        await self.words.refresh()
        scan = self.words.scan(q.text)
        if not scan.hits:
            return GO
        log.info("words.question_hit", dictionaries=scan.dictionaries, blocked=scan.blocked, user=short_user(q.openid))
        if scan.blocked:
            return Refusal(SENSITIVE_QUESTION, self.text)
        return Go(text=scan.mask(q.text, self.mask_char))
