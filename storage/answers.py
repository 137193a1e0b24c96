"""Answers: one generation per question (msg_key is unique), its text and its delivery state.

The process that inserts an answer owns its generation under a lease it keeps renewing; a lease
left to expire means that process died, and another one takes the answer over. What the user has
been given is `delivered_upto` characters of `text`; moving it is one transaction together with the
reply it went into, so no part is given twice or skipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from storage.conversations import current_conversation, recent_turns
from storage.db import Database
from storage.dialect import for_update, is_postgres
from storage.steps import Step, together

FINAL = ("done", "failed", "timed_out", "cut")


@dataclass(frozen=True, slots=True)
class Answer:
    id: int
    openid: str
    msg_key: str
    conversation_id: int | None
    question: str
    model: str
    status: str
    text: str
    delivered_upto: int
    awaiting_fetch: bool
    route: str
    # The process generating (or pushing) it now; the column kept its first name, lease_owner.
    lease_holder: str | None
    lease_until: float | None
    created_at: float
    deadline_at: float
    attempts: int
    # a voice question: what was heard (shown above the answer); None for typed questions
    heard: str | None = None
    # the picture the question is about (storage.pictures), if any
    picture_id: int | None = None
    # the AI-content label was given in chat (once per answer)
    labelled: bool = False

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def owed(self) -> bool:
        return not self.finished or self.delivered_upto < len(self.text)


def _answer(row) -> Answer:
    return Answer(row["id"], row["openid"], row["msg_key"], row["conversation_id"], row["question"], row["model"],
                  row["status"], row["text"], row["delivered_upto"], bool(row["awaiting_fetch"]), row["route"],
                  row["lease_owner"], row["lease_until"], row["created_at"], row["deadline_at"], row["attempts"],
                  row["heard"], row["picture_id"], bool(row["labelled"]))


@dataclass(frozen=True, slots=True)
class Taken:
    """One reply planned from an answer."""

    reply: str
    # the answer's new delivered_upto, and whether the user is still owed more of it
    upto: int
    owed: bool
    # the reply carries the answer page's link (its row is made in the same transaction)
    linked: bool = False
    # the reply carries the AI-content label
    labelled: bool = False


# (answer, the page token the reply may link to) -> the reply
ReplyPlanner = Callable[[Answer, str | None], Taken]


@dataclass(frozen=True, slots=True)
class TakenReply:
    """What take_reply stored (or found stored) for a message."""

    reply: str
    # the answer as planned from and the plan, when this call's plan is the one stored; None when
    # another delivery's reply stood (that delivery counts it)
    planned: tuple[Answer, Taken] | None


@dataclass(frozen=True, slots=True)
class Closed:
    """A generation made final. On PostgreSQL `state` is the answer as committed (its row, version
    and page token): the first reply can be planned from it without reading the answer back."""

    state: Any = None


@dataclass(frozen=True, slots=True)
class NewQuestion:
    answer: Answer
    # False when another delivery (or process) had already created the answer for this message
    created: bool
    # an older answer the user is still owed: this message's reply carries it
    owed_id: int | None
    # the conversation so far, for the model's context
    turns: list[tuple[str, str]]


# take_reply on PostgreSQL: plans tried against a changing answer before planning under its lock
_OPTIMISTIC_TRIES = 8

# take_reply's read: the answer, the message's stored reply and the answer's page token in one row
# ({version}: PostgreSQL's row version, for the plan made outside the lock)
_REPLY_STATE = ("SELECT a.*{version}, (SELECT reply FROM inbound WHERE msg_key = ?) AS stored_reply,"
                " (SELECT token FROM answer_pages WHERE answer_id = a.id) AS page_token"
                " FROM answers a WHERE a.id = ?")


@dataclass(frozen=True, slots=True)
class _Plan:
    """A reply planned from take_reply's read, and what storing it writes."""

    answer: Answer  # as planned from (with the newer live text, if any)
    taken: Taken
    live: str | None  # the generating process's newer text, to write first
    link: str | None  # a new page token to store (the reply links to the page, which has none yet)

    @property
    def delivered(self) -> tuple[int, int, int]:
        """The answer's new delivered_upto, awaiting_fetch and labelled."""
        a, t = self.answer, self.taken
        return max(t.upto, a.delivered_upto), int(t.owed), int(a.labelled or t.labelled)


