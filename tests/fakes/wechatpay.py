"""A fake WeChat Pay API v3 on loopback, speaking the real wire protocol with keys made in the test.

Requests must carry WeChat Pay's `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,nonce_str=..,
signature=..,timestamp=..,serial_no=..` header, signed with the merchant key over
`METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n`; a bad one gets 401 SIGN_ERROR. Every response
is signed like WeChat Pay's (`Wechatpay-Serial/-Signature/-Timestamp/-Nonce/-Signature-Type`, SHA256withRSA
over `TIMESTAMP\\nNONCE\\nBODY\\n`) with the platform key: the WeChat Pay public key (serial
`PUB_KEY_ID_...`) in public-key mode, the platform certificate's key (serial = certificate serial in hex)
in certificate mode; `/v3/certificates` serves that certificate AEAD_AES_256_GCM-encrypted with the
APIv3 key.

    keys = make_keys()
    async with FakeWeChatPay(keys, mode="public_key") as fake:
        ... client with api_base=fake.base_url ...
        await fake.pay(out_trade_no)          # paid; the notify goes to the order's notify_url
        await fake.pay(no, notify=False)      # paid, notify lost
        headers, body = fake.stale_notify(no) # a notify to post yourself: fake.post_notify(headers, body)
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import ipaddress
import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

CST = dt.timezone(dt.timedelta(hours=8))
OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
Mode = Literal["public_key", "certificate", "both"]


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_public(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def rsa_sign(key: rsa.RSAPrivateKey, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def aead_encrypt(apiv3_key: str, plaintext: str, associated_data: str) -> dict[str, str]:
    nonce = secrets.token_hex(6)  # WeChat Pay's nonces are 12 printable characters
    ct = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), plaintext.encode(), associated_data.encode())
    return {"algorithm": "AEAD_AES_256_GCM", "ciphertext": base64.b64encode(ct).decode(),
            "associated_data": associated_data, "nonce": nonce}


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(int(t), CST).isoformat()


@dataclass(frozen=True)
class PayKeys:
    """Every key of one merchant and of (our fake) WeChat Pay."""

    merchant_key: rsa.RSAPrivateKey
    merchant_serial: str
    # WeChat Pay public key (public-key mode) and its id.
    wechat_key: rsa.RSAPrivateKey
    public_key_id: str
    # Platform certificate (certificate mode): a different key, a self-signed certificate.
    platform_key: rsa.RSAPrivateKey
    platform_cert: x509.Certificate
    apiv3_key: str
    # Somebody else's key, for forged notifies.
    attacker_key: rsa.RSAPrivateKey

    @property
    def platform_serial(self) -> str:
        return format(self.platform_cert.serial_number, "X")

    @property
    def merchant_pem(self) -> str:
        return _pem_private(self.merchant_key)

    @property
    def wechat_public_pem(self) -> str:
        return _pem_public(self.wechat_key.public_key())

    @property
    def platform_cert_pem(self) -> str:
        return self.platform_cert.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, folder: Any) -> dict[str, str]:
        """Write the merchant key and WeChat Pay's public key as files a [pay] config can name."""
        from pathlib import Path

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        (d / "apiclient_key.pem").write_text(self.merchant_pem)
        (d / "pub_key.pem").write_text(self.wechat_public_pem)
        return {"private_key_path": str(d / "apiclient_key.pem"), "public_key_path": str(d / "pub_key.pem")}

    def seed_cert_dir(self, folder: Any) -> str:
        """A cert_dir holding the platform certificate, as wechatpayv3 leaves it after a download."""
        from pathlib import Path

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{self.platform_serial}.pem").write_text(self.platform_cert_pem)
        return str(d)


