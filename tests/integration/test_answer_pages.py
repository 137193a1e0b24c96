"""Answer pages in storage: one token per answer, expiry, "read on the page", and pruning with the answer."""

from __future__ import annotations

import time

from storage.answer_pages import AnswerPageRepo
from storage.answers import AnswerRepo, Draft
from storage.inbound import InboundRepo
from storage.retention import prune


async def _answer(db, msg_key: str = "m1", now: float | None = None):
    now = time.time() if now is None else now
    await InboundRepo(db).receive(msg_key, "o_p", "text", now)  # the message the answer is for
    new = await AnswerRepo(db).create(Draft(openid="o_p", msg_key=msg_key, question="问题", model="m", route="reply",
                                            now=now, deadline_at=now + 60, holder="h", lease_until=now + 30,
                                            asked_before=now - 100, idle=1800, max_turns=5))
    return new.answer


async def test_every_process_gets_the_same_token_for_an_answer(db):
    answer = await _answer(db)
    pages = AnswerPageRepo(db)
    first = await pages.ensure(answer.id, "A" * 32, time.time(), time.time() + 60)
    again = await pages.ensure(answer.id, "B" * 32, time.time(), time.time() + 60)
    assert first == again == "A" * 32
    opened = await pages.open(first, time.time())
    assert opened is not None and opened.answer_id == answer.id and opened.question == "问题"
    assert await pages.open("B" * 32, time.time()) is None
    assert await pages.open(first, time.time() + 61) is None  # expired


async def test_read_on_the_page_moves_delivery_only_for_the_final_text_it_showed(db):
    answer = await _answer(db)
    answers, pages = AnswerRepo(db), AnswerPageRepo(db)
    assert await answers.save_progress(answer.id, "h", "写了一半", time.time() + 30, time.time())
    assert not await pages.mark_read(answer.id, 4)  # still being written
    assert await answers.finish(answer.id, "h", "done", "写了一半，写完了。", time.time(), None)
    assert not await pages.mark_read(answer.id, 4)  # not what the page showed
    assert await pages.mark_read(answer.id, len("写了一半，写完了。"))
    row = await answers.get(answer.id)
    assert row is not None and row.delivered_upto == len(row.text) and not row.awaiting_fetch
    assert await answers.oldest_owed("o_p", time.time() + 1000) is None


async def test_pruning_an_answer_takes_its_page_with_it(db):
    old = await _answer(db, "old", now=time.time() - 100 * 86400)
    await AnswerRepo(db).finish(old.id, "h", "done", "旧回答。", time.time(), None)
    pages = AnswerPageRepo(db)
    token = await pages.ensure(old.id, "C" * 32, time.time(), time.time() + 60)
    pruned = await prune(db, time.time() - 90 * 86400)
    assert pruned.answers == 1
    assert await pages.open(token, time.time()) is None
    assert (await db.fetchone("SELECT COUNT(*) AS n FROM answer_pages"))["n"] == 0
