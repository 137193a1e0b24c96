"""`mpgpt invites list [--inviter USER]`: who invited whom, and whether the reward was paid.

Read-only: invitations are recorded by 邀请 CODE and rewarded with the invitee's first paid top-up
(storage.invites); the owner only looks."""

from __future__ import annotations

from typing import Any

from scripts.owner.kit import Ctx, OwnerError, group, leaf, table
from storage.invites import InviteRepo


def register(subparsers: Any) -> None:
    invites = group(subparsers, "invites", "invitations (邀请 in WeChat) and their rewards")
    p = leaf(invites, "list", "invitations, newest first: invitee, inviter, when, rewarded", invites_list)
    p.add_argument("--inviter", metavar="USER", help="only this follower's invitations")
    p.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")


async def invites_list(ctx: Ctx) -> None:
    a = ctx.args
    if a.limit <= 0:
        raise OwnerError(f"--limit must be greater than 0 (got {a.limit})")
    inviter = await ctx.user(a.inviter) if a.inviter else None
    rows = await InviteRepo(ctx.db).listing(inviter, min(a.limit, 10_000))
    for r in rows:
        r["rewarded"] = r["rewarded_at"] is not None
    cfg = ctx.cfg.invites
    ctx.emit(rows, lambda: table(
        [(r["invitee"], r["inviter"], r["via"], ctx.when(r["created_at"]),
          ctx.when(r["rewarded_at"]) if r["rewarded"] else "not yet") for r in rows],
        ("INVITEE", "INVITER", "VIA", "RECORDED", "REWARDED"))
        + f"\\nrewards: {cfg.inviter_reward} to the inviter, {cfg.invitee_reward} to the invitee, with the first paid top-up")
