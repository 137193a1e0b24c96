"""The owner's products and orders commands, each its own `mpgpt` process, against the database of the
real app running on loopback (its pay service creating orders, WeChat Pay's notifies reaching it),
with the fake WeChat Pay answering both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from scripts.composition import create_app
from bot.config import load_config
from bot.keys import DB, PAY
from bot.pay.service import ProductNotFound
from storage.ledger import Ledger
from tests.fakes.llm import FakeLLM
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import config_data, loopback_socket, merge, served, write_toml
from tests.ownerkit import assert_one_line_failure, mpgpt, ok
from tests.paykit import OPENID
from tests.paykit import config_data as pay_config_data


@pytest.fixture
async def pay():
    async with FakeWeChatPay(make_keys()) as fake:
        yield fake


@asynccontextmanager
async def shop(tmp_path: Path, llm: FakeLLM, pay: FakeWeChatPay) -> AsyncIterator[tuple[Path, web.Application, str]]:
    """The real app with WeChat Pay on a socket bound first (so notify_url can name it); yields
    (config path for the commands, app, notify URL)."""
    sock, base = loopback_socket()
    notify_url = f"{base}/api/pay/notify"
    shop_data = pay_config_data(tmp_path, pay, notify_url=notify_url)
    # The background jobs stay out of the way: here the owner, not the query job, catches a lost notify.
    shop_data["pay"].update(query_after=3600.0, job_interval=3600.0)
    data = merge(config_data(tmp_path, llm.base_url), {"pay": shop_data["pay"]})
    data["products"] = shop_data["products"]
    path = write_toml(tmp_path / "mpgpt.toml", data)
    app = create_app(load_config(path))
    async with served(app, sock):
        yield path, app, notify_url


async def balance(app: web.Application, openid: str = OPENID) -> int:
    account = await Ledger(app[DB]).account(openid)
    return account.balance if account else 0


async def order(app: web.Application, product: str = "p6") -> str:
    return (await app[PAY].create_order(OPENID, product, "native")).order.out_trade_no


async def test_products_changed_from_the_command_line_are_what_the_running_server_sells(tmp_path, llm, pay):
    async with shop(tmp_path, llm, pay) as (config, app, _):
        assert [p.id for p in await app[PAY].load_products()] == ["p6", "p30"]
        await ok(config, "products", "add", "p100", "--name", "12000 积分", "--credits", "12000",
                 "--price-fen", "10000", "--reason", "大额套餐")
        await ok(config, "products", "update", "p6", "--price-fen", "500", "--reason", "促销")
        await ok(config, "products", "disable", "p30")

        cheaper = (await app[PAY].create_order(OPENID, "p6", "native")).order
        assert (cheaper.amount_fen, cheaper.credits) == (500, 600)
        assert pay.orders[cheaper.out_trade_no].total == 500
        with pytest.raises(ProductNotFound):
            await app[PAY].create_order(OPENID, "p30", "native")
        assert (await app[PAY].create_order(OPENID, "p100", "native")).order.amount_fen == 10000
        assert [p.id for p in app[PAY].products()] == ["p6", "p100"]

        listed = (await ok(config, "products", "list", "--json")).json()
        assert [(p["id"], p["price_fen"], p["enabled"]) for p in listed] == [
            ("p6", 500, True), ("p30", 3000, False), ("old", 10, False), ("p100", 10000, True)]
        assert "on sale" in (await ok(config, "products", "list")).out
        assert_one_line_failure(await mpgpt(config, "products", "add", "p6", "--name", "x", "--credits", "1",
                                            "--price-fen", "1"), "exists already", code=1)
        assert_one_line_failure(await mpgpt(config, "products", "update", "nope", "--name", "x"),
                                "unknown product", code=1)
        assert_one_line_failure(await mpgpt(config, "products", "update", "p6"), "nothing to change", code=1)
        assert_one_line_failure(await mpgpt(config, "products", "add", "bad id!", "--name", "x", "--credits", "1",
                                            "--price-fen", "1"), "product id", code=2)
        trail = (await ok(config, "audit", "--action", "products", "--json")).json()
        update = next(r for r in trail if r["action"] == "products.update")
        assert (update["detail"]["before"]["price_fen"], update["detail"]["after"]["price_fen"]) == (600, 500)
        assert [r["action"] for r in trail] == ["products.disable", "products.update", "products.add"]


async def test_a_payment_whose_notify_was_lost_is_completed_once_and_only_when_wechat_pay_says_paid(
        tmp_path, llm, pay):
    async with shop(tmp_path, llm, pay) as (config, app, _):
        no = await order(app)
        unpaid = await mpgpt(config, "orders", "complete", no)
        assert_one_line_failure(unpaid, "WeChat Pay says NOTPAY", "only a SUCCESS payment completes", code=1)
        assert await balance(app) == 0

        await pay.pay(no, notify=False)
        done = (await ok(config, "orders", "complete", no, "--reason", "用户截图已付款", "--json")).json()
        assert (done["outcome"], done["state"], done["balance"]) == ("credited", "paid", 600)
        again = await ok(config, "orders", "complete", no)
        assert "paid already" in again.out
        # The notify arrives after all: acknowledged, nothing more credited.
        assert await pay.notify(no) == 204
        assert await balance(app) == 600
        topups = [e for e in await Ledger(app[DB]).history(OPENID, limit=50) if e.kind == "topup"]
        assert len(topups) == 1 and await Ledger(app[DB]).check_invariant() == []
        [audit] = (await ok(config, "audit", "--action", "orders.complete", "--json")).json()
        assert (audit["target"], audit["reason"], audit["detail"]["trade_state"]) == (no, "用户截图已付款", "SUCCESS")


async def test_sync_and_close_act_on_what_wechat_pay_says(tmp_path, llm, pay):
    async with shop(tmp_path, llm, pay) as (config, app, _):
        unpaid, paid = await order(app, "p6"), await order(app, "p30")
        synced = (await ok(config, "orders", "sync", unpaid, "--json")).json()
        assert (synced["trade_state"], synced["outcome"], synced["state"]) == ("NOTPAY", "not_paid", "pending")

        closed = await ok(config, "orders", "close", unpaid, "--reason", "用户不要了")
        assert "closed" in closed.out and pay.orders[unpaid].trade_state == "CLOSED"
        assert (await app[PAY].orders.get(unpaid)).state == "closed"
        assert_one_line_failure(await mpgpt(config, "orders", "close", unpaid), "is closed", code=1)

        # Paid just as the owner closes it: WeChat Pay refuses to close, the payment is credited instead.
        await pay.pay(paid, notify=False)
        refused = await mpgpt(config, "orders", "close", paid)
        assert_one_line_failure(refused, "not closed", "is paid", "credited", code=1)
        assert await balance(app) == 3500

        lost = await order(app, "p6")
        await pay.pay(lost, notify=False)
        synced = (await ok(config, "orders", "sync", lost, "--json")).json()
        assert (synced["outcome"], synced["state"]) == ("credited", "paid")
        assert await balance(app) == 4100 and await Ledger(app[DB]).check_invariant() == []
        assert_one_line_failure(await mpgpt(config, "orders", "sync", "MP404404404"), "unknown order", code=1)


async def test_a_partial_refund_takes_back_its_share_of_the_credits_once(tmp_path, llm, pay):
    async with shop(tmp_path, llm, pay) as (config, app, notify_url):
        no = await order(app, "p30")  # 3500 credits for ¥30.00
        assert await pay.pay(no) == 204
        assert await balance(app) == 3500

        pay.fail_next("/v3/refund/domestic/refunds", 500, "SYSTEM_ERROR")
        failed = await mpgpt(config, "orders", "refund", no, "--amount", "1000", "--reason", "部分退款")
        assert_one_line_failure(failed, "did not take the refund", "run the same command again", code=1)
        # The refund and the credits taken back were committed before WeChat Pay was asked.
        assert await balance(app) == 3500 - 1167  # ceil(3500 * 1000 / 3000)

        retried = (await ok(config, "orders", "refund", no, "--reason", "部分退款", "--json")).json()
        assert retried["retry"] and retried["credits_taken"] == 0 and retried["status"] == "PROCESSING"
        assert retried["refund_fen"] == 1000 and pay.orders[no].refunded == 1000
        assert await balance(app) == 2333
        assert_one_line_failure(await mpgpt(config, "orders", "refund", no, "--amount", "500", "--reason", "x"),
                                "has a refund of 1000 fen already", code=1)

        # WeChat Pay reports the money back with the payer: the running server finishes the refund.
        status, _ = await pay.post_notify(*pay.build_refund_notify(retried["out_refund_no"]), notify_url)
        assert status == 204
        shown = (await ok(config, "orders", "show", no, "--json")).json()
        assert shown["state"] == "refunded" and shown["refund"]["state"] == "success"
        assert [e["outcome"] for e in shown["events"] if e["source"] == "refund"][-1] == "success"

        ledger = Ledger(app[DB])
        assert await ledger.check_invariant() == []
        [taken] = [e for e in await ledger.history(OPENID, limit=50) if e.kind == "admin"]
        assert taken.amount == -1167
        trail = (await ok(config, "audit", "--target", no, "--json")).json()
        assert [r["action"] for r in trail] == ["orders.refund_result", "orders.refund", "orders.refund_failed",
                                                "orders.refund"]
        first = trail[-1]
        assert taken.ref == f"audit:{first['id']}" and first["detail"]["credits_taken"] == 1167


async def test_a_refund_never_takes_the_balance_below_zero(tmp_path, llm, pay):
    async with shop(tmp_path, llm, pay) as (config, app, _):
        no = await order(app, "p6")
        assert await pay.pay(no) == 204
        await ok(config, "credits", "deduct", OPENID, "500", "--reason", "用掉了")  # spent, in effect
        refund = (await ok(config, "orders", "refund", no, "--reason", "全额退款", "--json")).json()
        assert (refund["refund_fen"], refund["credits_taken"], refund["shortfall"]) == (600, 100, 500)
        assert refund["balance"] == 0 and pay.orders[no].refunded == 600
        text = (await ok(config, "orders", "refund", no, "--reason", "全额退款")).out
        assert "retry" in text
        assert await Ledger(app[DB]).check_invariant() == []

        unpaid = await order(app, "p30")
        assert_one_line_failure(await mpgpt(config, "orders", "refund", unpaid, "--reason", "x"), "not paid", code=1)
        assert_one_line_failure(await mpgpt(config, "orders", "refund", unpaid, "--amount", "3001", "--reason", "x"),
                                "must be 1-3000 fen", code=1)


async def test_orders_list_and_show_give_the_owner_the_whole_story(tmp_path, llm, pay):
    async with shop(tmp_path, llm, pay) as (config, app, _):
        paid, pending = await order(app, "p6"), await order(app, "p30")
        await pay.pay(paid)
        listed = (await ok(config, "orders", "list", "--json")).json()
        assert {o["out_trade_no"]: o["state"] for o in listed} == {paid: "paid", pending: "pending"}
        assert [o["out_trade_no"] for o in (await ok(config, "orders", "list", "--state", "paid", "--json")).json()] \
            == [paid]
        mine = (await ok(config, "orders", "list", "--user", OPENID[-8:], "--json")).json()
        assert len(mine) == 2
        table = (await ok(config, "orders", "list")).out
        assert table.splitlines()[0].split()[:3] == ["ORDER", "CREATED", "USER"] and "¥6.00" in table
        shown = await ok(config, "orders", "show", paid)
        assert "events:" in shown.out and "notify" in shown.out and "credited" in shown.out
        assert_one_line_failure(await mpgpt(config, "orders", "list", "--state", "lost"), "invalid choice", code=2)


async def test_a_plan_product_added_by_the_owner_grants_its_tier_and_a_refund_ends_it(tmp_path, llm, pay):
    async with shop(tmp_path, llm, pay) as (config, app, _):
        await ok(config, "products", "add", "vip30", "--name", "VIP 月卡", "--tier", "vip", "--days", "30",
                 "--price-fen", "990", "--reason", "会员")
        listed = {p["id"]: p for p in (await ok(config, "products", "list", "--json")).json()}
        assert (listed["vip30"]["tier"], listed["vip30"]["days"], listed["vip30"]["credits"]) == ("vip", 30, 0)
        assert "vip 30d" in (await ok(config, "products", "list")).out
        assert_one_line_failure(await mpgpt(config, "products", "add", "half", "--name", "x", "--tier", "vip",
                                            "--price-fen", "1"), "go together", code=1)
        assert_one_line_failure(await mpgpt(config, "products", "add", "none", "--name", "x", "--price-fen", "1"),
                                "--credits", code=1)

        await app[PAY].load_products()
        no = await order(app, "vip30")
        assert await pay.pay(no) == 204
        shown = (await ok(config, "users", "show", OPENID, "--json")).json()
        assert shown["plan"]["tier"] == "vip" and shown["balance"] == 0
        refunded = (await ok(config, "orders", "refund", no, "--reason", "不想要了", "--json")).json()
        assert refunded["credits_taken"] == 0
        assert (await ok(config, "users", "show", OPENID, "--json")).json()["plan"] is None
        assert await Ledger(app[DB]).check_invariant() == []
