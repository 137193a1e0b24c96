"""`mpgpt words test TEXT` and `mpgpt words reload`.

test runs the very filter the server builds from [words] over a text and shows what a question and
an answer with it would become. reload checks every dictionary loads, then marks the files changed
(their modification time), which is what each running server watches: it rebuilds its filter within
`words.reload_interval` seconds, swapping it in whole.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bot.rules.wordfilter import DictionaryError, WordFilter
from scripts.owner.kit import Ctx, OwnerError, group, leaf, table


def register(subparsers: Any) -> None:
    words = group(subparsers, "words", "sensitive words: test a text, reload the dictionaries")
    p = leaf(words, "test", "what the word filter does with a text", words_test, needs="config")
    p.add_argument("text", help="the text to check")
    p = leaf(words, "reload", "check the dictionaries and make running servers load them now", words_reload)
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")


def _filter(ctx: Ctx) -> WordFilter:
    from bot.rules.chain import word_filter

    try:
        return word_filter(ctx.cfg)
    except DictionaryError as e:
        cause = e.__cause__
        detail = getattr(cause, "strerror", None) or type(cause).__name__
        raise OwnerError(f"dictionary {e} cannot be read: {detail}") from None


async def words_test(ctx: Ctx) -> None:
    text, w = ctx.args.text, ctx.cfg.words
    scan = _filter(ctx).scan(text)
    hits = [{"text": text[h.start:h.end], "start": h.start, "end": h.end, "action": h.action,
             "dictionaries": list(h.dictionaries)} for h in scan.hits]
    question = "refused" if scan.blocked else ("masked" if hits else "passes")
    if scan.blocked and w.answer_action == "withhold":
        answer = "withheld"
    else:
        answer = "masked" if hits else "passes"
    data = {"question": question, "answer": answer, "hits": hits,
            "masked_question": scan.mask(text, w.mask_char, ("mask",)) if not scan.blocked else None,
            "masked_answer": scan.mask(text, w.mask_char) if answer == "masked" else None}

    def render() -> str:
        lines = [f"as a question: {question}" + (f" -> {data['masked_question']}" if question == "masked" else ""),
                 f"as an answer:  {answer}" + (f" -> {data['masked_answer']}" if answer == "masked" else "")]
        if hits:
            lines += ["", table([(h["text"], h["action"], ", ".join(h["dictionaries"])) for h in hits],
                                ("MATCH", "ACTION", "DICTIONARIES"))]
        return "\n".join(lines)

    ctx.emit(data, render)


async def words_reload(ctx: Ctx) -> None:
    w = ctx.cfg.words
    if not w.dictionaries and not w.exceptions_file:
        raise OwnerError("no dictionaries configured ([words] dictionaries is empty)")
    words = _filter(ctx)
    now = time.time()
    paths = [ctx.cfg.resolve_path(d.path) for d in w.dictionaries]
    if w.exceptions_file:
        paths.append(ctx.cfg.resolve_path(w.exceptions_file))
    async with ctx.change("words.reload", "words", ctx.args.reason) as ch:
        for p in paths:
            os.utime(p, (now, now))
        ch.detail.update(dictionaries=[str(p) for p in paths], words=words.words)
    if w.reload_interval > 0:
        note = f"running servers load them within {w.reload_interval:g} s"
    else:
        note = "words.reload_interval is 0: running servers load them only when restarted"
    ctx.emit({"words": words.words, "files": [str(p) for p in paths], "reload_interval": w.reload_interval,
              "audit_id": ch.id}, f"{words.words} words in {len(w.dictionaries)} dictionaries load cleanly; {note}")
