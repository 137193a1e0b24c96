"""Payment notifies through the pay service: real SQLite, notifies built and signed by the fake WeChat Pay.

Every bad notify is for an order that WeChat Pay really has paid, so crediting it would be possible:
the only thing standing between it and the balance is the check under test.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.pay.client import PayClient
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.paykit import OPENID, balance, books_balance, make_service, open_db, pay_config, topups


@pytest.fixture(params=["public_key", "certificate"])
async def env(request, tmp_path):
    """(fake, service, db) with one native order of product p6 (600 fen, 600 credits), paid at WeChat Pay
    but not yet notified."""
    async with FakeWeChatPay(make_keys(), mode=request.param) as fake:
        cfg = pay_config(tmp_path, fake)
        if request.param == "certificate":
            fake.keys.seed_cert_dir(cfg.resolve_path(cfg.pay.cert_dir))
        db = await open_db(tmp_path / "mpgpt.db")
        async with PayClient.from_config(cfg) as client:
            service = make_service(cfg, db, client)
            checkout = await service.create_order(OPENID, "p6", "native")
            await fake.pay(checkout.order.out_trade_no, notify=False)
            yield fake, service, db, checkout.order.out_trade_no
        await db.close()


async def assert_not_credited(service, db, no) -> None:
    order = await service.orders.get(no)
    assert order is not None and order.state == "pending"
    assert await balance(db) == 0 and await topups(db) == []


async def test_a_genuine_notify_credits_the_order_once_in_one_step(env):
    fake, service, db, no = env
    answer = await service.handle_notify(*fake.build_notify(no))
    assert answer.ok and answer.status == 204
    order = await service.orders.get(no)
    assert order.state == "paid" and order.transaction_id == fake.orders[no].transaction_id
    assert await balance(db) == 600
    assert [(e["source"], e["outcome"]) for e in await service.orders.events(no)][-1] == ("notify", "credited")


async def test_a_repeated_notify_is_acknowledged_and_not_credited_again(env):
    fake, service, db, no = env
    headers, body = fake.build_notify(no)
    assert (await service.handle_notify(headers, body)).ok
    assert (await service.handle_notify(headers, body)).ok
    assert (await service.handle_notify(*fake.build_notify(no))).ok
    assert await balance(db) == 600 and len(await topups(db)) == 1
    outcomes = [e["outcome"] for e in await service.orders.events(no) if e["source"] == "notify"]
    assert outcomes == ["credited", "duplicate", "duplicate"]


async def test_five_concurrent_identical_notifies_credit_once(env):
    fake, service, db, no = env
    headers, body = fake.build_notify(no)
    answers = await asyncio.gather(*(service.handle_notify(headers, body) for _ in range(5)))
    assert all(a.ok for a in answers)
    assert await balance(db) == 600 and len(await topups(db)) == 1
    assert await books_balance(db)


@pytest.mark.parametrize("bad", ["forged_notify", "tampered_notify", "stale_notify", "probe_notify",
                                 "unknown_serial_notify"])
async def test_an_unverifiable_notify_is_refused_with_401_and_credits_nothing(env, bad):
    fake, service, db, no = env
    answer = await service.handle_notify(*getattr(fake, bad)(no))
    assert not answer.ok and answer.status == 401
    await assert_not_credited(service, db, no)
    assert await service.orders.events(no) == [e for e in await service.orders.events(no) if e["source"] == "create"]


async def test_an_unknown_serial_is_refused_without_fetching_certificates(env):
    fake, service, db, no = env
    before = fake.count("/v3/certificates")
    for _ in range(3):
        assert not (await service.handle_notify(*fake.unknown_serial_notify(no))).ok
    headers, body = fake.build_notify(no, serial="PUB_KEY_ID_0114FFFFFFFFFFFFFFFFFFFFFFFF")
    assert (await service.handle_notify(headers, body)).status == 401
    assert fake.count("/v3/certificates") == before
    await assert_not_credited(service, db, no)


async def test_a_notify_with_another_amount_is_held_flagged_and_never_credited(env):
    fake, service, db, no = env
    answer = await service.handle_notify(*fake.mismatch_notify(no, total=1))
    assert answer.ok  # recorded and flagged for the owner; WeChat Pay sending it again changes nothing
    order = await service.orders.get(no)
    assert order.state == "held" and order.flagged and "paid 1 fen" in order.note
    assert await balance(db) == 0
    # Neither the genuine notify nor the query job credits a held order on its own.
    assert (await service.handle_notify(*fake.build_notify(no))).ok
    assert (await service.orders.get(no)).state == "held" and await balance(db) == 0
    flagged = await service.orders.flagged_events()
    assert flagged and flagged[-1]["outcome"] == "held" and flagged[-1]["amount_fen"] == 1


@pytest.mark.parametrize("field", ["appid", "mchid"])
async def test_a_verified_notify_for_another_app_or_merchant_is_flagged_and_not_credited(env, field):
    fake, service, db, no = env
    answer = await service.handle_notify(*fake.build_notify(no, **{field: "someone-else"}))
    assert answer.ok
    await assert_not_credited(service, db, no)
    assert (await service.orders.flagged_events())[0]["outcome"] == "wrong_merchant"


async def test_a_notify_saying_anything_but_success_credits_nothing(env):
    fake, service, db, no = env
    assert (await service.handle_notify(*fake.build_notify(no, trade_state="PAYERROR"))).ok
    await assert_not_credited(service, db, no)


async def test_a_notify_encrypted_with_another_apiv3_key_is_refused(env):
    fake, service, db, no = env
    answer = await service.handle_notify(*fake.build_notify(no, apiv3_key="0" * 32))
    assert not answer.ok and answer.status == 400
    await assert_not_credited(service, db, no)


@pytest.mark.parametrize("headers", [
    {},
    {"Wechatpay-Serial": "x", "Wechatpay-Signature": "!!", "Wechatpay-Timestamp": "x", "Wechatpay-Nonce": "n"},
    {"Wechatpay-Serial": "\u00ff" * 300, "Wechatpay-Signature": "a", "Wechatpay-Timestamp": "1", "Wechatpay-Nonce": "n"},
])
async def test_junk_headers_are_refused_without_raising(env, headers):
    _, service, db, no = env
    answer = await service.handle_notify(headers, b"{not json")
    assert not answer.ok and answer.status in (400, 401)
    await assert_not_credited(service, db, no)


async def test_a_genuinely_signed_body_that_is_not_json_is_refused(env):
    fake, service, db, no = env
    body = b"\xff\xfe not json"
    answer = await service.handle_notify(fake.signed_headers(body), body)
    assert not answer.ok and answer.status == 400
    await assert_not_credited(service, db, no)


async def test_the_timestamp_tolerance_is_configurable(tmp_path):
    async with FakeWeChatPay(make_keys()) as fake:
        cfg = pay_config(tmp_path, fake, notify_tolerance=60.0)
        db = await open_db(tmp_path / "mpgpt.db")
        async with PayClient.from_config(cfg) as client:
            service = make_service(cfg, db, client)
            no = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
            await fake.pay(no, notify=False)
            assert (await service.handle_notify(*fake.stale_notify(no, age=90))).status == 401
            assert (await service.handle_notify(*fake.stale_notify(no, age=-90))).status == 401
            assert (await service.handle_notify(*fake.stale_notify(no, age=30))).ok
            assert await balance(db) == 600
        await db.close()


async def test_while_switching_to_the_public_key_both_serials_are_accepted(tmp_path):
    async with FakeWeChatPay(make_keys(), mode="both") as fake:
        cfg = pay_config(tmp_path, fake)
        fake.keys.seed_cert_dir(cfg.resolve_path(cfg.pay.cert_dir))
        db = await open_db(tmp_path / "mpgpt.db")
        async with PayClient.from_config(cfg) as client:
            service = make_service(cfg, db, client)
            a = (await service.create_order(OPENID, "p6", "native")).order.out_trade_no
            b = (await service.create_order(OPENID, "p30", "native")).order.out_trade_no
            await fake.pay(a, notify=False)
            await fake.pay(b, notify=False)
            assert (await service.handle_notify(*fake.build_notify(a, serial=fake.keys.public_key_id))).ok
            assert (await service.handle_notify(*fake.build_notify(b, serial=fake.keys.platform_serial))).ok
            assert await balance(db) == 600 + 3500
        assert fake.count("/v3/certificates") == 0
        await db.close()
