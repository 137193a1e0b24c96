"""Verifying a WeChat Pay notify before anything believes it.

Checked here, in this order, before the library is called at all: the headers are all there; the
signature is not WeChat Pay's probe (`WECHATPAY/SIGNTEST/...`, which must fail); the serial names a key
we already hold (an unknown serial is refused, never a reason to download certificates: that is what a
forger would send); the timestamp is within the tolerance (wechatpayv3 does not check it, so a
recorded notify could be replayed forever); the SHA256withRSA signature holds over the raw body bytes.
Only then is the resource decrypted (AEAD_AES_256_GCM with the APIv3 key), by the library, whose own
exceptions on odd input are caught. What the notify *says* (appid, mchid, amount) is the service's
business; this module answers only "did WeChat Pay send exactly this".
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from bot.pay.client import Transaction

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
REFUND_STATUSES = ("SUCCESS", "CLOSED", "ABNORMAL", "PROCESSING")


class NotifyRejected(Exception):
    """A notify we do not believe. `reason` is one of a closed set (fit for logs and metrics)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class PaymentNotice:
    event_id: str
    transaction: Transaction


@dataclass(frozen=True, slots=True)
class RefundNotice:
    event_id: str
    out_trade_no: str
    out_refund_no: str
    refund_id: str | None
    status: str


Notice = PaymentNotice | RefundNotice


class NotifyVerifier:
    def __init__(self, key_for: Callable[[str], RSAPublicKey | None],
                 decrypt: Callable[[dict[str, str], bytes], dict[str, Any] | None], tolerance: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.key_for = key_for
        self.decrypt = decrypt
        self.tolerance = tolerance
        self.clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> Notice:
        h = {k.lower(): v for k, v in headers.items()}
        serial, signature = h.get("wechatpay-serial", ""), h.get("wechatpay-signature", "")
        timestamp, nonce = h.get("wechatpay-timestamp", ""), h.get("wechatpay-nonce", "")
        if not (serial and signature and timestamp and nonce):
            raise NotifyRejected("headers", "Wechatpay-Serial, -Signature, -Timestamp and -Nonce are required")
        if h.get("wechatpay-signature-type", SIGNATURE_TYPE) != SIGNATURE_TYPE:
            raise NotifyRejected("headers", f"unsupported signature type, expected {SIGNATURE_TYPE}")
        if signature.startswith(PROBE_PREFIX):
            raise NotifyRejected("probe", "signature probe refused")
        key = self.key_for(serial)
        if key is None:
            raise NotifyRejected("unknown_serial", "unknown Wechatpay-Serial")
        if not timestamp.isdigit() or abs(self.clock() - int(timestamp)) > self.tolerance:
            raise NotifyRejected("stale", "Wechatpay-Timestamp is too far from our clock")
        try:
            raw_signature = base64.b64decode(signature, validate=True)
            key.verify(raw_signature, f"{timestamp}\n{nonce}\n".encode() + body + b"\n", padding.PKCS1v15(),
                       hashes.SHA256())
        except (InvalidSignature, binascii.Error, ValueError):
            raise NotifyRejected("signature", "signature does not verify") from None
        canonical = {"Wechatpay-Serial": serial, "Wechatpay-Signature": signature, "Wechatpay-Timestamp": timestamp,
                     "Wechatpay-Nonce": nonce, "Wechatpay-Signature-Type": SIGNATURE_TYPE}
        data = self.decrypt(canonical, body)
        if not isinstance(data, dict) or not isinstance(data.get("resource"), dict):
            raise NotifyRejected("decrypt", "resource cannot be decrypted with our APIv3 key")
        return _notice(data)


def _notice(data: dict[str, Any]) -> Notice:
    event_id, event_type, resource = str(data.get("id", "")), str(data.get("event_type", "")), data["resource"]
    if event_type.startswith("REFUND."):
        status = resource.get("refund_status")
        if not resource.get("out_refund_no") or status not in REFUND_STATUSES:
            raise NotifyRejected("resource", "refund notify without out_refund_no or a known refund_status")
        return RefundNotice(event_id, str(resource.get("out_trade_no", "")), str(resource["out_refund_no"]),
                            resource.get("refund_id"), status)
    if event_type != "TRANSACTION.SUCCESS":
        raise NotifyRejected("event", f"unexpected event_type {event_type[:40]!r}")
    tx = Transaction.from_json(resource)
    if not tx.out_trade_no or tx.amount_total is None:
        raise NotifyRejected("resource", "transaction without out_trade_no or amount.total")
    return PaymentNotice(event_id, tx)

