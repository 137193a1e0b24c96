"""WeChat Pay orders, their notify/query outcomes (pay_events) and refunds.

Every state change is one transaction. Paying an order is the one that matters: the order moves to
`paid`, the ledger gets its `topup` row and the balance moves, all in the same BEGIN IMMEDIATE, so a
repeated notify (or a notify racing the query job, in this process or another) finds the order
already paid and credits nothing. The ledger is reached through its `apply_entry(conn, ...)`, which
joins our transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiosqlite

from storage.db import Database
from storage.dialect import for_update, serialize_async, skip_locked
from storage.invites import reward_invite
from storage.plans import grant_plan, revoke_plan

UNPAID = ("creating", "pending", "closed", "failed")
OPEN = ("creating", "pending")
SETTLED = ("paid", "refunding", "refunded")


class ApplyEntry(Protocol):
    """The credits ledger's entry point: add one ledger row and move the balance, inside `conn`'s
    transaction; False when an entry with this `ref` exists already."""

    async def __call__(self, conn: aiosqlite.Connection, openid: str, kind: str, amount: int, ref: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Order:
    out_trade_no: str
    openid: str
    product_id: str
    credits: int
    amount_fen: int
    kind: str
    state: str
    code_url: str | None
    prepay_id: str | None
    created_at: float
    expires_at: float
    paid_at: float | None
    closed_at: float | None
    transaction_id: str | None
    flagged: bool
    note: str | None
    # the plan the order grants when paid ('' and 0: none; migration 0019)
    plan_tier: str = ""
    plan_days: int = 0


def _order(row: Any) -> Order:
    return Order(row["out_trade_no"], row["openid"], row["product_id"], row["credits"], row["amount_fen"],
                 row["kind"], row["state"], row["code_url"], row["prepay_id"], row["created_at"],
                 row["expires_at"], row["paid_at"], row["closed_at"], row["transaction_id"], bool(row["flagged"]),
                 row["note"], row["plan_tier"], row["plan_days"])


@dataclass(frozen=True, slots=True)
class Payment:
    """What WeChat Pay says was paid (from a verified notify or a signed query answer)."""

    out_trade_no: str
    transaction_id: str
    amount_fen: int
    trade_state: str = "SUCCESS"


SettleOutcome = Literal["credited", "duplicate", "held", "unknown_order"]


@dataclass(frozen=True, slots=True)
class Settlement:
    outcome: SettleOutcome
    order: Order | None
    # True when this call moved the order to paid after it had been closed.
    late: bool = False


async def _fetch_order(conn: aiosqlite.Connection, out_trade_no: str, lock: bool = False) -> Order | None:
    # `lock`: on PostgreSQL the row stays locked to COMMIT, so a settle and a refund (or two settles) on
    # two hosts change the order one after the other, each seeing the state the other left
    sql = "SELECT * FROM orders WHERE out_trade_no = ?" + (for_update(conn) if lock else "")
    async with conn.execute(sql, (out_trade_no,)) as cur:
        row = await cur.fetchone()
    return _order(row) if row else None


async def _event(conn: aiosqlite.Connection, out_trade_no: str, source: str, outcome: str, now: float, *,
                 trade_state: str | None = None, transaction_id: str | None = None, amount_fen: int | None = None,
                 flagged: bool = False, note: str | None = None) -> None:
    await conn.execute(
        "INSERT INTO pay_events (out_trade_no, source, outcome, trade_state, transaction_id, amount_fen, flagged,"
        " note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (out_trade_no, source, outcome, trade_state, transaction_id, amount_fen, int(flagged), note, now),
    )


class OrderRepo:
    def __init__(self, db: Database, apply_entry: ApplyEntry, day_seconds: float = 86400.0,
                 invite_rewards: tuple[int, int] = (0, 0)) -> None:
        self.db = db
        self.apply_entry = apply_entry
        # how long one day of a plan lasts ([plans] day_seconds; shortened in tests)
        self.day_seconds = day_seconds
        # (to the inviter, to the invitee), paid once with an invitee's first credited order ([invites])
        self.invite_rewards = invite_rewards

    async def get(self, out_trade_no: str) -> Order | None:
        row = await self.db.fetchone("SELECT * FROM orders WHERE out_trade_no = ?", (out_trade_no,))
        return _order(row) if row else None

    async def for_user(self, openid: str, limit: int = 20) -> list[Order]:
        rows = await self.db.fetchall(
            "SELECT * FROM orders WHERE openid = ? ORDER BY created_at DESC LIMIT ?", (openid, limit))
        return [_order(r) for r in rows]

    async def open_order(self, out_trade_no: str, openid: str, product_id: str, kind: str, credits: int,
                         amount_fen: int, now: float, expires_at: float, reuse_until: float, *,
                         plan_tier: str = "", plan_days: int = 0) -> tuple[Order, bool]:
        """The order to show this user for this product: the reusable one if it is pending, of the same
        price (of either kind) and still open at `reuse_until`, else a new `creating` row (superseding the old one, which
        stays pending until the jobs close it). Returns (order, reused)."""
        async with self.db.transaction() as conn:
            # one host at a time per (follower, product): two would both supersede the reusable order
            await serialize_async(conn, f"order:{openid}:{product_id}")
            async with conn.execute(
                "SELECT * FROM orders WHERE openid = ? AND product_id = ? AND reusable = 1", (openid, product_id)
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                old = _order(row)
                # Whatever its kind: switching between QR code and in-WeChat payment must not mint a new
                # order at WeChat Pay each time (a page could otherwise create orders as fast as it asks).
                same = ((old.credits, old.amount_fen, old.plan_tier, old.plan_days)
                        == (credits, amount_fen, plan_tier, plan_days))
                if old.state == "pending" and same and old.expires_at > reuse_until:
                    return old, True
                await conn.execute("UPDATE orders SET reusable = NULL WHERE out_trade_no = ?", (old.out_trade_no,))
            await conn.execute(
                "INSERT INTO orders (out_trade_no, openid, product_id, credits, amount_fen, kind, state, reusable,"
                " created_at, expires_at, plan_tier, plan_days) VALUES (?, ?, ?, ?, ?, ?, 'creating', 1, ?, ?, ?, ?)",
                (out_trade_no, openid, product_id, credits, amount_fen, kind, now, expires_at, plan_tier, plan_days),
            )
            order = await _fetch_order(conn, out_trade_no)
        assert order is not None
        return order, False

    async def set_created(self, out_trade_no: str, now: float, *, code_url: str | None = None,
                          prepay_id: str | None = None) -> Order | None:
        """WeChat Pay accepted the order: keep what the payer needs to pay it."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE orders SET state = CASE WHEN state = 'creating' THEN 'pending' ELSE state END,"
                " code_url = ?, prepay_id = ? WHERE out_trade_no = ?",
                (code_url, prepay_id, out_trade_no),
            )
            await _event(conn, out_trade_no, "create", "created", now)
            return await _fetch_order(conn, out_trade_no)

    async def set_create_failed(self, out_trade_no: str, now: float, *, definitive: bool, note: str) -> None:
        """The create call failed. A definitive refusal ends the order; otherwise (timeout, 5xx) WeChat
        may hold it after all, so it stays open, unreusable, for the query and close jobs."""
        state = "failed" if definitive else "pending"
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE orders SET state = ?, reusable = NULL, note = ? WHERE out_trade_no = ? AND state = 'creating'",
                (state, note, out_trade_no),
            )
            await _event(conn, out_trade_no, "create", "failed" if definitive else "unknown", now, note=note)

    async def settle(self, payment: Payment, source: str, now: float) -> Settlement:
        """Credit a payment exactly once, in one transaction: order → paid, ledger topup, balance.

        A paid amount that differs from the order's is never credited: the order is held and flagged.
        A payment for an order we had closed is credited (the money arrived) and flagged."""
        no = payment.out_trade_no
        facts = dict(trade_state=payment.trade_state, transaction_id=payment.transaction_id,
                     amount_fen=payment.amount_fen)
        async with self.db.transaction() as conn:
            order = await _fetch_order(conn, no, lock=True)
            if order is None:
                await _event(conn, no, source, "unknown_order", now, flagged=True,
                             note="WeChat Pay reports a payment for an order we do not have", **facts)
                return Settlement("unknown_order", None)
            if order.state in SETTLED or order.state == "held":
                await _event(conn, no, source, "duplicate", now, **facts)
                return Settlement("held" if order.state == "held" else "duplicate", order)
            if payment.amount_fen != order.amount_fen:
                note = f"amount mismatch: paid {payment.amount_fen} fen, order is {order.amount_fen} fen"
                await conn.execute(
                    "UPDATE orders SET state = 'held', reusable = NULL, transaction_id = ?, flagged = 1, note = ?"
                    " WHERE out_trade_no = ?", (payment.transaction_id, note, no))
                await _event(conn, no, source, "held", now, flagged=True, note=note, **facts)
                return Settlement("held", await _fetch_order(conn, no))
            late = order.state != "pending" and order.state != "creating"
            note = f"paid after the order was {order.state}" if late else order.note
            await conn.execute(
                "UPDATE orders SET state = 'paid', reusable = NULL, paid_at = ?, transaction_id = ?,"
                " flagged = CASE WHEN ? = 1 THEN 1 ELSE flagged END, note = ? WHERE out_trade_no = ?",
                (now, payment.transaction_id, int(late), note, no),
            )
            fresh = False
            if order.credits > 0:
                fresh = await self.apply_entry(conn, order.openid, "topup", order.credits, f"order:{no}")
            if order.plan_days > 0:
                granted = await grant_plan(conn, f"order:{no}", order.openid, order.plan_tier, order.plan_days,
                                           self.day_seconds, now)
                fresh = fresh or granted is not None
            if fresh and any(self.invite_rewards):
                await reward_invite(conn, order.openid, *self.invite_rewards, now)
            await _event(conn, no, source, "credited" if fresh else "duplicate", now, flagged=late,
                         note=note if late else (None if fresh else "ledger already had this top-up"), **facts)
            return Settlement("credited" if fresh else "duplicate", await _fetch_order(conn, no), late)

    async def record(self, out_trade_no: str, source: str, outcome: str, now: float, *,
                     trade_state: str | None = None, transaction_id: str | None = None,
                     amount_fen: int | None = None, flagged: bool = False, note: str | None = None) -> None:
        """Record an outcome that changes no order (a query saying NOTPAY, a notify for another merchant)."""
        async with self.db.transaction() as conn:
            await _event(conn, out_trade_no, source, outcome, now, trade_state=trade_state,
                         transaction_id=transaction_id, amount_fen=amount_fen, flagged=flagged, note=note)

    async def mark_closed(self, out_trade_no: str, source: str, now: float, note: str | None = None) -> bool:
        """An open order is closed (by us or as WeChat reports); False if it was paid meanwhile."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE orders SET state = 'closed', reusable = NULL, closed_at = ? WHERE out_trade_no = ?"
                " AND state IN ('creating', 'pending', 'failed')",
                (now, out_trade_no),
            )
            changed = cur.rowcount == 1
            if changed:
                await _event(conn, out_trade_no, source, "closed", now, note=note)
        return changed

    async def _claim(self, where: str, params: tuple[Any, ...], now: float, lease: float, limit: int) -> list[Order]:
        async with self.db.transaction() as conn:
            async with conn.execute(
                "UPDATE orders SET claimed_until = ? WHERE out_trade_no IN ("
                f" SELECT out_trade_no FROM orders WHERE state IN ('creating', 'pending') AND {where}"
                " AND (claimed_until IS NULL OR claimed_until <= ?) ORDER BY created_at LIMIT ?" + skip_locked(conn) + ")"
                " AND (claimed_until IS NULL OR claimed_until <= ?) RETURNING *",
                (now + lease, *params, now, limit, now),
            ) as cur:
                rows = await cur.fetchall()
        return sorted((_order(r) for r in rows), key=lambda o: o.created_at)

    async def claim_unsettled(self, now: float, older_than: float, lease: float, limit: int = 50) -> list[Order]:
        """Open, unexpired orders created before `older_than`, not claimed by another worker: ours for
        `lease` seconds (their notify may have been lost; the query job asks WeChat)."""
        return await self._claim("created_at <= ? AND expires_at > ?", (older_than, now), now, lease, limit)

    async def claim_expired(self, now: float, lease: float, limit: int = 50) -> list[Order]:
        """Open orders past their expiry, not claimed by another worker: ours to close for `lease` seconds."""
        return await self._claim("expires_at <= ?", (now,), now, lease, limit)

    async def events(self, out_trade_no: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM pay_events WHERE out_trade_no = ? ORDER BY id", (out_trade_no,))
        return [dict(r) for r in rows]

    async def flagged_events(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM pay_events WHERE flagged = 1 ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    # Refunds: one per order, of the whole amount or a part of it.

    async def begin_refund(self, out_trade_no: str, out_refund_no: str, reason: str, now: float,
                           amount_fen: int | None = None) -> dict[str, Any] | None:
        """The refund to request for a paid order: the one already begun (retry it with the same
        out_refund_no) or a new one of `amount_fen` (default: the whole order); None when the order is
        not paid."""
        async with self.db.transaction() as conn:
            order = await _fetch_order(conn, out_trade_no, lock=True)  # before the refund: a settle waits
            async with conn.execute("SELECT * FROM refunds WHERE out_trade_no = ?", (out_trade_no,)) as cur:
                row = await cur.fetchone()
            if row is not None:
                return dict(row)
            if order is None or order.state != "paid":
                return None
            amount = order.amount_fen if amount_fen is None else amount_fen
            await conn.execute(
                "INSERT INTO refunds (out_refund_no, out_trade_no, amount_fen, reason, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (out_refund_no, out_trade_no, amount, reason, now, now),
            )
            await conn.execute("UPDATE orders SET state = 'refunding' WHERE out_trade_no = ? AND state = 'paid'",
                               (out_trade_no,))
            if order.plan_days > 0:  # a refunded plan ends (its days are taken back), as its credits are
                await revoke_plan(conn, f"order:{out_trade_no}", self.day_seconds, now)
            await _event(conn, out_trade_no, "refund", "requested", now, amount_fen=amount, note=reason)
            async with conn.execute("SELECT * FROM refunds WHERE out_refund_no = ?", (out_refund_no,)) as cur:
                return dict(await cur.fetchone())

    async def update_refund(self, out_refund_no: str, status: str, refund_id: str | None, now: float) -> None:
        """Record WeChat's answer for a refund (PROCESSING, SUCCESS, CLOSED, ABNORMAL)."""
        state = {"PROCESSING": "processing", "SUCCESS": "success", "CLOSED": "closed", "ABNORMAL": "abnormal"}[status]
        async with self.db.transaction() as conn:
            async with conn.execute(
                "UPDATE refunds SET state = ?, refund_id = COALESCE(?, refund_id), updated_at = ?"
                " WHERE out_refund_no = ? RETURNING out_trade_no, amount_fen",
                (state, refund_id, now, out_refund_no),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return
            if state == "success":
                await conn.execute("UPDATE orders SET state = 'refunded' WHERE out_trade_no = ? AND state = 'refunding'",
                                   (row[0],))
            await _event(conn, row[0], "refund", state, now, amount_fen=row[1], flagged=state == "abnormal")
