"""`mpgpt audit`: the owner's changes, newest first (who, when, what, why, the command line)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from scripts.owner.kit import Ctx, leaf, positive_int, table


def register(subparsers: Any) -> None:
    p = leaf(subparsers, "audit", "the audit trail of owner changes, newest first", audit_list)
    p.add_argument("--target", help="only changes to this user, order, product or channel")
    p.add_argument("--action", help="only this action or family ('orders', 'credits.grant')")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many (default 50)")


async def audit_list(ctx: Ctx) -> None:
    a = ctx.args
    rows = await ctx.audit.recent(target=a.target, action=a.action, limit=a.limit)
    ctx.emit([asdict(r) for r in rows], lambda: table(
        [(r.id, ctx.when(r.at), r.actor, r.action, r.target, r.reason,
          json.dumps(r.detail, ensure_ascii=False, sort_keys=True)[:80]) for r in rows],
        ("ID", "WHEN", "WHO", "ACTION", "TARGET", "REASON", "DETAIL")))
