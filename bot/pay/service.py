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
import copy
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
from storage.products import ProductLike, ProductRepo

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


def credits_to_take_back(order: Order, refund_fen: int) -> int:
    """The credits a refund takes back: the refunded share of the order's credits, rounded up, so a
    refund of the whole order takes all of them. (The ledger then never goes below zero: what the
    user has spent already is not recovered; see scripts/owner/orders.py.)"""
    return -(-order.credits * refund_fen // order.amount_fen)


class PayService:
    def __init__(self, cfg: PayConfig, products: Sequence[ProductConfig], orders: OrderRepo, client: PayClient,
                 *, on_credited: OnCredited | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        # The config's products seed the products table (storage.products); after the first
        # load_products() the table is what is sold, so the owner can change it while we run.
        self._seed: tuple[ProductLike, ...] = tuple(products)
        self._seeded = False
        self._products: dict[str, ProductLike] = {p.id: p for p in products}
        self.catalogue = ProductRepo(orders.db, clock)
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

    def using(self, orders: OrderRepo) -> PayService:
        """This service writing through another order repository (e.g. one inside the owner's audited
        transaction, storage.audit); client, config and products are shared."""
        other = copy.copy(self)
        other.orders = orders
        other.catalogue = ProductRepo(orders.db, self.clock)
        return other

    # -- products and orders ------------------------------------------------------------------------

    async def load_products(self) -> list[ProductLike]:
        """Read what is on sale from storage (seeding it from the config once per process)."""
        if not self._seeded:
            await self.catalogue.seed(self._seed)
            self._seeded = True
        self._products = {p.id: p for p in await self.catalogue.all()}
        return self.products()

    def products(self) -> list[ProductLike]:
        """The enabled products as last loaded (load_products() reads storage again)."""
        return [p for p in self._products.values() if p.enabled]

    def product(self, product_id: str) -> ProductLike:
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
        await self.load_products()
        product = self.product(product_id)
        now = self.clock()
        expires = now + self.cfg.order_expiry
        order, reused = await self.orders.open_order(
            new_out_trade_no(now), openid, product.id, kind, product.credits, product.price_fen, now, expires,
            # An order with less than a sixth of its life left is not worth handing out again.
            reuse_until=now + self.cfg.order_expiry / 6, plan_tier=product.tier, plan_days=product.days)
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

    async def _apply(self, tx: Transaction, source: str) -> str:
        """Settle what WeChat Pay says was paid; the outcome: credited, duplicate, held, unknown_order,
        not_paid or wrong_merchant."""
        no, now = tx.out_trade_no, self.clock()
        facts = dict(trade_state=tx.trade_state, transaction_id=tx.transaction_id, amount_fen=tx.amount_total)
        if tx.appid != self.cfg.app_id or tx.mchid != self.cfg.mchid:
            # Verified, but for another app or merchant: never ours to credit; retrying changes nothing.
            await self.orders.record(no, source, "wrong_merchant", now, flagged=True,
                                     note=f"appid {tx.appid!r} mchid {tx.mchid!r}", **facts)
            log.warning("pay.wrong_merchant", order=no, source=source)
            return "wrong_merchant"
        if tx.trade_state != "SUCCESS" or tx.amount_total is None:
            await self.orders.record(no, source, "not_paid", now, flagged=tx.trade_state == "REFUND", **facts)
            return "not_paid"
        s = await self.orders.settle(Payment(no, tx.transaction_id or "", tx.amount_total, tx.trade_state), source, now)
        noteworthy = s.outcome in ("held", "unknown_order") or s.late
        (log.warning if noteworthy else log.info)("pay.settled", order=no, source=source, outcome=s.outcome,
                                                   late=s.late)
        if s.outcome == "credited" and s.order is not None:
            metrics.order_event("paid", paid_fen=s.order.amount_fen)
            self._announce(s.order)
        elif s.outcome == "held":
            metrics.order_event("held")
        return s.outcome

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

    async def _close(self, out_trade_no: str, source: str, note: str | None = None) -> bool:
        if await self.orders.mark_closed(out_trade_no, source, self.clock(), note=note):
            metrics.order_event("closed")
            return True
        return False

    async def _reconcile(self, order: Order, source: str) -> None:
        no = order.out_trade_no
        try:
            tx = await self.client.query(no)
        except PayError as e:
            log.warning("pay.query_failed", order=no, kind=e.kind, code=e.code)
            return
        await self.apply_query(order, tx, source)

    async def apply_query(self, order: Order, tx: Transaction | None, source: str = "query") -> str:
        """Act on a query's answer (no network call here): credit a payment through the same path as
        the notify, close an order WeChat Pay closed or never had. Returns what happened: credited,
        duplicate, held, unknown_order, not_paid, wrong_merchant, closed, not_found or unchanged."""
        no, now = order.out_trade_no, self.clock()
        if tx is None:
            if order.expires_at <= now:
                return "closed" if await self._close(no, source, note="WeChat Pay has no such order") else "unchanged"
            await self.orders.record(no, source, "not_found", now)
            return "not_found"
        if tx.trade_state in ("CLOSED", "REVOKED"):
            return "closed" if await self._close(no, source, note=f"WeChat Pay says {tx.trade_state}") else "unchanged"
        return await self._apply(tx, source)

    async def run_jobs(self) -> None:
        """Both jobs, every `job_interval` seconds, until cancelled; one failure never stops them.
        The products are read again each round, so products() follows the owner's changes."""
        while True:
            for job in (self.run_query_job, self.run_close_job, self.load_products):
                try:
                    await job()
                except Exception:
                    log.exception("pay.job_failed", job=job.__name__)
            await asyncio.sleep(self.cfg.job_interval)

    # -- refunds -------------------------------------------------------------------------------------

    async def refund(self, out_trade_no: str, reason: str = "", amount_fen: int | None = None) -> RefundResult:
        """Refund a paid order, in full or `amount_fen` of it (the owner's decision); a retry reuses the
        same out_refund_no. Credits already granted are not taken back here (the owner's command does)."""
        refund, _ = await self.begin_refund(out_trade_no, reason, amount_fen)
        return await self.send_refund(refund)

    async def begin_refund(self, out_trade_no: str, reason: str = "",
                           amount_fen: int | None = None) -> tuple[dict, bool]:
        """Storage only: the order's refund row, begun now (True) or earlier (False, whatever amount
        it was for: one refund per order). RefundRefused for an unknown or unpaid order or a bad amount."""
        order = await self.orders.get(out_trade_no)
        if order is None:
            msg = f"no order {out_trade_no}"
            raise RefundRefused(msg)
        if amount_fen is not None and not 0 < amount_fen <= order.amount_fen:
            msg = f"a refund of order {out_trade_no} must be 1-{order.amount_fen} fen (got {amount_fen})"
            raise RefundRefused(msg)
        now = self.clock()
        out_refund_no = new_out_trade_no(now, "RF")
        r = await self.orders.begin_refund(out_trade_no, out_refund_no, reason, now, amount_fen)
        if r is None:
            msg = f"order {out_trade_no} is {order.state}, not paid"
            raise RefundRefused(msg)
        return r, r["out_refund_no"] == out_refund_no

    async def send_refund(self, refund: dict) -> RefundResult:
        """Ask WeChat Pay for a begun refund (again: the same out_refund_no) and record its answer."""
        if refund["state"] in ("success", "closed"):
            return RefundResult(refund["out_refund_no"], refund["refund_id"], refund["state"].upper())
        order = await self.orders.get(refund["out_trade_no"])
        assert order is not None  # refunds reference their order
        result = await self.client.refund(order.out_trade_no, refund["out_refund_no"], refund["amount_fen"],
                                          order.amount_fen, refund["reason"] or "")
        await self.orders.update_refund(result.out_refund_no, result.status, result.refund_id, self.clock())
        return result