def _self_signed(key: rsa.RSAPrivateKey, serial: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (fake)")])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))


@functools.lru_cache(maxsize=1)
def make_keys() -> PayKeys:
    """Fresh RSA-2048 keys, generated once per test session (they cost ~0.1 s each)."""
    gen = functools.partial(rsa.generate_private_key, public_exponent=65537, key_size=2048)
    platform_key = gen()
    return PayKeys(
        merchant_key=gen(), merchant_serial=secrets.token_hex(20).upper(),
        wechat_key=gen(), public_key_id="PUB_KEY_ID_0114" + secrets.token_hex(12).upper(),
        platform_key=platform_key, platform_cert=_self_signed(platform_key, int(secrets.token_hex(20), 16) >> 1),
        apiv3_key=secrets.token_hex(16), attacker_key=gen(),
    )


@dataclass
class FakeOrder:
    out_trade_no: str
    kind: str
    appid: str
    mchid: str
    description: str
    total: int
    notify_url: str
    openid: str | None
    time_expire: float | None
    request: dict[str, Any]
    trade_state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: float | None = None
    payer_openid: str | None = None
    code_url: str | None = None
    prepay_id: str | None = None
    refunded: int = 0


@dataclass
class FakeRefund:
    out_refund_no: str
    refund_id: str
    out_trade_no: str
    refund: int
    total: int
    status: str = "PROCESSING"
    created: float = field(default_factory=time.time)


class FakeWeChatPay:
    def __init__(self, keys: PayKeys, *, mchid: str = "1900000109", appid: str = "wxd678efh567hg6787",
                 mode: Mode = "public_key", retry_delays: tuple[float, ...] = ()) -> None:
        self.keys = keys
        self.mchid = mchid
        self.appid = appid
        self.mode = mode
        # After a notify that is not answered 2xx, re-send it after each of these delays (WeChat's
        # schedule is 15s, 15s, 30s, 3m, ... ; tests use a scaled-down one).
        self.retry_delays = retry_delays
        self.orders: dict[str, FakeOrder] = {}
        self.refunds: dict[str, FakeRefund] = {}
        self.requests: list[tuple[str, str]] = []
        # (out_trade_no, HTTP status or None on a connection error) for every notify sent.
        self.deliveries: list[tuple[str, int | None]] = []
        # Injected failures: path fragment → (status, code, message), used once each.
        self._failures: list[tuple[str, int, str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Sign answers with somebody else's key (a man in the middle): the client must not trust them.
        self.forge_answers = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> FakeWeChatPay:
        app = web.Application()
        app.router.add_post("/v3/pay/transactions/native", self._native)
        app.router.add_post("/v3/pay/transactions/jsapi", self._jsapi)
        app.router.add_get("/v3/pay/transactions/out-trade-no/{no}", self._query)
        app.router.add_post("/v3/pay/transactions/out-trade-no/{no}/close", self._close)
        app.router.add_post("/v3/refund/domestic/refunds", self._refund)
        app.router.add_get("/v3/refund/domestic/refunds/{no}", self._query_refund)
        app.router.add_get("/v3/certificates", self._certificates)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeWeChatPay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, path_fragment: str, status: int = 500, code: str = "SYSTEM_ERROR",
                  message: str = "系统错误") -> None:
        """Answer the next request whose path contains `path_fragment` with this error."""
        self._failures.append((path_fragment, status, code, message))

    def count(self, path_prefix: str) -> int:
        return sum(1 for _, p in self.requests if p.startswith(path_prefix))

    # -- signing -----------------------------------------------------------------------------------

    @property
    def serial(self) -> str:
        """The serial WeChat Pay signs with: the public key id unless in certificate-only mode."""
        return self.keys.platform_serial if self.mode == "certificate" else self.keys.public_key_id

    def _signing_key(self, serial: str) -> rsa.RSAPrivateKey:
        return self.keys.platform_key if serial == self.keys.platform_serial else self.keys.wechat_key

    def signed_headers(self, body: bytes, *, serial: str | None = None, timestamp: int | None = None,
                       nonce: str | None = None, key: rsa.RSAPrivateKey | None = None,
                       signature: str | None = None) -> dict[str, str]:
        serial = serial or self.serial
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or secrets.token_hex(16).upper()
        if signature is None:
            signature = rsa_sign(key or self._signing_key(serial), f"{ts}\n{nonce}\n".encode() + body + b"\n")
        return {"Wechatpay-Serial": serial, "Wechatpay-Signature": signature, "Wechatpay-Timestamp": ts,
                "Wechatpay-Nonce": nonce, "Wechatpay-Signature-Type": SIGNATURE_TYPE,
                "Request-ID": secrets.token_hex(16)}

    def _reply(self, status: int, payload: dict[str, Any] | None = None) -> web.Response:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        headers = self.signed_headers(body, key=self.keys.attacker_key if self.forge_answers else None)
        if payload is None:
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, body=body, headers=headers, content_type="application/json")

    def _error(self, status: int, code: str, message: str) -> web.Response:
        return self._reply(status, {"code": code, "message": message})

    async def _authorize(self, request: web.Request) -> tuple[web.Response | None, bytes]:
        body = await request.read()
        self.requests.append((request.method, request.path))
        for i, (frag, status, code, message) in enumerate(self._failures):
            if frag in request.path:
                del self._failures[i]
                return self._error(status, code, message), body
        auth = request.headers.get("Authorization", "")
        scheme, _, params = auth.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme != SIGNATURE_TYPE or not {"mchid", "nonce_str", "signature", "timestamp", "serial_no"} <= fields.keys():
            return self._error(401, "SIGN_ERROR", "Authorization 头格式错误"), body
        if fields["mchid"] != self.mchid:
            return self._error(401, "SIGN_ERROR", "商户号与 Authorization 不符"), body
        if fields["serial_no"] != self.keys.merchant_serial:
            return self._error(401, "SIGN_ERROR", "商户证书序列号有误"), body
        if not fields["timestamp"].isdigit() or abs(time.time() - int(fields["timestamp"])) > 300:
            return self._error(401, "SIGN_ERROR", "请求时间戳已过期"), body
        message = (f"{request.method}\n{request.raw_path}\n{fields['timestamp']}\n{fields['nonce_str']}\n".encode()
                   + body + b"\n")
        if not rsa_verify(self.keys.merchant_key.public_key(), message, fields["signature"]):
            return self._error(401, "SIGN_ERROR", "签名错误"), body
        return None, body

    # -- orders ------------------------------------------------------------------------------------

    def _check_create(self, data: dict[str, Any], kind: str) -> str | None:
        if data.get("appid") != self.appid:
            return "appid 与商户号不匹配"
        if data.get("mchid") != self.mchid:
            return "mchid 错误"
        desc = data.get("description")
        if not isinstance(desc, str) or not 1 <= len(desc) <= 127:
            return "description 长度须为 1-127"
        if not isinstance(data.get("out_trade_no"), str) or not OUT_TRADE_NO.fullmatch(data["out_trade_no"]):
            return "out_trade_no 格式错误"
        url = urllib.parse.urlsplit(str(data.get("notify_url", "")))
        host = url.hostname or ""
        loopback = host == "localhost" or (host.replace(".", "").isdigit() and ipaddress.ip_address(host).is_loopback)
        if url.query or not (url.scheme == "https" or (url.scheme == "http" and loopback)):
            return "notify_url 须为 https 且不能带参数"
        amount = data.get("amount")
        if not isinstance(amount, dict) or not isinstance(amount.get("total"), int) or amount["total"] <= 0:
            return "amount.total 须为正整数（分）"
        if amount.get("currency", "CNY") != "CNY":
            return "currency 须为 CNY"
        if "time_expire" in data:
            try:
                dt.datetime.fromisoformat(data["time_expire"])
            except (TypeError, ValueError):
                return "time_expire 格式错误"
            if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d)", data["time_expire"]):
                return "time_expire 须为 RFC 3339 格式，如 2018-06-08T10:34:56+08:00"
        if kind == "jsapi" and not (isinstance(data.get("payer"), dict) and data["payer"].get("openid")):
            return "JSAPI 下单须有 payer.openid"
        return None

    async def _create(self, request: web.Request, kind: str) -> web.Response:
        refused, raw = await self._authorize(request)
        if refused:
            return refused
        try:
            data = json.loads(raw)
        except ValueError:
            return self._error(400, "PARAM_ERROR", "请求体不是 JSON")
        problem = self._check_create(data, kind)
        if problem:
            return self._error(400, "PARAM_ERROR", problem)
        no = data["out_trade_no"]
        old = self.orders.get(no)
        if old is not None:
            if old.trade_state == "SUCCESS":
                return self._error(400, "ORDERPAID", "该订单已支付")
            if old.trade_state == "CLOSED":
                return self._error(400, "ORDER_CLOSED", "该订单已关闭")
            if old.request != data:
                return self._error(400, "INVALID_REQUEST", "201 商户订单号重复")
            order = old
        else:
            expire = dt.datetime.fromisoformat(data["time_expire"]).timestamp() if "time_expire" in data else None
            order = FakeOrder(no, kind, data["appid"], data["mchid"], data["description"], data["amount"]["total"],
                              data["notify_url"], (data.get("payer") or {}).get("openid"), expire, data)
            if kind == "native":
                order.code_url = f"weixin://wxpay/bizpayurl?pr={secrets.token_urlsafe(6)}"
            else:
                order.prepay_id = "wx" + secrets.token_hex(16)
            self.orders[no] = order
        if kind == "native":
            return self._reply(200, {"code_url": order.code_url})
        return self._reply(200, {"prepay_id": order.prepay_id})

    async def _native(self, request: web.Request) -> web.Response:
        return await self._create(request, "native")

    async def _jsapi(self, request: web.Request) -> web.Response:
        return await self._create(request, "jsapi")

    def transaction(self, order: FakeOrder, *, total: int | None = None, appid: str | None = None,
                    mchid: str | None = None, trade_state: str | None = None) -> dict[str, Any]:
        """The transaction object as the query answer and the notify resource carry it."""
        state = trade_state or order.trade_state
        tx: dict[str, Any] = {
            "appid": appid or order.appid, "mchid": mchid or order.mchid, "out_trade_no": order.out_trade_no,
            "trade_type": order.kind.upper(), "trade_state": state,
            "trade_state_desc": {"SUCCESS": "支付成功", "NOTPAY": "未支付", "CLOSED": "已关闭",
                                 "REFUND": "转入退款", "USERPAYING": "用户支付中"}.get(state, state),
            "attach": "",
            "amount": {"total": order.total if total is None else total, "currency": "CNY",
                       "payer_currency": "CNY"},
        }
        if order.transaction_id:
            tx.update({"transaction_id": order.transaction_id, "bank_type": "OTHERS",
                       "success_time": rfc3339(order.success_time or time.time()),
                       "payer": {"openid": order.payer_openid}})
            tx["amount"]["payer_total"] = tx["amount"]["total"]
        return tx

    async def _query(self, request: web.Request) -> web.Response:
        refused, _ = await self._authorize(request)
        if refused:
            return refused
        if request.query.get("mchid") != self.mchid:
            return self._error(400, "PARAM_ERROR", "mchid 错误")
        order = self.orders.get(request.match_info["no"])
        if order is None:
            return self._error(404, "ORDER_NOT_EXIST", "订单不存在")
        return self._reply(200, self.transaction(order))

    async def _close(self, request: web.Request) -> web.Response:
        refused, raw = await self._authorize(request)
        if refused:
            return refused
        try:
            data = json.loads(raw)
        except ValueError:
            return self._error(400, "PARAM_ERROR", "请求体不是 JSON")
        if data.get("mchid") != self.mchid:
            return self._error(400, "PARAM_ERROR", "mchid 错误")
        order = self.orders.get(request.match_info["no"])
        if order is None:
            return self._error(404, "ORDER_NOT_EXIST", "订单不存在")
        if order.trade_state in ("SUCCESS", "REFUND"):
            return self._error(400, "ORDERPAID", "订单已支付")
        order.trade_state = "CLOSED"
        return self._reply(204)

    # -- refunds -----------------------------------------------------------------------------------

    def _refund_json(self, r: FakeRefund) -> dict[str, Any]:
        order = self.orders[r.out_trade_no]
        return {"refund_id": r.refund_id, "out_refund_no": r.out_refund_no, "transaction_id": order.transaction_id,
                "out_trade_no": r.out_trade_no, "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
                "create_time": rfc3339(r.created), "status": r.status,
                "amount": {"total": r.total, "refund": r.refund, "payer_total": r.total, "payer_refund": r.refund,
                           "settlement_total": r.total, "settlement_refund": r.refund, "discount_refund": 0,
                           "currency": "CNY"}}

    async def _refund(self, request: web.Request) -> web.Response:
        refused, raw = await self._authorize(request)
        if refused:
            return refused
        try:
            data = json.loads(raw)
            no, out_refund_no, amount = data["out_trade_no"], data["out_refund_no"], data["amount"]
            refund, total = int(amount["refund"]), int(amount["total"])
        except (ValueError, KeyError, TypeError):
            return self._error(400, "PARAM_ERROR", "缺少 out_trade_no、out_refund_no 或 amount")
        if out_refund_no in self.refunds:
            return self._reply(200, self._refund_json(self.refunds[out_refund_no]))
        order = self.orders.get(no)
        if order is None:
            return self._error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        if order.trade_state not in ("SUCCESS", "REFUND"):
            return self._error(403, "TRADE_STATE_ERROR", "订单状态不可退款")
        if total != order.total or not 0 < refund <= order.total - order.refunded:
            return self._error(400, "PARAM_ERROR", "退款金额有误")
        r = FakeRefund(out_refund_no, "50" + secrets.token_hex(14), no, refund, total)
        self.refunds[out_refund_no] = r
        order.refunded += refund
        order.trade_state = "REFUND"
        return self._reply(200, self._refund_json(r))

    async def _query_refund(self, request: web.Request) -> web.Response:
        refused, _ = await self._authorize(request)
        if refused:
            return refused
        r = self.refunds.get(request.match_info["no"])
        if r is None:
            return self._error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
        return self._reply(200, self._refund_json(r))

    # -- platform certificates -----------------------------------------------------------------------

    async def _certificates(self, request: web.Request) -> web.Response:
        refused, _ = await self._authorize(request)
        if refused:
            return refused
        if self.mode == "public_key":
            return self._error(404, "NOT_FOUND", "商户未申请平台证书，请使用微信支付公钥")
        cert = self.keys.platform_cert
        return self._reply(200, {"data": [{
            "serial_no": self.keys.platform_serial,
            "effective_time": rfc3339(cert.not_valid_before_utc.timestamp()),
            "expire_time": rfc3339(cert.not_valid_after_utc.timestamp()),
            "encrypt_certificate": aead_encrypt(self.keys.apiv3_key, self.keys.platform_cert_pem, "certificate"),
        }]})

    # -- paying and notifying -------------------------------------------------------------------------

    async def pay(self, out_trade_no: str, *, notify: bool = True, force: bool = False,
                  openid: str | None = None) -> int | None:
        """The payer pays: the order becomes SUCCESS, then (unless `notify=False`, a lost notify) the
        notify is sent; returns its HTTP status. `force` pays an order that is closed or expired, the
        race where money arrives for an order the merchant already gave up on."""
        order = self.orders[out_trade_no]
        if not force:
            assert order.trade_state in ("NOTPAY", "USERPAYING"), f"cannot pay a {order.trade_state} order"
            assert order.time_expire is None or time.time() < order.time_expire, "order expired"
        order.trade_state = "SUCCESS"
        order.transaction_id = "4200" + secrets.token_hex(12)
        order.success_time = time.time()
        order.payer_openid = openid or order.openid or "o" + secrets.token_hex(14)
        if not notify:
            return None
        return await self.notify(out_trade_no)

    def build_notify(self, out_trade_no: str, *, total: int | None = None, appid: str | None = None,
                     mchid: str | None = None, trade_state: str | None = None, serial: str | None = None,
                     timestamp: int | None = None, key: rsa.RSAPrivateKey | None = None,
                     signature: str | None = None, apiv3_key: str | None = None) -> tuple[dict[str, str], bytes]:
        """A TRANSACTION.SUCCESS notify for the order, signed as WeChat Pay signs it unless told otherwise."""
        order = self.orders[out_trade_no]
        tx = self.transaction(order, total=total, appid=appid, mchid=mchid, trade_state=trade_state)
        resource = aead_encrypt(apiv3_key or self.keys.apiv3_key, json.dumps(tx, ensure_ascii=False), "transaction")
        body = json.dumps({
            "id": "EV-" + secrets.token_hex(10), "create_time": rfc3339(time.time()),
            "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
            "resource": {"original_type": "transaction", **resource},
        }, ensure_ascii=False).encode()
        return self.signed_headers(body, serial=serial, timestamp=timestamp, key=key, signature=signature), body

    def build_refund_notify(self, out_refund_no: str, status: str = "SUCCESS") -> tuple[dict[str, str], bytes]:
        """The REFUND.* notify WeChat Pay sends to the refund's notify_url when a refund ends."""
        r = self.refunds[out_refund_no]
        r.status = status
        order = self.orders[r.out_trade_no]
        resource = {"mchid": self.mchid, "out_trade_no": r.out_trade_no, "transaction_id": order.transaction_id,
                    "out_refund_no": out_refund_no, "refund_id": r.refund_id, "refund_status": status,
                    "success_time": rfc3339(time.time()), "user_received_account": "支付用户零钱",
                    "amount": {"total": r.total, "refund": r.refund, "payer_total": r.total, "payer_refund": r.refund}}
        body = json.dumps({
            "id": "EV-" + secrets.token_hex(10), "create_time": rfc3339(time.time()),
            "resource_type": "encrypt-resource", "event_type": f"REFUND.{status}", "summary": "退款成功",
            "resource": {"original_type": "refund",
                         **aead_encrypt(self.keys.apiv3_key, json.dumps(resource, ensure_ascii=False), "refund")},
        }, ensure_ascii=False).encode()
        return self.signed_headers(body), body

    # The bad notifies a merchant must refuse (all for a paid order, so crediting would be possible).

    def forged_notify(self, out_trade_no: str) -> tuple[dict[str, str], bytes]:
        """Right serial, right APIv3 encryption, signed with a key that is not WeChat Pay's."""
        return self.build_notify(out_trade_no, key=self.keys.attacker_key)

    def tampered_notify(self, out_trade_no: str) -> tuple[dict[str, str], bytes]:
        """A genuine notify whose body was changed after signing (one byte in the event id)."""
        headers, body = self.build_notify(out_trade_no)
        return headers, body.replace(b'"EV-', b'"EW-', 1)

    def stale_notify(self, out_trade_no: str, age: float = 600) -> tuple[dict[str, str], bytes]:
        """A genuinely signed notify whose timestamp is `age` seconds old (a replay)."""
        return self.build_notify(out_trade_no, timestamp=int(time.time() - age))

    def probe_notify(self, out_trade_no: str) -> tuple[dict[str, str], bytes]:
        """WeChat Pay's signature probe: a signature starting WECHATPAY/SIGNTEST/ must be refused."""
        return self.build_notify(out_trade_no, signature="WECHATPAY/SIGNTEST/" + secrets.token_urlsafe(32))

    def unknown_serial_notify(self, out_trade_no: str) -> tuple[dict[str, str], bytes]:
        """Signed by a key under a serial the merchant has never seen (a certificate-style hex serial)."""
        return self.build_notify(out_trade_no, serial=secrets.token_hex(20).upper(), key=self.keys.attacker_key)

    def mismatch_notify(self, out_trade_no: str, total: int = 1) -> tuple[dict[str, str], bytes]:
        """Genuinely signed, but the paid amount differs from the order's."""
        return self.build_notify(out_trade_no, total=total)

    async def post_notify(self, headers: dict[str, str], body: bytes, url: str) -> tuple[int, str]:
        assert self._session is not None
        async with self._session.post(url, data=body, headers={**headers, "Content-Type": "application/json"},
                                      timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status, await resp.text()

    async def notify(self, out_trade_no: str) -> int | None:
        """Send the order's notify to its notify_url, re-sending per `retry_delays` in the background
        while it is not acknowledged with 2xx; returns the first attempt's status (None: no connection)."""
        order = self.orders[out_trade_no]
        status = await self._deliver(order)
        if not (status and 200 <= status < 300) and self.retry_delays:
            task = asyncio.get_running_loop().create_task(self._redeliver(order))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return status

    async def _deliver(self, order: FakeOrder) -> int | None:
        headers, body = self.build_notify(order.out_trade_no)
        try:
            status, _ = await self.post_notify(headers, body, order.notify_url)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = None
        self.deliveries.append((order.out_trade_no, status))
        return status

    async def _redeliver(self, order: FakeOrder) -> None:
        for delay in self.retry_delays:
            await asyncio.sleep(delay)
            status = await self._deliver(order)
            if status and 200 <= status < 300:
                return
