"""`mpgpt orders list|show|sync|close|refund|complete`.

sync and complete ask WeChat Pay about the order first (no transaction is held across that call),
then act on its signed answer through the pay service's own path, the one the notify and the query
job use: one transaction that credits an order at most once, joined by the audit row.

Refunds: one per order (the schema's rule), of the whole amount or `--amount` fen of it. The refund
row, the credits taken back and the audit row are one transaction, committed before WeChat Pay is
asked; a refund WeChat Pay did not take stays recorded and the same command retries it (same
out_refund_no). The credits taken back are the refunded share of the order's credits, rounded up,
but never more than the follower's balance: the ledger does not go below zero, and what was spent
already is not recovered (the shortfall is in the output and the audit trail). They are taken when
the refund is requested, not when WeChat Pay reports it done; if WeChat Pay closes the refund
instead, give them back with `mpgpt credits grant`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from scripts.owner.kit import Ctx, OwnerError, group, leaf, pairs, positive_int, reason_text, table, yuan
from storage.ledger import Ledger, apply_entry
from storage.orders import OPEN, SETTLED, Order, OrderRepo

if TYPE_CHECKING:
    from bot.pay.service import PayService

STATES = ("creating", "pending", "paid", "closed", "failed", "held", "refunding", "refunded")


def register(subparsers: Any) -> None:
    orders = group(subparsers, "orders", "WeChat Pay orders: list, show, sync, close, refund, complete")
    p = leaf(orders, "list", "orders, newest first", orders_list)
    p.add_argument("--state", choices=STATES, help="only orders in this state")
    p.add_argument("--user", metavar="USER", help="only this follower's orders")
    p.add_argument("--flagged", action="store_true", help="only orders flagged for the owner")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many (default 50)")
    p = leaf(orders, "show", "one order with its WeChat Pay events and refund", orders_show)
    p.add_argument("no", metavar="NO", help="the order number (out_trade_no)")
    p = leaf(orders, "sync", "ask WeChat Pay about an order now and act on the answer", orders_sync)
    p.add_argument("no", metavar="NO", help="the order number")
    p = leaf(orders, "close", "close an unpaid order (at WeChat Pay and here)", orders_close)
    p.add_argument("no", metavar="NO", help="the order number")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    p = leaf(orders, "refund", "refund a paid order and take back its credits", orders_refund)
    p.add_argument("no", metavar="NO", help="the order number")
    p.add_argument("--amount", type=positive_int, metavar="FEN", help="refund this much (default: all of it)")
    p.add_argument("--reason", required=True, type=reason_text, help="why (sent to WeChat Pay, kept in the audit)")
    p = leaf(orders, "complete", "credit an order WeChat Pay confirms as paid (a lost notify)", orders_complete)
    p.add_argument("no", metavar="NO", help="the order number")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")


def _row(o: Order) -> dict[str, Any]:
    return {"out_trade_no": o.out_trade_no, "openid": o.openid, "product_id": o.product_id, "credits": o.credits,
            "amount_fen": o.amount_fen, "kind": o.kind, "state": o.state, "created_at": o.created_at,
            "expires_at": o.expires_at, "paid_at": o.paid_at, "closed_at": o.closed_at,
            "transaction_id": o.transaction_id, "flagged": o.flagged, "note": o.note,
            "plan_tier": o.plan_tier or None, "plan_days": o.plan_days}


def _repo(ctx: Ctx, db: Any) -> OrderRepo:
    from bot.pay.routes import invite_rewards

    return OrderRepo(db, apply_entry, ctx.cfg.plans.day_seconds, invite_rewards(ctx.cfg))


async def _order(ctx: Ctx, no: str) -> Order:
    order = await _repo(ctx, ctx.db).get(no)
    if order is None:
        raise OwnerError(f"unknown order {no!r} (see `mpgpt orders list`)")
    return order


@asynccontextmanager
async def _pay(ctx: Ctx) -> AsyncIterator[PayService]:
    from bot.pay.client import PayClient
    from bot.pay.service import PayService

    if not ctx.cfg.pay.enabled:
        raise OwnerError("WeChat Pay is off (the config has no [pay] table)")
    async with PayClient.from_config(ctx.cfg) as client:
        yield PayService(ctx.cfg.pay, ctx.cfg.products, _repo(ctx, ctx.db), client)


async def orders_list(ctx: Ctx) -> None:
    a = ctx.args
    openid = await ctx.user(a.user) if a.user else None
    rows = await ctx.views.orders(state=a.state, openid=openid, flagged=a.flagged, limit=a.limit)
    ctx.emit(rows, lambda: table(
        [(r["out_trade_no"], ctx.when(r["created_at"]), r["openid"], r["product_id"], yuan(r["amount_fen"]),
          r["credits"], r["state"] + (" !" if r["flagged"] else "")) for r in rows],
        ("ORDER", "CREATED", "USER", "PRODUCT", "AMOUNT", "CREDITS", "STATE")))


async def orders_show(ctx: Ctx) -> None:
    order = await _order(ctx, ctx.args.no)
    events = await _repo(ctx, ctx.db).events(order.out_trade_no)
    refund = await ctx.views.refund(order.out_trade_no)

    def text() -> str:
        parts = [pairs([
            ("order", order.out_trade_no), ("user", order.openid), ("product", order.product_id),
            ("amount", yuan(order.amount_fen)), ("credits", order.credits), ("kind", order.kind),
            ("state", order.state + (" (flagged)" if order.flagged else "")), ("note", order.note),
            ("created", ctx.when(order.created_at)), ("expires", ctx.when(order.expires_at)),
            ("paid", ctx.when(order.paid_at)), ("closed", ctx.when(order.closed_at)),
            ("transaction", order.transaction_id)])]
        if refund:
            parts += ["", pairs([("refund", refund["out_refund_no"]), ("refund amount", yuan(refund["amount_fen"])),
                                 ("refund state", refund["state"]), ("refund reason", refund["reason"])])]
        parts += ["", "events:", table(
            [(ctx.when(e["created_at"]), e["source"], e["outcome"], e["trade_state"], yuan(e["amount_fen"]),
              "!" if e["flagged"] else "", e["note"]) for e in events],
            ("WHEN", "SOURCE", "OUTCOME", "TRADE STATE", "AMOUNT", "FLAG", "NOTE"))]
        return "\n".join(parts)

    ctx.emit({**_row(order), "events": events, "refund": refund}, text)


async def _query_and_apply(ctx: Ctx, service: PayService, order: Order, action: str,
                           require_success: bool) -> tuple[str, str | None]:
    """WeChat Pay's answer first, then one audited transaction acting on it; (outcome, trade_state)."""
    from bot.pay.client import PayError

    try:
        tx = await service.client.query(order.out_trade_no)
    except PayError as e:
        raise OwnerError(f"WeChat Pay did not answer the query: {e}") from None
    state = tx.trade_state if tx else None
    if require_success and state != "SUCCESS":
        said = f"says {state}" if state else "has no such order"
        raise OwnerError(f"not completed: WeChat Pay {said}; only a SUCCESS payment completes an order")
    async with ctx.change(action, order.out_trade_no, getattr(ctx.args, "reason", "")) as ch:
        outcome = await service.using(_repo(ctx, ch.db)).apply_query(order, tx, "query")
        ch.detail.update(trade_state=state, outcome=outcome, amount_paid_fen=tx.amount_total if tx else None)
    return outcome, state


