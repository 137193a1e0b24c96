"""The WeChat Pay client against the fake WeChat Pay on loopback, in both key modes."""

from __future__ import annotations

import base64
import time

import pytest
import wechatpayv3
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from wechatpayv3.async_.core import AsyncCore

from bot.pay.client import PayClient, PayError, rfc3339
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import free_port
from tests.paykit import OPENID, pay_config


@pytest.fixture
async def fake_pk():
    async with FakeWeChatPay(make_keys(), mode="public_key") as fake:
        yield fake


@pytest.fixture
async def fake_cert():
    async with FakeWeChatPay(make_keys(), mode="certificate") as fake:
        yield fake


async def test_public_key_mode_creates_queries_and_closes_an_order_without_fetching_certificates(tmp_path, fake_pk):
    cfg = pay_config(tmp_path, fake_pk)
    async with PayClient.from_config(cfg) as client:
        assert client.ready
        expires = time.time() + 600
        code_url = await client.native("MP20261128000001", "600 积分", 600, expires)
        assert code_url.startswith("weixin://wxpay/bizpayurl?pr=")
        sent = fake_pk.orders["MP20261128000001"]
        assert sent.total == 600 and sent.request["time_expire"] == rfc3339(expires)
        assert sent.request["time_expire"].endswith("+08:00")
        tx = await client.query("MP20261128000001")
        assert tx is not None and (tx.trade_state, tx.amount_total, tx.mchid) == ("NOTPAY", 600, fake_pk.mchid)
        await client.close("MP20261128000001")
        tx = await client.query("MP20261128000001")
        assert tx is not None and tx.trade_state == "CLOSED"
    assert fake_pk.count("/v3/certificates") == 0


async def test_the_api_base_override_reaches_the_pinned_librarys_private_gateway(tmp_path, fake_pk):
    assert wechatpayv3.__version__ == "2.0.4"  # the override below depends on this version's internals
    default = AsyncCore(mchid="1", cert_serial_no="1", private_key=make_keys().merchant_pem, apiv3_key="k" * 32,
                        public_key=make_keys().wechat_public_pem, public_key_id="PUB_KEY_ID_1")
    assert default._gate_way == "https://api.mch.weixin.qq.com"
    cfg = pay_config(tmp_path, fake_pk, api_base=fake_pk.base_url + "/")
    async with PayClient.from_config(cfg) as client:
        assert client._pay is not None and client._pay._core._gate_way == fake_pk.base_url
        assert await client.query("MP20261128000404") is None
    assert fake_pk.requests == [("GET", "/v3/pay/transactions/out-trade-no/MP20261128000404")]


async def test_certificate_mode_uses_a_seeded_cert_dir_without_a_download(tmp_path, fake_cert):
    cfg = pay_config(tmp_path, fake_cert)
    fake_cert.keys.seed_cert_dir(cfg.resolve_path(cfg.pay.cert_dir))
    async with PayClient.from_config(cfg) as client:
        assert client.ready
        await client.native("MP20261128000002", "600 积分", 600, time.time() + 600)
        assert client.platform_key(fake_cert.keys.platform_serial) is not None
        assert client.platform_key(fake_cert.keys.public_key_id) is None
    assert fake_cert.count("/v3/certificates") == 0


async def test_certificate_mode_downloads_and_decrypts_the_platform_certificate_when_it_has_none(tmp_path, fake_cert):
    cfg = pay_config(tmp_path, fake_cert)
    async with PayClient.from_config(cfg) as client:
        assert client.ready
        assert client.platform_key(fake_cert.keys.platform_serial) is not None
        await client.native("MP20261128000003", "600 积分", 600, time.time() + 600)
    assert fake_cert.count("/v3/certificates") == 1
    saved = cfg.resolve_path(cfg.pay.cert_dir) / f"{fake_cert.keys.platform_serial}.pem"
    assert saved.read_text() == fake_cert.keys.platform_cert_pem


async def test_certificate_mode_without_a_certificate_is_not_ready_and_recovers_when_one_appears(tmp_path):
    async with FakeWeChatPay(make_keys(), mode="public_key") as fake:
        cfg = pay_config(tmp_path, fake, mode="certificate")
        async with PayClient.from_config(cfg) as client:
            assert not client.ready
            with pytest.raises(PayError) as e:
                await client.query("MP20261128000004")
            assert e.value.kind == "server"
            fake.mode = "certificate"
            assert await client.query("MP20261128000004") is None
            assert client.ready


