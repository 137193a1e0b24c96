"""PostgreSQL stores a reply by planning from a read and writing in one call (mpgpt_store_reply,
migration 0026) only if the answer is still the version it read. These show the guard: a reply
planned from an older version, or against a page token made meanwhile, writes nothing."""

from __future__ import annotations

import time

from storage.answer_pages import AnswerPageRepo
from storage.answers import AnswerRepo, Taken
from storage.inbound import InboundRepo
from storage.postgres import PostgresDatabase

STORE = ("SELECT reply, planned FROM mpgpt_store_reply(CAST(? AS BIGINT), ?, ?, CAST(? AS TEXT), CAST(? AS TEXT),"
         " CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT),"
         " ?, CAST(? AS DOUBLE PRECISION))")


async def _answer(db: PostgresDatabase, now: float) -> int:
    answers = AnswerRepo(db)
    for key in ("m_first", "m_second"):
        await InboundRepo(db).receive(key, "o_calls", "text", now)
    new = await answers.create(openid="o_calls", msg_key="m_first", question="q", model="m", route="reply",
                               now=now, deadline_at=now + 15, holder="h", lease_until=now + 30, asked_before=now,
                               idle=600, max_turns=4)
    assert await answers.finish(new.answer.id, "h", "done", "0123456789" * 3, now, None)
    return new.answer.id


async def _version(db: PostgresDatabase, answer_id: int) -> str:
    row = await db.fetchone("SELECT xmin::text AS v FROM answers WHERE id = ?", (answer_id,))
    return row["v"]


async def test_a_reply_planned_from_an_older_answer_writes_nothing(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=3) as db:
        now = time.time()
        answer_id = await _answer(db, now)
        seen = await _version(db, answer_id)
        await db.write_one("UPDATE answers SET labelled = 1 WHERE id = ?", (answer_id,))  # another host's step
        rows = await db.write_one(STORE, (answer_id, "m_first", seen, None, None, None, None, 10, 1, 0, "part", now))
        assert rows[0]["reply"] is None
        answer = await AnswerRepo(db).get(answer_id)
        assert answer.delivered_upto == 0
        assert (await db.fetchone("SELECT reply FROM inbound WHERE msg_key = 'm_first'"))["reply"] is None
        # planned from the version that is there now, it is stored; asked again, the stored reply stands
        current = await _version(db, answer_id)
        for planned in (True, False):
            rows = await db.write_one(STORE, (answer_id, "m_first", current, None, None, None, None, 10, 1, 0,
                                              "part", now))
            assert (rows[0]["reply"], rows[0]["planned"]) == ("part", planned)
        assert (await AnswerRepo(db).get(answer_id)).delivered_upto == 10


async def test_a_reply_linking_a_page_made_meanwhile_writes_nothing(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=3) as db:
        now = time.time()
        answer_id = await _answer(db, now)
        seen = await _version(db, answer_id)
        # the answer page was made by another path after the read (it does not lock the answer)
        assert await AnswerPageRepo(db).ensure(answer_id, "t" * 22, now, now + 3600) == "t" * 22
        rows = await db.write_one(STORE, (answer_id, "m_second", seen, None, None, "u" * 22, now + 3600, 30, 0, 0,
                                          "link u", now))
        assert rows[0]["reply"] is None
        assert (await db.fetchone("SELECT reply FROM inbound WHERE msg_key = 'm_second'"))["reply"] is None
        # take_reply reads again and links the page that exists
        took = await AnswerRepo(db).take_reply(
            "m_second", answer_id, lambda a, token: Taken(f"link {token}", len(a.text), False, linked=True), now,
            page=("v" * 22, now + 3600))
        assert took.reply == "link " + "t" * 22 and took.planned is not None
        # a second delivery of the message finds the reply stored: it planned nothing that was kept
        again = await AnswerRepo(db).take_reply(
            "m_second", answer_id, lambda a, token: Taken("another", len(a.text), False), now)
        assert again.reply == took.reply and again.planned is None
