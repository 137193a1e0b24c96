"""Our one door to WeChat Pay API v3: wechatpayv3's AsyncWeChatPay, entered with `async with`.

Never the sync client: its requests block the event loop. The library has no host setting, so
`api_base` is written into the private `_core._gate_way` (wechatpayv3 is pinned to 2.0.4 for this;
a test covers it). Public-key mode (a `PUB_KEY_ID_...` key) makes no call at start; certificate mode
loads `cert_dir` or downloads `/v3/certificates` on entry. If that download fails the client stays
usable later: every call first retries the entry.

Every answer comes back as a plain value or a PayError whose `kind` says what the caller may do:
`refused` (WeChat Pay said no, with its `code`), `server` (5xx: try again later), `network`
(no answer: the request may or may not have happened), `signature` (an answer we cannot trust).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from wechatpayv3.async_ import AsyncWeChatPay, WeChatPayType

from bot.config import Config, PayConfig

log = structlog.get_logger(__name__)
CST = dt.timezone(dt.timedelta(hours=8))


def rfc3339(t: float) -> str:
    """WeChat Pay's time format, in China time: 2026-11-28T13:29:35+08:00."""
    return dt.datetime.fromtimestamp(int(t), CST).isoformat()


class PayError(Exception):
    def __init__(self, kind: str, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.kind = kind
        self.status = status
        self.code = code
        super().__init__(f"{kind}: {code + ' ' if code else ''}{message}")


@dataclass(frozen=True, slots=True)
class Transaction:
    """A WeChat Pay transaction, from a query answer or a decrypted notify."""

    out_trade_no: str
    trade_state: str
    appid: str
    mchid: str
    transaction_id: str | None
    amount_total: int | None
    payer_openid: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Transaction:
        amount = d.get("amount") if isinstance(d.get("amount"), dict) else {}
        total = amount.get("total")
        payer = d.get("payer") if isinstance(d.get("payer"), dict) else {}
        return cls(str(d.get("out_trade_no", "")), str(d.get("trade_state", "")), str(d.get("appid", "")),
                   str(d.get("mchid", "")), d.get("transaction_id"),
                   total if isinstance(total, int) and not isinstance(total, bool) else None, payer.get("openid"))


@dataclass(frozen=True, slots=True)
class RefundResult:
    out_refund_no: str
    refund_id: str | None
    status: str  # SUCCESS | CLOSED | PROCESSING | ABNORMAL


def _load_cert_dir(folder: Path) -> list[x509.Certificate]:
    now = dt.datetime.now(dt.timezone.utc)
    certs = []
    for pem in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
        try:
            cert = x509.load_pem_x509_certificate(pem.read_bytes())
        except ValueError:
            continue
        if cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            certs.append(cert)
    return certs


class PayClient:
    def __init__(self, cfg: PayConfig, *, private_key: str, public_key: str | None = None,
                 cert_dir: str | None = None) -> None:
        self.cfg = cfg
        self._private_key = private_key
        self._public_key_pem = public_key
        loaded = load_pem_public_key(public_key.encode()) if public_key else None
        self._public_key = loaded if isinstance(loaded, RSAPublicKey) else None
        self._cert_dir = cert_dir
        self._pay: AsyncWeChatPay | None = None
        self._entered = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: Config) -> PayClient:
        p = config.pay
        public = config.resolve_path(p.public_key_path).read_text() if p.public_key_path else None
        return cls(p, private_key=config.resolve_path(p.private_key_path).read_text(), public_key=public,
                   cert_dir=str(config.resolve_path(p.cert_dir)) if p.cert_dir else None)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> PayClient:
        try:
            await self._ensure()
        except PayError as e:
            log.error("pay.client_not_ready", error=str(e))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._pay is not None and self._entered:
            await self._pay.__aexit__(None, None, None)
        self._pay, self._entered = None, False

    @property
    def ready(self) -> bool:
        return self._entered

    def _make(self) -> AsyncWeChatPay:
        c = self.cfg
        pay = AsyncWeChatPay(
            wechatpay_type=WeChatPayType.NATIVE, mchid=c.mchid, private_key=self._private_key,
            cert_serial_no=c.cert_serial_no, appid=c.app_id, apiv3_key=c.apiv3_key, notify_url=c.notify_url,
            cert_dir=self._cert_dir, timeout=(min(5.0, c.api_timeout), c.api_timeout),
            public_key=self._public_key_pem, public_key_id=c.public_key_id or None,
        )
        # The library has no host parameter; 2.0.4 keeps it here (pinned in pyproject).
        pay._core._gate_way = c.api_base.rstrip("/")
        return pay

    async def _ensure(self) -> AsyncWeChatPay:
        if self._entered and self._pay is not None:
            return self._pay
        async with self._lock:
            if not self._entered:
                pay = self._pay or self._make()
                self._pay = pay
                try:
                    await pay.__aenter__()
                except httpx.HTTPError as e:
                    await pay.__aexit__(None, None, None)
                    raise PayError("network", f"cannot fetch platform certificates: {e!r}") from None
                except Exception as e:  # the library raises bare Exception when no certificate can be had
                    await pay.__aexit__(None, None, None)
                    raise PayError("server", str(e)) from None
                if self._public_key is not None and self._cert_dir:
                    # Switching from certificates to the public key: notifies may still name either.
                    pay._core._certificates.extend(_load_cert_dir(Path(self._cert_dir)))
                self._entered = True
        assert self._pay is not None
        return self._pay

    # -- keys for notify verification ------------------------------------------------------------------

    def platform_key(self, serial: str) -> RSAPublicKey | None:
        """WeChat Pay's key named by a notify's Wechatpay-Serial, from what we hold: never a download."""
        if self._public_key is not None and serial == self.cfg.public_key_id:
            return self._public_key
        if self._pay is None or not serial or len(serial) > 64:
            return None
        for cert in self._pay._core._certificates:
            if format(cert.serial_number, "X") == serial.upper():
                return cert.public_key()  # type: ignore[return-value]
        return None

    def decrypt_notify(self, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
        """The library's own check and decryption of a notify we verified already; None if it refuses."""
        if self._pay is None:
            return None
        try:
            return self._pay.callback(headers, body)  # type: ignore[no-any-return]
        except Exception as e:  # junk headers make the library raise
            log.warning("pay.callback_refused", error=type(e).__name__)
            return None

    # -- requests -------------------------------------------------------------------------------------

    async def _call(self, what: str, fn: Any, **kw: Any) -> tuple[int, Any]:
        pay = await self._ensure()
        try:
            status, text = await fn(pay, **kw)
        except httpx.HTTPError as e:
            raise PayError("network", f"{what}: {type(e).__name__}") from None
        except Exception as e:
            if "verify the signature" in str(e):
                raise PayError("signature", f"{what}: the answer's signature does not verify") from None
            raise PayError("server", f"{what}: {e}") from None
        if 200 <= status < 300:
            return status, text
        try:
            err = json.loads(text)
        except (ValueError, TypeError):
            err = {}
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message", "") if isinstance(err, dict) else ""
        raise PayError("refused" if status < 500 else "server", f"{what}: {message}".strip(), status=status, code=code)

    @staticmethod
    def _json(text: Any) -> dict[str, Any]:
        try:
            data = json.loads(text)
        except (ValueError, TypeError):
            raise PayError("server", "answer is not JSON") from None
        if not isinstance(data, dict):
            raise PayError("server", "answer is not a JSON object")
        return data

    async def native(self, out_trade_no: str, description: str, amount_fen: int, expires_at: float) -> str:
        """Create a Native order; its `code_url` is shown as a QR code."""
        _, text = await self._call("native", AsyncWeChatPay.pay, description=description, out_trade_no=out_trade_no,
                                   amount={"total": amount_fen, "currency": "CNY"}, time_expire=rfc3339(expires_at),
                                   pay_type=WeChatPayType.NATIVE)
        code_url = self._json(text).get("code_url")
        if not isinstance(code_url, str) or not code_url:
            raise PayError("server", "native: no code_url in the answer")
        return code_url

    async def jsapi(self, out_trade_no: str, description: str, amount_fen: int, expires_at: float, openid: str) -> str:
        """Create a JSAPI order for a payer inside WeChat; returns its prepay_id."""
        _, text = await self._call("jsapi", AsyncWeChatPay.pay, description=description, out_trade_no=out_trade_no,
                                   amount={"total": amount_fen, "currency": "CNY"}, time_expire=rfc3339(expires_at),
                                   payer={"openid": openid}, pay_type=WeChatPayType.JSAPI)
        prepay_id = self._json(text).get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise PayError("server", "jsapi: no prepay_id in the answer")
        return prepay_id

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """What WeixinJSBridge.invoke('getBrandWCPayRequest', ...) takes; paySign is SHA256withRSA with
        the merchant key over appId, timeStamp, nonceStr and package, one per line."""
        assert self._pay is not None, "the client is not entered"
        params = {"appId": self.cfg.app_id, "timeStamp": str(int(time.time())), "nonceStr": secrets.token_hex(16),
                  "package": f"prepay_id={prepay_id}", "signType": "RSA"}
        params["paySign"] = self._pay.sign([params["appId"], params["timeStamp"], params["nonceStr"], params["package"]])
        return params

    async def query(self, out_trade_no: str) -> Transaction | None:
        """The order as WeChat Pay sees it; None when WeChat Pay has no such order."""
        try:
            _, text = await self._call("query", AsyncWeChatPay.query, out_trade_no=out_trade_no)
        except PayError as e:
            if e.code == "ORDER_NOT_EXIST" or (e.status == 404 and e.code in (None, "RESOURCE_NOT_EXISTS")):
                return None
            raise
        return Transaction.from_json(self._json(text))

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid order (WeChat answers 204); a paid one raises PayError code ORDERPAID."""
        await self._call("close", AsyncWeChatPay.close, out_trade_no=out_trade_no)

    async def refund(self, out_trade_no: str, out_refund_no: str, refund_fen: int, total_fen: int,
                     reason: str = "") -> RefundResult:
        """Ask for a refund; success means accepted (PROCESSING). Retry with the same out_refund_no."""
        _, text = await self._call("refund", AsyncWeChatPay.refund, out_refund_no=out_refund_no,
                                   out_trade_no=out_trade_no, reason=reason or None,
                                   amount={"refund": refund_fen, "total": total_fen, "currency": "CNY"})
        return self._refund_result(self._json(text))

    async def query_refund(self, out_refund_no: str) -> RefundResult:
        _, text = await self._call("query_refund", AsyncWeChatPay.query_refund, out_refund_no=out_refund_no)
        return self._refund_result(self._json(text))

    @staticmethod
    def _refund_result(d: dict[str, Any]) -> RefundResult:
        status = d.get("status")
        if status not in ("SUCCESS", "CLOSED", "PROCESSING", "ABNORMAL"):
            raise PayError("server", f"refund: unexpected status {status!r}")
        return RefundResult(str(d.get("out_refund_no", "")), d.get("refund_id"), status)
