"""`mpgpt credits grant|deduct USER N --reason TEXT`: owner adjustments through the ledger.

Each is one `admin` ledger row (ref 'audit:<id>') and its audit row, in one transaction. They move
the lasting balance only; today's free credits are not the owner's to take. A deduct larger than
the balance is refused whole: the ledger never goes below zero.
"""

from __future__ import annotations

from typing import Any

from scripts.owner.kit import Ctx, OwnerError, group, leaf, plural, positive_int, reason_text
from storage.ledger import InsufficientCredits, Ledger


def register(subparsers: Any) -> None:
    credits = group(subparsers, "credits", "owner adjustments to a follower's credits (through the ledger)")
    for name, fn, what in (("grant", grant, "give a follower credits"),
                           ("deduct", deduct, "take credits from a follower's balance (never below zero)")):
        p = leaf(credits, name, what, fn)
        p.add_argument("user", metavar="USER", help="openid, or its last characters as logs show them")
        p.add_argument("amount", metavar="N", type=positive_int, help="how many credits (> 0)")
        p.add_argument("--reason", required=True, type=reason_text, help="why (kept in the audit trail)")


async def _adjust(ctx: Ctx, sign: int) -> None:
    openid = await ctx.user(ctx.args.user)
    amount = sign * ctx.args.amount
    action = "credits.grant" if sign > 0 else "credits.deduct"
    try:
        async with ctx.change(action, openid, ctx.args.reason) as ch:
            ledger = Ledger(ch.db)
            await ledger.apply(openid, "admin", amount, f"audit:{ch.id}")
            account = await ledger.account(openid)
            assert account is not None
            ch.detail.update(amount=amount, balance=account.balance)
    except InsufficientCredits:
        account = await Ledger(ctx.db).account(openid)
        have = account.balance if account else 0
        raise OwnerError(f"cannot deduct {ctx.args.amount} from {openid}: the balance is {have}"
                         " (today's free credits are not deducted)") from None
    verb = "granted" if sign > 0 else "deducted"
    ctx.emit({"user": openid, "amount": amount, "balance": account.balance, "daily": account.daily,
              "audit_id": ch.id},
             f"{verb} {plural(ctx.args.amount, 'credit')}: {openid} now has {account.balance}"
             + (f" (+ {account.daily} free today)" if account.daily else ""))


async def grant(ctx: Ctx) -> None:
    await _adjust(ctx, +1)


async def deduct(ctx: Ctx) -> None:
    await _adjust(ctx, -1)