async def orders_sync(ctx: Ctx) -> int:
    order = await _order(ctx, ctx.args.no)
    async with _pay(ctx) as service:
        outcome, state = await _query_and_apply(ctx, service, order, "orders.sync", require_success=False)
    now = await _order(ctx, order.out_trade_no)
    ctx.emit({"out_trade_no": now.out_trade_no, "trade_state": state, "outcome": outcome, "state": now.state},
             pairs([("order", now.out_trade_no), ("WeChat Pay says", state or "no such order"),
                    ("outcome", outcome), ("state", f"{order.state} -> {now.state}")]))
    return 1 if outcome in ("held", "wrong_merchant", "unknown_order") else 0


async def orders_complete(ctx: Ctx) -> int:
    order = await _order(ctx, ctx.args.no)
    if order.state in SETTLED:
        ctx.emit({"out_trade_no": order.out_trade_no, "outcome": "duplicate", "state": order.state},
                 f"{order.out_trade_no} is {order.state} already: nothing to do")
        return 0
    async with _pay(ctx) as service:
        outcome, state = await _query_and_apply(ctx, service, order, "orders.complete", require_success=True)
    now = await _order(ctx, order.out_trade_no)
    account = await Ledger(ctx.db).account(now.openid)
    ctx.emit({"out_trade_no": now.out_trade_no, "trade_state": state, "outcome": outcome, "state": now.state,
              "credits": now.credits, "balance": account.balance if account else 0},
             pairs([("order", now.out_trade_no), ("WeChat Pay says", state), ("outcome", outcome),
                    ("state", f"{order.state} -> {now.state}"),
                    ("balance", f"{account.balance if account else 0} ({now.openid})")]))
    if outcome == "held":
        raise OwnerError(f"not credited: {now.note or 'the paid amount differs from the order'} (order held)")
    if outcome not in ("credited", "duplicate"):
        raise OwnerError(f"not credited: {outcome}")
    return 0


