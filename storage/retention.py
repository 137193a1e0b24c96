"""Pruning message content past retention: inbound messages, pictures, answers, conversations, turns.

Money and usage records stay (ledger, orders, pay events, generations, audit): they are small and the
books must keep adding up. Deletes go in batches, each its own short transaction, so a running
server's writes wait for one batch at most, never for the whole prune.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Database

# (label, table, its key, the rows past the cutoff that may go). Order matters: answers before the
# conversations they point at, turns before their conversations.
_STEPS = (
    ("inbound", "inbound", "msg_key", "received_at < ?1"),
    # followers' pictures (where WeChat keeps them, or a web upload): older than every answer kept
    ("pictures", "pictures", "id", "created_at < ?1"),
    # a generation still running (or stuck, and left to recovery) is not ours to delete
    ("answers", "answers", "id", "created_at < ?1 AND status != 'generating'"),
    ("turns", "turns", "id", "conversation_id IN (SELECT id FROM conversations WHERE last_at < ?1)"),
    ("conversations", "conversations", "id",
     "last_at < ?1 AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.conversation_id = conversations.id)"
     " AND NOT EXISTS (SELECT 1 FROM turns t WHERE t.conversation_id = conversations.id)"),
)


@dataclass(frozen=True, slots=True)
class Pruned:
    inbound: int = 0
    pictures: int = 0
    answers: int = 0
    turns: int = 0
    conversations: int = 0


# For a dry run: the conversations left without answers and turns once the steps before have run.
_CONVERSATIONS_AFTER = (
    "last_at < ?1 AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.conversation_id = conversations.id"
    " AND NOT (a.created_at < ?1 AND a.status != 'generating'))")


async def count_prunable(db: Database, cutoff: float) -> Pruned:
    """What prune() would delete now (for --dry-run)."""
    counts = {}
    for label, table, _, where in _STEPS:
        if label == "conversations":
            where = _CONVERSATIONS_AFTER
        row = await db.fetchone(f"SELECT COUNT(*) AS n FROM {table} WHERE {where}", (cutoff,))
        counts[label] = row["n"] if row else 0
    return Pruned(**counts)


async def prune(db: Database, cutoff: float, batch: int = 2000) -> Pruned:
    """Delete message content older than `cutoff` (a time.time() value); how many rows of each."""
    counts = {}
    for label, table, key, where in _STEPS:
        total = 0
        while True:
            async with db.transaction() as conn:
                cur = await conn.execute(
                    f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {where} LIMIT ?2)",
                    (cutoff, batch))
                done = cur.rowcount
            total += done
            if done < batch:
                break
        counts[label] = total
    return Pruned(**counts)
