"""One state change made of several repositories' parts, as one transaction on either engine.

An answer's close is the example: its credits settled (the ledger's part) and the answer made final
(the answers' part). Two transactions in a row were safe (credits first; recovery redoes what a
crash left) but cost PostgreSQL two round trips and two WAL flushes on every question's path. As
one transaction they cost one of each, and there is no in-between state left to recover.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from storage.db import Database

T = TypeVar("T")


@dataclass(frozen=True)
class Step(Generic[T]):
    """A repository's part of a state change.

    `run` is the part inside an open transaction (SQLite's, or PostgreSQL's on a pool thread).
    `statement` is the same part as one PostgreSQL statement ('?' or ':name' placeholders), with
    `read` making its rows the part's result; None where the part must read before it writes. Then
    the parts of one change share one Sync on a pipelined connection: one round trip.
    `committed` runs after the commit, with the part's result (a wake-up, a metric)."""

    db: "Database"
    run: Callable[[Any], T]
    statement: tuple[str, Sequence[Any] | Mapping[str, Any]] | None = None
    read: Callable[[list[Any]], T] | None = None
    committed: Callable[[T], None] | None = None


def after_commit(steps: Sequence[Step[Any]], results: Sequence[Any]) -> None:
    for step, result in zip(steps, results, strict=True):
        if step.committed is not None:
            step.committed(result)


async def together(*steps: Step[Any]) -> list[Any]:
    """The steps as one transaction, in order: each one's result; or the first error, with none of
    them committed."""
    db = steps[0].db
    assert all(s.db is db for s in steps), "one transaction is on one database"
    return await db.write_steps(steps)
