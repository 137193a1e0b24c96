"""PostgreSQL stores a reply by planning from a read and writing in one call (mpgpt_store_reply,
migration 0026) only if the answer is still the version it read. These show the guard: a reply
planned from an older version, or against a page token made meanwhile, writes nothing."""

from __future__ import annotations

import time

from storage.answer_pages import AnswerPageRepo
from storage.answers import AnswerRepo, Draft, Taken
from storage.inbound import InboundRepo
from storage.postgres import PostgresDatabase
from storage.steps import together

STORE = ("SELECT reply, planned FROM mpgpt_store_reply(CAST(? AS BIGINT), ?, ?, CAST(? AS TEXT), CAST(? AS TEXT),"
         " CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT),"
         " ?, CAST(? AS DOUBLE PRECISION))")


async def _answer(db: PostgresDatabase, now: float) -> int:
    answers = AnswerRepo(db)
    for key in ("m_first", "m_second"):
        await InboundRepo(db).receive(key, "o_calls", "text", now)
    new = await answers.create(Draft(openid="o_calls", msg_key="m_first", question="q", model="m", route="reply",
                                     now=now, deadline_at=now + 15, holder="h", lease_until=now + 30, asked_before=now,
                                     idle=600, max_turns=4))
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


async def _closed(db: PostgresDatabase, now: float):
    answers = AnswerRepo(db)
    await InboundRepo(db).receive("m_own", "o_closed", "text", now)
    new = await answers.create(Draft(openid="o_closed", msg_key="m_own", question="q", model="m", route="reply",
                                     now=now, deadline_at=now + 15, holder="h", lease_until=now + 30, asked_before=now,
                                     idle=600, max_turns=4))
    (closed,) = await together(answers.finish_step(new.answer.id, "h", "done", "答案。" * 5, now, None))
    assert closed is not None and closed.state["version"] == await _version(db, new.answer.id)
    return new.answer.id, closed


async def test_the_first_reply_is_planned_from_what_the_close_returned(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=3) as db:
        now = time.time()
        answer_id, closed = await _closed(db, now)
        seen: list[str] = []

        def plan(a, token):
            seen.append(a.text)
            return Taken(a.text, len(a.text), False)

        took = await AnswerRepo(db).take_reply("m_own", answer_id, plan, now, closed=closed)
        assert took.reply == "答案。" * 5 and took.planned is not None and seen == ["答案。" * 5]
        assert (await AnswerRepo(db).get(answer_id)).delivered_upto == len("答案。" * 5)
        assert (await db.fetchone("SELECT reply FROM inbound WHERE msg_key = 'm_own'"))["reply"] == took.reply


async def test_a_close_that_is_no_longer_the_answers_version_is_read_again(postgres_url: str):
    async with PostgresDatabase(postgres_url, pool_size=3) as db:
        now = time.time()
        answer_id, closed = await _closed(db, now)
        # another delivery (another host) gave out the first part after the close
        await db.write_one("UPDATE answers SET delivered_upto = 6 WHERE id = ?", (answer_id,))
        uptos: list[int] = []

        def plan(a, token):
            uptos.append(a.delivered_upto)
            return Taken(a.text[a.delivered_upto:], len(a.text), False)

        took = await AnswerRepo(db).take_reply("m_own", answer_id, plan, now, closed=closed)
        # planned first from the close (nothing stored), then from the answer as it is
        assert uptos == [0, 6] and took.reply == ("答案。" * 5)[6:] and took.planned is not None
        # a retry of the message holding the same close gets the stored reply, planning nothing kept
        other = await AnswerRepo(db).take_reply("m_own", answer_id, plan, now, closed=closed)
        assert other.reply == took.reply and other.planned is None