def _plan_reply(row, plan: ReplyPlanner, live_text: str | None, page: tuple[str, float] | None) -> _Plan:
    answer = _answer(row)
    live = None
    if live_text is not None and answer.status == "generating" and len(answer.text) < len(live_text):
        live = live_text
        answer = replace(answer, text=live_text)
    existing = row["page_token"]
    token = None if page is None else existing if existing is not None else page[0]
    taken = plan(answer, token)
    link = token if taken.linked and page is not None and existing is None else None
    return _Plan(answer, taken, live, link)


# owed = 1: generating, or not wholly delivered (a generated column, migration 0026, indexed)
_OWED = ("SELECT * FROM answers WHERE openid = ? AND owed = 1"
         " AND (awaiting_fetch = 1 OR (route = 'reply' AND created_at < ?))"
         " ORDER BY id LIMIT 1")


@dataclass(frozen=True, slots=True)
class Draft:
    """An answer to insert for a question (AnswerRepo.create, or with the question's admission:
    storage.ledger.admit_and_reserve).

    Only one caller creates it (msg_key is unique). An older answer still owed to the user whose
    own deliveries are over (`asked_before`) is found first: this message's reply will carry it,
    so the new answer waits for a fetch (in passive mode). The message (its inbound row) is pointed
    at the answer its reply comes from, in the same step: the older owed one with `owed_note`, else
    this one when `reply_from_new`. `heard`: a voice question's text as heard."""

    openid: str
    msg_key: str
    question: str
    model: str
    route: str
    now: float
    deadline_at: float
    holder: str
    lease_until: float
    asked_before: float
    idle: float
    max_turns: int
    heard: str | None = None
    picture_id: int | None = None
    reply_from_new: bool = False
    owed_note: str | None = None


# mpgpt_create_answer's arguments (migration 0026), in create_params' order
CREATE_ARGS_PG = ("?, ?, ?, ?, ?, ?, CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION),"
                  " CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION),"
                  " CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS BIGINT) = 1, CAST(? AS TEXT)")


def create_params(d: Draft) -> tuple[Any, ...]:
    return (d.openid, d.msg_key, d.question, d.model, d.route, d.holder, d.lease_until, d.now, d.deadline_at,
            d.asked_before, d.idle, d.max_turns * 2, d.heard, d.picture_id, int(d.reply_from_new), d.owed_note)


def new_question(row) -> NewQuestion:  # noqa: ANN001 - a PostgreSQL row of mpgpt_create_answer's columns
    return NewQuestion(_answer(row["answer"]), row["created"], row["owed_id"],
                       [(role, content) for role, content in row["turns"]])


def create_now(conn: sqlite3.Connection, d: Draft) -> NewQuestion:
    """The answer's insert inside an open SQLite transaction."""
    owed = conn.execute(_OWED, (d.openid, d.asked_before)).fetchone()
    owed_id = int(owed["id"]) if owed else None
    conversation_id = current_conversation(conn, d.openid, d.now, d.idle)
    cur = conn.execute(
        "INSERT INTO answers (openid, msg_key, conversation_id, question, model, route, lease_owner,"
        " lease_until, created_at, deadline_at, awaiting_fetch, heard, picture_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (msg_key) DO NOTHING RETURNING *",
        (d.openid, d.msg_key, conversation_id, d.question, d.model, d.route, d.holder, d.lease_until, d.now,
         d.deadline_at, int(owed_id is not None and d.route == "reply"), d.heard, d.picture_id),
    ).fetchone()
    created = cur is not None
    answer = _answer(cur if created else
                     conn.execute("SELECT * FROM answers WHERE msg_key = ?", (d.msg_key,)).fetchone())
    turns = recent_turns(conn, conversation_id, d.max_turns * 2) if created else []
    if owed_id is not None or d.reply_from_new:
        conn.execute("UPDATE inbound SET answer_id = ?, note = ? WHERE msg_key = ?",
                     (owed_id if owed_id is not None else answer.id,
                      d.owed_note if owed_id is not None else None, d.msg_key))
    return NewQuestion(answer, created, owed_id, turns)