async def orders_close(ctx: Ctx) -> None:
    from bot.pay.client import PayError

    order = await _order(ctx, ctx.args.no)
    if order.state not in (*OPEN, "failed"):
        hint = " (refund it instead)" if order.state == "paid" else ""
        raise OwnerError(f"{order.out_trade_no} is {order.state}: only an unpaid order can be closed{hint}")
    async with _pay(ctx) as service:
        try:
            await service.client.close(order.out_trade_no)
        except PayError as e:
            if e.code == "ORDERPAID":
                outcome, _ = await _query_and_apply(ctx, service, order, "orders.sync", require_success=False)
                raise OwnerError(f"not closed: WeChat Pay says {order.out_trade_no} is paid (synced: {outcome})") from None
            if e.code not in ("ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS"):
                raise OwnerError(f"WeChat Pay did not close the order: {e}") from None
    async with ctx.change("orders.close", order.out_trade_no, ctx.args.reason) as ch:
        closed = await _repo(ctx, ch.db).mark_closed(order.out_trade_no, "close", time.time(), note="closed by the owner")
        if not closed:
            raise OwnerError(f"{order.out_trade_no} changed meanwhile; see `mpgpt orders show {order.out_trade_no}`")
        ch.detail["closed"] = True
    ctx.emit({"out_trade_no": order.out_trade_no, "state": "closed", "audit_id": ch.id},
             f"{order.out_trade_no}: closed")


async def orders_refund(ctx: Ctx) -> None:
    from bot.pay.client import PayError
    from bot.pay.service import RefundRefused, credits_to_take_back

    a = ctx.args
    order = await _order(ctx, a.no)
    async with _pay(ctx) as service:
        existing = await ctx.views.refund(order.out_trade_no)
        if existing and a.amount is not None and a.amount != existing["amount_fen"]:
            raise OwnerError(f"{order.out_trade_no} has a refund of {existing['amount_fen']} fen already"
                             f" ({existing['state']}): one refund per order")
        async with ctx.change("orders.refund", order.out_trade_no, a.reason) as ch:
            try:
                refund, fresh = await service.using(_repo(ctx, ch.db)).begin_refund(order.out_trade_no, a.reason, a.amount)
            except RefundRefused as e:
                raise OwnerError(str(e)) from None
            taken = wanted = 0
            if fresh:
                wanted = credits_to_take_back(order, refund["amount_fen"])
                ledger = Ledger(ch.db)
                account = await ledger.account(order.openid)
                taken = min(wanted, account.balance if account else 0)
                if taken:
                    await ledger.apply(order.openid, "admin", -taken, f"audit:{ch.id}")
            ch.detail.update(out_refund_no=refund["out_refund_no"], refund_fen=refund["amount_fen"], retry=not fresh,
                             credits_wanted=wanted, credits_taken=taken, shortfall=wanted - taken)
        try:
            result = await service.send_refund(refund)
        except PayError as e:
            await ctx.audit.record("orders.refund_failed", order.out_trade_no, args=ctx.argv,
                                   detail={"out_refund_no": refund["out_refund_no"], "error": str(e)})
            raise OwnerError(f"WeChat Pay did not take the refund: {e}. It stays recorded; run the same command"
                             " again to retry it") from None
        await ctx.audit.record("orders.refund_result", order.out_trade_no, args=ctx.argv,
                               detail={"out_refund_no": result.out_refund_no, "status": result.status,
                                       "refund_id": result.refund_id})
    account = await Ledger(ctx.db).account(order.openid)
    balance = account.balance if account else 0
    ctx.emit({"out_trade_no": order.out_trade_no, "out_refund_no": result.out_refund_no,
              "refund_fen": refund["amount_fen"], "status": result.status, "credits_taken": taken,
              "shortfall": wanted - taken, "balance": balance, "retry": not fresh, "audit_id": ch.id},
             pairs([("order", order.out_trade_no), ("refund", result.out_refund_no),
                    ("amount", f"{yuan(refund['amount_fen'])} of {yuan(order.amount_fen)}"),
                    ("WeChat Pay", result.status),
                    ("credits taken back", f"{taken}" + (f" ({wanted - taken} already spent)" if wanted > taken else "")
                     if fresh else "(retry: taken when first requested)"),
                    ("balance now", f"{balance} ({order.openid})")]))
