"""Top-ups: products, orders, the payment notify, and the jobs that catch what notifies miss.

Money received is never lost and never credited twice. The notify and the query job both end in
`OrderRepo.settle`, one transaction that is idempotent per order; a paid amount that differs from the
order's is held for the owner, never credited; a payment for an order we had closed is credited and
flagged. The jobs claim their orders through storage (one conditional UPDATE), so two server
processes never query or close the same order at the same time, and never hold a transaction across
a call to WeChat Pay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from bot import metrics
from bot.config import PayConfig, ProductConfig
from bot.pay.client import CST, PayClient, PayError, RefundResult, Transaction
from bot.pay.notify import NotifyRejected, NotifyVerifier, PaymentNotice
from storage.orders import Order, OrderRepo, Payment

log = structlog.get_logger(__name__)

KINDS = ("native", "jsapi")
# A notify that may be genuine but arrived unverifiable (clock skew, a certificate we have not loaded
# yet) is answered 401, so WeChat Pay sends it again; malformed ones 400.
_UNAUTHORIZED = ("probe", "unknown_serial", "stale", "signature")


class ProductNotFound(Exception):
    pass


class OrderFailed(Exception):
    """WeChat Pay did not create the order; `retry` says whether trying again may help."""

    def __init__(self, message: str, retry: bool) -> None:
        self.retry = retry
        super().__init__(message)


class RefundRefused(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Checkout:
    order: Order
    reused: bool
    # For JSAPI orders: the arguments of WeixinJSBridge.invoke('getBrandWCPayRequest', ...).
    jsapi_params: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class NotifyAnswer:
    ok: bool
    status: int
    message: str = ""


OnCredited = Callable[[Order], Awaitable[None]]


def new_out_trade_no(now: float, prefix: str = "MP") -> str:
    """28 characters: prefix, China time to the second, 48 random bits."""
    return prefix + dt.datetime.fromtimestamp(now, CST).strftime("%Y%m%d%H%M%S") + secrets.token_hex(6)


class PayService:
    def __init__(self, cfg: PayConfig, products: Sequence[ProductConfig], orders: OrderRepo, client: PayClient,
                 *, on_credited: OnCredited | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._products = {p.id: p for p in products}
        self.orders = orders
        self.client = client
        self.on_credited = on_credited
        self.clock = clock
        self.verifier = NotifyVerifier(client.platform_key, client.decrypt_notify, cfg.notify_tolerance, clock)
        self._tasks: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- products and orders ------------------------------------------------------------------------

    def products(self) -> list[ProductConfig]:
        return [p for p in self._products.values() if p.enabled]

    def product(self, product_id: str) -> ProductConfig:
        p = self._products.get(product_id)
        if p is None or not p.enabled:
            msg = f"no product {product_id!r}"
            raise ProductNotFound(msg)
        return p

    async def create_order(self, openid: str, product_id: str, kind: str) -> Checkout:
        """The order to pay for this product: an open one of the same kind is handed out again."""
        if kind not in KINDS:
            msg = f"kind must be one of {KINDS}"
            raise ValueError(msg)
        product = self.product(product_id)
        now = self.clock()
        expires = now + self.cfg.order_expiry
        order, reused = await self.orders.open_order(
            new_out_trade_no(now), openid, product.id, kind, product.credits, product.price_fen, now, expires,
            # An order with less than a sixth of its life left is not worth handing out again.
            reuse_until=now + self.cfg.order_expiry / 6)
        no = order.out_trade_no
        if not reused:
            try:
                if kind == "native":
                    code_url, prepay_id = await self.client.native(no, product.name, product.price_fen, expires), None
                else:
                    code_url, prepay_id = None, await self.client.jsapi(no, product.name, product.price_fen,
                                                                        expires, openid)
            except PayError as e:
                await self.orders.set_create_failed(no, self.clock(), definitive=e.kind == "refused", note=str(e)[:300])
                metrics.order_event("create_failed")
                log.warning("pay.create_failed", order=no, kind=e.kind, code=e.code)
                raise OrderFailed(str(e), retry=e.kind != "refused") from None
            created = await self.orders.set_created(no, self.clock(), code_url=code_url, prepay_id=prepay_id)
            assert created is not None
            order = created
            log.info("pay.order_created", order=no, product=product.id, amount_fen=product.price_fen, kind=kind)
            metrics.order_event("created")
        params = self.client.jsapi_params(order.prepay_id) if order.kind == "jsapi" and order.prepay_id else None
        return Checkout(order, reused, params)

    async def order_for(self, openid: str, out_trade_no: str) -> Order | None:
        """The order if it belongs to this user (the page polls it)."""
        order = await self.orders.get(out_trade_no)
        return order if order is not None and order.openid == openid else None

    # -- the notify ----------------------------------------------------------------------------------

    async def handle_notify(self, headers: Mapping[str, str], body: bytes) -> NotifyAnswer:
        """Verify, decrypt, settle. `ok` only once the outcome is committed; storage errors propagate
        (the edge answers FAIL and WeChat Pay retries)."""
        try:
            notice = self.verifier.verify(headers, body)
        except NotifyRejected as e:
            log.warning("pay.notify_rejected", reason=e.reason)
            return NotifyAnswer(False, 401 if e.reason in _UNAUTHORIZED else 400, str(e))
        if isinstance(notice, PaymentNotice):
            await self._apply(notice.transaction, "notify")
        else:
            await self.orders.update_refund(notice.out_refund_no, notice.status, notice.refund_id, self.clock())
            log.info("pay.refund_notified", order=notice.out_trade_no, status=notice.status)
        return NotifyAnswer(True, 204)

    async def _apply(self, tx: Transaction, source: str) -> None:
        no, now = tx.out_trade_no, self.clock()
        facts = dict(trade_state=tx.trade_state, transaction_id=tx.transaction_id, amount_fen=tx.amount_total)
        if tx.appid != self.cfg.app_id or tx.mchid != self.cfg.mchid:
            # Verified, but for another app or merchant: never ours to credit; retrying changes nothing.
            await self.orders.record(no, source, "wrong_merchant", now, flagged=True,
                                     note=f"appid {tx.appid!r} mchid {tx.mchid!r}", **facts)
            log.warning("pay.wrong_merchant", order=no, source=source)
            return
        if tx.trade_state != "SUCCESS" or tx.amount_total is None:
            await self.orders.record(no, source, "not_paid", now, flagged=tx.trade_state == "REFUND", **facts)
            return
        s = await self.orders.settle(Payment(no, tx.transaction_id or "", tx.amount_total, tx.trade_state), source, now)
        noteworthy = s.outcome in ("held", "unknown_order") or s.late
        (log.warning if noteworthy else log.info)("pay.settled", order=no, source=source, outcome=s.outcome,
                                                   late=s.late)
        if s.outcome == "credited" and s.order is not None:
            metrics.order_event("paid", paid_fen=s.order.amount_fen)
            self._announce(s.order)
        elif s.outcome == "held":
            metrics.order_event("held")

    def _announce(self, order: Order) -> None:
        if self.on_credited is None:
            return
        task = asyncio.get_running_loop().create_task(self._safe_announce(order))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _safe_announce(self, order: Order) -> None:
        assert self.on_credited is not None
        try:
            await self.on_credited(order)
        except Exception:
            log.exception("pay.announce_failed", order=order.out_trade_no)

    # -- jobs ----------------------------------------------------------------------------------------

    async def run_query_job(self) -> int:
        """Ask WeChat Pay about open orders older than `query_after` (their notify may be lost)."""
        now = self.clock()
        claimed = await self.orders.claim_unsettled(now, now - self.cfg.query_after, self.cfg.job_interval)
        for order in claimed:
            await self._reconcile(order, "query")
        return len(claimed)

    async def run_close_job(self) -> int:
        """Close expired orders with the close API; one WeChat Pay refuses (paid after all) is queried."""
        claimed = await self.orders.claim_expired(self.clock(), self.cfg.job_interval)
        for order in claimed:
            try:
                await self.client.close(order.out_trade_no)
            except PayError as e:
                log.info("pay.close_refused", order=order.out_trade_no, kind=e.kind, code=e.code)
                if e.kind == "refused":
                    await self._reconcile(order, "close")
                continue
            await self._close(order.out_trade_no, "close")
        return len(claimed)

    async def _close(self, out_trade_no: str, source: str, note: str | None = None) -> None:
        if await self.orders.mark_closed(out_trade_no, source, self.clock(), note=note):
            metrics.order_event("closed")

    async def _reconcile(self, order: Order, source: str) -> None:
        no = order.out_trade_no
        try:
            tx = await self.client.query(no)
        except PayError as e:
            log.warning("pay.query_failed", order=no, kind=e.kind, code=e.code)
            return
        now = self.clock()
        if tx is None:
            if order.expires_at <= now:
                await self._close(no, source, note="WeChat Pay has no such order")
            else:
                await self.orders.record(no, source, "not_found", now)
        elif tx.trade_state in ("CLOSED", "REVOKED"):
            await self._close(no, source, note=f"WeChat Pay says {tx.trade_state}")
        else:
            await self._apply(tx, source)

    async def run_jobs(self) -> None:
        """Both jobs, every `job_interval` seconds, until cancelled; one failure never stops them."""
        while True:
            for job in (self.run_query_job, self.run_close_job):
                try:
                    await job()
                except Exception:
                    log.exception("pay.job_failed", job=job.__name__)
            await asyncio.sleep(self.cfg.job_interval)

    # -- refunds -------------------------------------------------------------------------------------

    async def refund(self, out_trade_no: str, reason: str = "") -> RefundResult:
        """Refund a paid order in full (the owner's decision); a retry reuses the same out_refund_no.
        Credits already granted are not taken back here."""
        now = self.clock()
        r = await self.orders.begin_refund(out_trade_no, new_out_trade_no(now, "RF"), reason, now)
        if r is None:
            msg = f"order {out_trade_no} is not paid"
            raise RefundRefused(msg)
        if r["state"] in ("success", "closed"):
            return RefundResult(r["out_refund_no"], r["refund_id"], r["state"].upper())
        result = await self.client.refund(out_trade_no, r["out_refund_no"], r["amount_fen"], r["amount_fen"], reason)
        await self.orders.update_refund(result.out_refund_no, result.status, result.refund_id, self.clock())
        return result