_FINISH_PG = (
    "WITH closed AS (UPDATE answers SET status = :status, text = :text, markdown = :md, finished_at = :now,"
    " lease_owner = NULL, lease_until = NULL"
    " WHERE id = :id AND status = 'generating' AND lease_owner = :holder"
    " RETURNING *, xmin::text AS version),"
    " said AS (INSERT INTO turns (conversation_id, role, content, created_at)"
    " SELECT closed.conversation_id, t.role, t.content, :now FROM closed,"
    " (VALUES (1, 'user', CAST(:asked AS TEXT)), (2, 'assistant', CAST(:answered AS TEXT)))"
    " AS t (n, role, content)"
    " WHERE :with_turns = 1 AND closed.conversation_id IS NOT NULL ORDER BY t.n),"
    " moved AS (UPDATE conversations SET last_at = :now FROM closed"
    " WHERE :with_turns = 1 AND conversations.id = closed.conversation_id)"
    " SELECT closed.*, (SELECT token FROM answer_pages WHERE answer_id = closed.id) AS page_token FROM closed")


class AnswerRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, draft: Draft) -> NewQuestion:
        """Insert the answer for a question (see Draft), in one step with everything its first
        delivery needs."""
        if self.db.engine == "postgresql":  # the same steps in one call (migration 0026)
            row = (await self.db.write_one(f"SELECT * FROM mpgpt_create_answer({CREATE_ARGS_PG})",
                                           create_params(draft)))[0]
            return new_question(row)
        return await self.db.write(lambda conn: create_now(conn, draft))

    async def changed(self, answer_id: int, timeout: float) -> None:
        """Wait up to `timeout` for the answer's next saved progress or its end (on another host)."""
        await self.db.changed(f"answer:{answer_id}", timeout)

    async def get(self, answer_id: int) -> Answer | None:
        row = await self.db.lookup("SELECT * FROM answers WHERE id = ?", (answer_id,))
        return _answer(row) if row else None

    async def save_progress(self, answer_id: int, holder: str, text: str, lease_until: float,
                            first_token_at: float | None, markdown: str | None = None) -> bool:
        """Write the growing text (and its markdown, for the answer page) and renew the lease; False
        when the lease was lost."""
        saved = bool(await self.db.write_one(
            "UPDATE answers SET text = :text, markdown = :md, lease_until = :until,"
            " first_token_at = COALESCE(first_token_at, :first)"
            " WHERE id = :id AND status = 'generating' AND lease_owner = :holder RETURNING id",
            {"text": text, "md": markdown, "until": lease_until, "first": first_token_at, "id": answer_id,
             "holder": holder}))
        if saved:
            self.db.announce(f"answer:{answer_id}")
        return saved

    async def finish(self, answer_id: int, holder: str, status: str, text: str, now: float,
                     turns: tuple[str, str] | None, markdown: str | None = None) -> bool:
        """Close the generation; with `turns` (question, answer) the conversation gets both in the same step.
        `markdown`: the final text as the model wrote it, for the answer page (None: `text` serves)."""
        (closed,) = await together(self.finish_step(answer_id, holder, status, text, now, turns, markdown))
        return closed is not None

    def finish_step(self, answer_id: int, holder: str, status: str, text: str, now: float,
                    turns: tuple[str, str] | None, markdown: str | None = None) -> Step[Closed | None]:
        """`finish` as a part of a larger state change (storage/steps.py): None if this holder no
        longer held the generation (nothing was written)."""
        assert status in FINAL

        def run(conn: sqlite3.Connection) -> Closed | None:
            cur = conn.execute(
                "UPDATE answers SET status = ?, text = ?, markdown = ?, finished_at = ?, lease_owner = NULL,"
                " lease_until = NULL WHERE id = ? AND status = 'generating' AND lease_owner = ?",
                (status, text, markdown, now, answer_id, holder),
            )
            if cur.rowcount != 1:
                return None
            conv = conn.execute("SELECT conversation_id FROM answers WHERE id = ?", (answer_id,)).fetchone()[0]
            if turns is not None and conv is not None:
                conn.executemany(
                    "INSERT INTO turns (conversation_id, role, content, created_at) VALUES (?, ?, ?, ?)",
                    [(conv, "user", turns[0], now), (conv, "assistant", turns[1], now)],
                )
                conn.execute("UPDATE conversations SET last_at = ? WHERE id = ?", (now, conv))
            return Closed()

        def closed(done: Closed | None) -> None:
            if done is not None:
                self.db.announce(f"answer:{answer_id}")

        # on PostgreSQL every part in one statement: one round trip instead of four
        statement = (_FINISH_PG, {"status": status, "text": text, "md": markdown, "now": now, "id": answer_id,
                                  "holder": holder, "with_turns": int(turns is not None),
                                  "asked": turns[0] if turns else None, "answered": turns[1] if turns else None})
        return Step(self.db, run, statement, lambda rows: Closed(rows[0]) if rows else None, closed)

    async def claim_stale(self, now: float, holder: str, lease_until: float) -> list[Answer]:
        """Take over generations whose holder stopped renewing its lease (it crashed or was killed)."""
        # One conditional UPDATE: another host claiming at the same moment waits for this row, then
        # finds the lease renewed and skips it (PostgreSQL re-checks the WHERE on the row it waited for).
        def run(conn: sqlite3.Connection) -> list[Answer]:
            rows = conn.execute(
                "UPDATE answers SET lease_owner = ?, lease_until = ?, attempts = attempts + 1"
                " WHERE status = 'generating' AND lease_until < ? RETURNING *", (holder, lease_until, now)).fetchall()
            return sorted((_answer(r) for r in rows), key=lambda a: a.id)

        return await self.db.write(run)

    async def reset_text(self, answer_id: int, holder: str) -> bool:
        """Start a taken-over generation afresh; only while the user has been given nothing of it."""
        return await self.db.write(lambda conn: conn.execute(
            "UPDATE answers SET text = '', markdown = NULL, first_token_at = NULL"
            " WHERE id = ? AND lease_owner = ? AND delivered_upto = 0",
            (answer_id, holder)).rowcount == 1)

    async def oldest_owed(self, openid: str, asked_before: float) -> Answer | None:
        """The oldest answer the user is still owed whose own question's deliveries are over."""
        row = await self.db.fetchone(_OWED, (openid, asked_before))
        return _answer(row) if row else None

    async def take_reply(self, msg_key: str, answer_id: int, plan: ReplyPlanner, now: float,
                         live_text: str | None = None, page: tuple[str, float] | None = None,
                         closed: Closed | None = None) -> TakenReply:
        """Decide the reply for one inbound message from one answer, exactly once.

        As one state change: if the message already has its reply (another delivery decided it), that
        reply stands; otherwise `plan` picks the next part, the answer's delivery offset moves and the
        reply is stored. SQLite plans inside the transaction; PostgreSQL plans from a read and stores
        the plan only if the answer is still that version (else reads and plans again). Either way
        `plan` may run more than once: only the returned `planned` was stored. `live_text` is the
        generating process's newer text, written first. `page` (a new token, its expiry) lets the
        reply link to the answer page: the answer's existing token, or this one, made only when the
        plan uses it. `closed`: what this process's `finish` of the answer returned, planned from
        first instead of a read (on PostgreSQL; the store still checks it is the answer's version).
        """
        if self.db.engine == "postgresql":
            seen = closed.state if closed is not None else None
            if seen is not None and seen["id"] == answer_id:
                took = await self._store_reply_pg(seen, msg_key, answer_id, plan, now, live_text, page)
                if took is not None:
                    return took
            for _ in range(_OPTIMISTIC_TRIES):
                took = await self._take_reply_pg(msg_key, answer_id, plan, now, live_text, page)
                if took is not None:
                    return took
            # the answer kept changing under the plan (a generation saving progress fast): plan
            # under its lock instead, as below

        def run(conn: sqlite3.Connection) -> TakenReply:
            if is_postgres(conn):  # deliveries of one answer on several hosts decide one after another
                conn.execute("SELECT id FROM answers WHERE id = ?" + for_update(conn), (answer_id,))
            # (after the lock, on PostgreSQL)
            row = conn.execute(_REPLY_STATE.format(version=""), (msg_key, answer_id)).fetchone()
            if row["stored_reply"] is not None:
                return TakenReply(row["stored_reply"], None)
            p = _plan_reply(row, plan, live_text, page)
            if p.live is not None:
                conn.execute("UPDATE answers SET text = ? WHERE id = ?", (p.live, answer_id))
            if p.link is not None and page is not None:
                conn.execute("INSERT INTO answer_pages (answer_id, token, created_at, expires_at) VALUES (?, ?, ?, ?)"
                             " ON CONFLICT (answer_id) DO NOTHING", (answer_id, p.link, now, page[1]))
            conn.execute("UPDATE answers SET delivered_upto = ?, awaiting_fetch = ?, labelled = ? WHERE id = ?",
                         (*p.delivered, answer_id))
            conn.execute("UPDATE inbound SET reply = ?, replied_at = ? WHERE msg_key = ?",
                         (p.taken.reply, now, msg_key))
            return TakenReply(p.taken.reply, (p.answer, p.taken))

        return await self.db.write(run)

    async def _take_reply_pg(self, msg_key: str, answer_id: int, plan: ReplyPlanner, now: float,
                             live_text: str | None, page: tuple[str, float] | None) -> TakenReply | None:
        """take_reply on PostgreSQL in two round trips on the event loop: read, plan, then store the
        reply if the answer row is the version read (mpgpt_store_reply, migration 0026); None when
        it was not (nothing was written)."""
        row = await self.db.fetchone(_REPLY_STATE.format(version=", a.xmin::text AS version"), (msg_key, answer_id))
        if row is None:
            return None
        if row["stored_reply"] is not None:
            return TakenReply(row["stored_reply"], None)
        return await self._store_reply_pg(row, msg_key, answer_id, plan, now, live_text, page)

    async def _store_reply_pg(self, row: Any, msg_key: str, answer_id: int, plan: ReplyPlanner, now: float,
                              live_text: str | None, page: tuple[str, float] | None) -> TakenReply | None:
        p = _plan_reply(row, plan, live_text, page)
        rows = await self.db.write_one(
            "SELECT reply, planned FROM mpgpt_store_reply(CAST(? AS BIGINT), ?, ?, CAST(? AS TEXT), CAST(? AS TEXT),"
            " CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT),"
            " ?, CAST(? AS DOUBLE PRECISION))",
            (answer_id, msg_key, row["version"], row["page_token"], p.live, p.link,
             page[1] if p.link is not None and page is not None else None, *p.delivered, p.taken.reply, now))
        reply = rows[0]["reply"]
        if reply is None:
            return None
        # the reply stored under the lock: this plan's, or one another delivery of the message stored first
        return TakenReply(reply, (p.answer, p.taken) if rows[0]["planned"] else None)

    async def claim_push(self, now: float, holder: str, lease_until: float,
                         answer_id: int | None = None) -> list[Answer]:
        """Finished answers in active mode with parts not yet pushed, claimed by one process at a time."""
        def run(conn: sqlite3.Connection) -> list[Answer]:
            rows = conn.execute(
                "UPDATE answers SET lease_owner = ?, lease_until = ?"
                " WHERE owed = 1 AND route = 'push' AND status != 'generating' AND awaiting_fetch = 0"
                " AND delivered_upto < length(text) AND (lease_until IS NULL OR lease_until < ?)"
                " AND (CAST(? AS BIGINT) IS NULL OR id = ?) RETURNING *",
                (holder, lease_until, now, answer_id, answer_id)).fetchall()
            return sorted((_answer(r) for r in rows), key=lambda a: a.id)

        return await self.db.write(run)

    async def record_push(self, answer_id: int, holder: str, upto: int, owed: bool, done: bool,
                          labelled: bool = False) -> None:
        """After a push: move the offset; `owed` hands the rest to fetch; `done` releases the claim;
        `labelled`: the push carried the AI-content label."""
        await self.db.write(lambda conn: conn.execute(
            "UPDATE answers SET delivered_upto = CASE WHEN delivered_upto > ? THEN delivered_upto ELSE ? END,"
            " awaiting_fetch = ?,"
            " labelled = CASE WHEN ? = 1 THEN 1 ELSE labelled END,"
            " lease_owner = CASE WHEN ? = 1 THEN NULL ELSE lease_owner END,"
            " lease_until = CASE WHEN ? = 1 THEN NULL ELSE lease_until END"
            " WHERE id = ? AND lease_owner = ?",
            (upto, upto, int(owed), int(labelled), int(done), int(done), answer_id, holder)))
