"""After the answer, before delivery: sensitive words on the model's text.

Mask-list words are starred out. Block-list words are starred out too, or, with
words.answer_action = "withhold", the answer is replaced by the configured sentence. While the
answer is still growing, `upto` says how much of it can be delivered without cutting a word that the
next characters might complete (deliver reviewed.text[:upto])."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from bot.rules.wordfilter import WordFilter

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Reviewed:
    text: str
    upto: int
    withheld: bool


class AnswerCheck:
    def __init__(self, words: WordFilter, action: str, mask_char: str, withheld_text: str) -> None:
        self.words = words
        self.action = action
        self.mask_char = mask_char
        self.withheld_text = withheld_text

    async def review(self, text: str, *, final: bool = True) -> Reviewed:
        await self.words.refresh()
        scan = self.words.scan(text)
        if scan.hits and (final or scan.blocked):
            log.info("words.answer_hit", dictionaries=scan.dictionaries, blocked=scan.blocked, action=self.action)
        if scan.blocked and self.action == "withhold":
            return Reviewed(self.withheld_text, len(self.withheld_text), True)
        masked = scan.mask(text, self.mask_char) if scan.hits else text
        return Reviewed(masked, len(masked) if final else self.words.safe_end(text), False)
