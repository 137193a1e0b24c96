"""A generation saves its progress every chat.progress_flush_interval: on PostgreSQL each save must be
a HOT update (the new row version on the same page, no new index entries), or the answers table and
its indexes grow with every half second of every answer (shared/design/postgres.md). Migration 0024
keeps lease_until out of every index and leaves room on each page; this shows it holds."""

from __future__ import annotations

import time

from storage.answers import AnswerRepo, Draft
from storage.inbound import InboundRepo
from storage.postgres import PostgresDatabase

SAVES = 40


async def _updates(db: PostgresDatabase) -> tuple[int, int]:
    # the one statement connection reports its counts when it next goes idle (PostgreSQL 15)
    await db.fetchone("SELECT pg_stat_force_next_flush() IS NULL AS asked")
    row = await db.fetchone("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'answers'")
    assert row is not None
    return int(row["n_tup_upd"]), int(row["n_tup_hot_upd"])


async def test_saved_progress_is_a_hot_update(postgres_url: str):
    # pool_size 2: one connection for single statements, so every save and every count is on it
    async with PostgresDatabase(postgres_url, pool_size=2) as db:
        assert db.statements == 1
        answers = AnswerRepo(db)
        now = time.time()
        await InboundRepo(db).receive("m_hot", "o_hot", "text", now)
        new = await answers.create(Draft(openid="o_hot", msg_key="m_hot", question="写一首长诗", model="m",
                                         route="reply", now=now, deadline_at=now + 15, holder="h", lease_until=now + 30,
                                         asked_before=now, idle=600, max_turns=4))
        assert new.created
        before_upd, before_hot = await _updates(db)
        text = ""
        for i in range(SAVES):
            text += f"第{i}行，"
            assert await answers.save_progress(new.answer.id, "h", text, now + 30 + i, now)
        upd, hot = await _updates(db)
        assert upd - before_upd == SAVES
        # every save stayed on its page: no index entry was added for any of them
        assert hot - before_hot == SAVES