async def test_a_jsapi_order_gives_weixinjsbridge_arguments_signed_with_the_merchant_key(tmp_path, fake_pk):
    cfg = pay_config(tmp_path, fake_pk)
    async with PayClient.from_config(cfg) as client:
        prepay_id = await client.jsapi("MP20261128000005", "600 积分", 600, time.time() + 600, OPENID)
        params = client.jsapi_params(prepay_id)
    assert fake_pk.orders["MP20261128000005"].request["payer"] == {"openid": OPENID}
    assert params["appId"] == fake_pk.appid and params["package"] == f"prepay_id={prepay_id}"
    assert params["signType"] == "RSA" and abs(int(params["timeStamp"]) - time.time()) < 5
    message = "{appId}\n{timeStamp}\n{nonceStr}\n{package}\n".format(**params).encode()
    fake_pk.keys.merchant_key.public_key().verify(base64.b64decode(params["paySign"]), message,
                                                  padding.PKCS1v15(), hashes.SHA256())


async def test_a_request_signed_under_the_wrong_merchant_serial_is_refused(tmp_path, fake_pk):
    cfg = pay_config(tmp_path, fake_pk, cert_serial_no="0123456789ABCDEF")
    async with PayClient.from_config(cfg) as client:
        with pytest.raises(PayError) as e:
            await client.native("MP20261128000006", "600 积分", 600, time.time() + 600)
    assert (e.value.kind, e.value.status, e.value.code) == ("refused", 401, "SIGN_ERROR")


async def test_an_answer_not_signed_by_wechat_pay_is_not_trusted(tmp_path, fake_pk):
    fake_pk.forge_answers = True
    cfg = pay_config(tmp_path, fake_pk)
    async with PayClient.from_config(cfg) as client:
        with pytest.raises(PayError) as e:
            await client.native("MP20261128000007", "600 积分", 600, time.time() + 600)
    assert e.value.kind == "signature"


async def test_a_server_error_and_an_unreachable_host_are_retryable_errors(tmp_path, fake_pk):
    fake_pk.fail_next("/native", 500, "SYSTEM_ERROR")
    async with PayClient.from_config(pay_config(tmp_path, fake_pk)) as client:
        with pytest.raises(PayError) as e:
            await client.native("MP20261128000008", "600 积分", 600, time.time() + 600)
        assert (e.value.kind, e.value.code) == ("server", "SYSTEM_ERROR")
    cfg = pay_config(tmp_path, fake_pk, api_base=f"http://127.0.0.1:{free_port()}")
    async with PayClient.from_config(cfg) as client:
        with pytest.raises(PayError) as e:
            await client.query("MP20261128000008")
        assert e.value.kind == "network"


async def test_closing_a_paid_order_is_refused_with_orderpaid(tmp_path, fake_pk):
    async with PayClient.from_config(pay_config(tmp_path, fake_pk)) as client:
        await client.native("MP20261128000009", "600 积分", 600, time.time() + 600)
        await fake_pk.pay("MP20261128000009", notify=False)
        with pytest.raises(PayError) as e:
            await client.close("MP20261128000009")
        assert e.value.code == "ORDERPAID"
        tx = await client.query("MP20261128000009")
    assert tx is not None and tx.trade_state == "SUCCESS" and tx.transaction_id and tx.payer_openid


async def test_a_refund_is_accepted_and_repeating_it_with_the_same_number_refunds_once(tmp_path, fake_pk):
    async with PayClient.from_config(pay_config(tmp_path, fake_pk)) as client:
        await client.native("MP20261128000010", "600 积分", 600, time.time() + 600)
        await fake_pk.pay("MP20261128000010", notify=False)
        first = await client.refund("MP20261128000010", "RF20261128000010", 600, 600, "用户申请")
        again = await client.refund("MP20261128000010", "RF20261128000010", 600, 600, "用户申请")
        assert first.status == "PROCESSING" and first.refund_id == again.refund_id
        assert (await client.query_refund("RF20261128000010")).status == "PROCESSING"
    assert fake_pk.orders["MP20261128000010"].refunded == 600
