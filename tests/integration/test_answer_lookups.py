"""A question looks for an older answer the follower is still owed (storage.answers._OWED), and so
do 继续 and the push job. It must read an index of the owed answers, not every answer ever given:
before migration 0026 both engines scanned the whole answers table for each question."""

from __future__ import annotations

from storage.answers import _OWED, AnswerRepo

FILL = ("INSERT INTO answers (openid, msg_key, question, model, route, created_at, deadline_at, status, text,"
        " delivered_upto) VALUES (?, ?, 'q', 'm', 'reply', ?, 0, ?, 'abc', ?)")


async def test_the_owed_answer_is_found_through_the_index_of_owed_answers(db):
    def fill(conn):
        for i in range(300):
            conn.execute("INSERT INTO users (openid, first_seen, last_seen) VALUES (?, 0, 0)", (f"o{i}",))
        for i in range(3000):  # wholly delivered answers of 300 followers
            conn.execute(FILL, (f"o{i % 300}", f"k{i}", i, "done", 3))
        conn.execute(FILL, ("o7", "owed-late", 5000, "done", 1))  # a late answer, one character given
        conn.execute(FILL, ("o7", "owed-new", 6000, "generating", 0))

    await db.write(fill)
    await (db.fetchall("ANALYZE answers") if db.engine == "postgresql" else db.write(lambda c: c.execute("ANALYZE")))
    explain = "EXPLAIN " if db.engine == "postgresql" else "EXPLAIN QUERY PLAN "
    plan = " ".join(str(tuple(r)) for r in await db.fetchall(explain + _OWED, ("o7", 5500.0)))
    assert "answers_still_owed" in plan, plan
    # and it finds the right one: the oldest owed answer asked before the cut-off, none for others
    repo = AnswerRepo(db)
    assert (await repo.oldest_owed("o7", 5500.0)).msg_key == "owed-late"
    assert (await repo.oldest_owed("o7", 4000.0)) is None
    assert (await repo.oldest_owed("o8", 9999.0)) is None
    # an answer stops being owed when its last part is delivered (the column follows the row)
    await db.write(lambda conn: conn.execute("UPDATE answers SET delivered_upto = 3 WHERE msg_key = 'owed-late'"))
    assert (await repo.oldest_owed("o7", 5500.0)) is None
