"""`mpgpt users list|show|freeze|unfreeze` and `mpgpt whitelist add|remove|list`.

Freezing and the whitelist act on the next question: the rule chain reads both from storage.
"""

from __future__ import annotations

import time
from typing import Any

from bot.economics.pricing import milli_text
from scripts.owner.kit import Ctx, OwnerError, group, leaf, pairs, parse_since, table, yuan
from storage.accounts import Accounts
from storage.ledger import Ledger, apply_entry
from storage.plans import PlanRepo
from storage.orders import OrderRepo


def register(subparsers: Any) -> None:
    users = group(subparsers, "users", "followers: list, show, freeze, unfreeze")
    p = leaf(users, "list", "list followers, most recently active first", users_list)
    p.add_argument("--frozen", action="store_true", help="only frozen accounts")
    p.add_argument("--paying", action="store_true", help="only users with a paid order")
    p.add_argument("--whitelisted", action="store_true", help="only whitelisted users")
    p.add_argument("--active-since", metavar="WHEN", help="seen since: 7d, 12h, 30m or a date (2026-01-31)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p = leaf(users, "show", "one follower: balance, ledger, orders, usage", users_show)
    p.add_argument("user", metavar="USER", help="openid, or its last characters as logs show them")
    p.add_argument("--ledger", type=int, default=20, metavar="N", help="the newest N ledger rows (default 20)")
    p.add_argument("--all", action="store_true", help="every ledger row, however many")
    for name, fn, what in (("freeze", users_freeze, "refuse this follower's questions from now on"),
                           ("unfreeze", users_unfreeze, "let a frozen follower ask again")):
        p = leaf(users, name, what, fn)
        p.add_argument("user", metavar="USER", help="openid, or its last characters")
        p.add_argument("--reason", default="", help="why (kept in the audit trail)")

    wl = group(subparsers, "whitelist", "users who skip the rate limit and credits")
    p = leaf(wl, "add", "whitelist a follower", whitelist_add)
    p.add_argument("user", metavar="USER", help="openid, or its last characters")
    p.add_argument("--note", default="", help="a note shown in the list")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    p = leaf(wl, "remove", "take a follower off the whitelist", whitelist_remove)
    p.add_argument("user", metavar="USER", help="openid, or its last characters")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    leaf(wl, "list", "the whitelist", whitelist_list)


async def users_list(ctx: Ctx) -> None:
    a = ctx.args
    if a.limit <= 0:
        raise OwnerError(f"--limit must be greater than 0 (got {a.limit})")
    since = parse_since(a.active_since, time.time(), ctx.cfg.quota.timezone) if a.active_since else None
    rows = await ctx.views.users(frozen=True if a.frozen else None, paying=a.paying, active_since=since,
                                 whitelisted=a.whitelisted, limit=a.limit)
    ctx.emit(rows, lambda: table(
        [(r["openid"], r["status"], r["tier"], "yes" if r["whitelisted"] else "", r["balance"], r["daily"],
          yuan(r["paid_fen"]), ctx.when(r["last_seen"])) for r in rows],
        ("USER", "STATUS", "TIER", "WHITELIST", "BALANCE", "DAILY", "PAID", "LAST SEEN")))


async def users_show(ctx: Ctx) -> None:
    openid = await ctx.user(ctx.args.user)
    user = await ctx.views.user(openid)
    assert user is not None
    if ctx.args.ledger <= 0:
        raise OwnerError(f"--ledger must be greater than 0 (got {ctx.args.ledger})")
    # one row more than shown says whether the list was cut
    limit = 2**31 - 1 if ctx.args.all else ctx.args.ledger + 1
    ledger = await Ledger(ctx.db).history(openid, limit=limit)
    cut = not ctx.args.all and len(ledger) > ctx.args.ledger
    ledger = ledger[:ctx.args.ledger] if cut else ledger
    tz = ctx.cfg.quota.timezone
    orders = await OrderRepo(ctx.db, apply_entry).for_user(openid, limit=10)
    usage = await ctx.views.usage(openid)
    plan = await PlanRepo(ctx.db).active(openid)
    data = {**user, "plan": {"tier": plan.tier, "ends_at": plan.ends_at} if plan else None,
            "ledger": [_entry(e) for e in ledger], "ledger_cut": cut, "timezone": tz,
            "orders": [_order(o) for o in orders], "usage": usage}

    # token-priced answers leave milli-credits: shown exactly (9.985), whole numbers as before
    paid = milli_text(user["balance"] * 1000 + user["balance_milli"])
    daily = milli_text(user["daily"] * 1000 + user["daily_milli"])

    def text() -> str:
        head = pairs([
            ("user", openid), ("status", user["status"]), ("tier", user["tier"]),
            ("whitelisted", "yes" if user["whitelisted"] else "no"),
            ("plan", f"{plan.tier} until {ctx.when(plan.ends_at)}" if plan else "-"),
            ("balance", f"{paid} (+ {daily} free today)" if daily != "0" else paid),
            ("paid", yuan(user["paid_fen"])), ("model", user["model"] or "(default)"),
            ("first seen", ctx.when(user["first_seen"])), ("last seen", ctx.when(user["last_seen"])),
            ("questions", f"{usage['questions']} ({usage['answered']} answered, {usage['not_answered']} not)"),
            ("times", f"in {tz} ([quota] timezone)"),
        ])
        parts = [head, "", "usage by model:", table(
            [(m["model"], m["attempts"], m["ok"], m["prompt_tokens"], m["completion_tokens"]) for m in usage["models"]],
            ("MODEL", "ATTEMPTS", "OK", "PROMPT TOKENS", "COMPLETION TOKENS"))]
        shown = (f"the newest {len(ledger)} rows; older ones cut: --all shows every row" if cut
                 else "every row" if len(ledger) != 1 else "its one row")
        parts += ["", f"ledger (newest first, {shown}):", table(
            [(e.id, ctx.when(e.created_at), e.kind, _signed(e.amount * 1000 + e.amount_milli),
              _signed(e.daily_amount * 1000 + e.daily_milli), e.ref) for e in ledger],
            ("ID", "WHEN", "KIND", "BALANCE", "DAILY", "REF"))]
        parts += ["", "orders (newest first):", table(
            [(o.out_trade_no, ctx.when(o.created_at), o.product_id, yuan(o.amount_fen), o.credits, o.state)
             for o in orders], ("ORDER", "CREATED", "PRODUCT", "AMOUNT", "CREDITS", "STATE"))]
        return "\n".join(parts)

    ctx.emit(data, text)


def _entry(e: Any) -> dict[str, Any]:
    return {"id": e.id, "kind": e.kind, "amount": e.amount, "daily_amount": e.daily_amount,
            "amount_milli": e.amount_milli, "daily_milli": e.daily_milli, "ref": e.ref, "created_at": e.created_at}


def _order(o: Any) -> dict[str, Any]:
    return {"out_trade_no": o.out_trade_no, "product_id": o.product_id, "credits": o.credits,
            "amount_fen": o.amount_fen, "state": o.state, "created_at": o.created_at, "paid_at": o.paid_at,
            "flagged": o.flagged}


def _signed(milli: int) -> str:
    return ("+" if milli > 0 else "") + milli_text(milli)


async def _set_status(ctx: Ctx, frozen: bool) -> None:
    openid = await ctx.user(ctx.args.user)
    action = "users.freeze" if frozen else "users.unfreeze"
    async with ctx.change(action, openid, ctx.args.reason) as ch:
        accounts = Accounts(ch.db)
        changed = await (accounts.freeze(openid) if frozen else accounts.unfreeze(openid))
        ch.detail["changed"] = changed
    state = "frozen" if frozen else "active"
    ctx.emit({"user": openid, "status": state, "changed": changed, "audit_id": ch.id},
             f"{openid}: {state}" + ("" if changed else f" (it was {state} already)"))


async def users_freeze(ctx: Ctx) -> None:
    await _set_status(ctx, True)


async def users_unfreeze(ctx: Ctx) -> None:
    await _set_status(ctx, False)


async def whitelist_add(ctx: Ctx) -> None:
    openid = await ctx.user(ctx.args.user)
    async with ctx.change("whitelist.add", openid, ctx.args.reason) as ch:
        added = await Accounts(ch.db).whitelist_add(openid, ctx.args.note)
        ch.detail.update(added=added, note=ctx.args.note)
    ctx.emit({"user": openid, "added": added, "audit_id": ch.id},
             f"{openid}: whitelisted" + ("" if added else " (already on the whitelist)"))


async def whitelist_remove(ctx: Ctx) -> None:
    openid = await ctx.user(ctx.args.user)
    async with ctx.change("whitelist.remove", openid, ctx.args.reason) as ch:
        removed = await Accounts(ch.db).whitelist_remove(openid)
        if not removed:
            raise OwnerError(f"{openid} is not on the whitelist")
        ch.detail["removed"] = True
    ctx.emit({"user": openid, "removed": True, "audit_id": ch.id}, f"{openid}: taken off the whitelist")


async def whitelist_list(ctx: Ctx) -> None:
    listed = await Accounts(ctx.db).whitelist()
    ctx.emit([{"openid": w.openid, "note": w.note, "added_at": w.added_at} for w in listed],
             lambda: table([(w.openid, w.note, ctx.when(w.added_at)) for w in listed], ("USER", "NOTE", "ADDED")))
