"""A fake of WeChat's platform as the HTTP client of our /wechat endpoint.

What WeChat really does, and this fake reproduces:
- It POSTs each user message as XML (`Content-Type: text/xml`) with `signature`, `timestamp`, `nonce` and
  `openid` in the query string; with encryption on (compatible or safe mode) also `encrypt_type=aes` and
  `msg_signature`, and the body carries `<Encrypt>` (compatible mode keeps the plaintext fields beside it).
- It waits 5 s for an answer. On timeout it drops the connection and POSTs the very same request again
  (same timestamp, nonce and signatures): 3 deliveries in all. A served answer, whatever its status, ends it.
- A reply is `success`/empty (nothing shown), or XML; in safe mode the XML must be encrypted
  (`<Encrypt>`, `<MsgSignature>`, `<TimeStamp>`, `<Nonce>`). Anything WeChat cannot use makes the user see
  "该公众号暂时无法提供服务"; `Delivery.invalid_reason` says why.

The crypto comes from `tests.fakes.wechat_crypto`, never from werobot or mpgpt. The API side
(api.weixin.qq.com) is `FakeWeChatAPI`, re-exported here.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from tests.fakes.wechat_api import FakeWeChatAPI
from tests.fakes.wechat_crypto import CipherError, WeChatCipher, random_aes_key, sha1_signature

__all__ = [
    "CipherError",
    "Delivery",
    "FakeWeChat",
    "FakeWeChatAPI",
    "WeChatCipher",
    "WeChatMessage",
    "cdata",
    "random_aes_key",
    "sha1_signature",
]

Mode = Literal["plain", "compat", "safe"]
PASSIVE_TEXT_LIMIT = 2048  # passive text replies above this many UTF-8 bytes are observed to fail
UNAVAILABLE = "该公众号暂时无法提供服务"


def cdata(value: str) -> str:
    """CDATA as WeChat writes it; a literal `]]>` is split across two sections."""
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


@dataclass(frozen=True)
class WeChatMessage:
    """One inbound message or event; `fields` in WeChat's element order (ints render bare, strings as CDATA)."""

    fields: dict[str, str | int]

    def to_xml(self) -> str:
        parts = [
            f"<{name}>{value}</{name}>" if isinstance(value, int) else f"<{name}>{cdata(value)}</{name}>"
            for name, value in self.fields.items()
        ]
        return "<xml>" + "".join(parts) + "</xml>"

    @property
    def openid(self) -> str:
        return str(self.fields["FromUserName"])

    @property
    def msg_id(self) -> int | None:
        value = self.fields.get("MsgId")
        return None if value is None else int(value)

    @property
    def create_time(self) -> int:
        return int(self.fields["CreateTime"])

    @property
    def msg_type(self) -> str:
        return str(self.fields["MsgType"])


@dataclass
class Delivery:
    """What WeChat saw of one message: which attempt was answered, the raw answer, and the parsed reply."""

    attempt: int | None  # 1-based attempt that got an answer; None when every attempt timed out or failed
    attempts: int  # POSTs made
    status: int | None
    body: bytes
    elapsed: float  # seconds from the first POST to the answer (or to giving up)
    reply: dict[str, str] | None = None  # fields of the (decrypted) reply XML
    reply_xml: str | None = None
    invalid_reason: str | None = None  # set when WeChat would show UNAVAILABLE instead
    errors: list[str] = field(default_factory=list)  # per-attempt failures (timeouts, refused connections)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def answered(self) -> bool:
        return self.attempt is not None

    @property
    def is_empty(self) -> bool:
        """The server ended the exchange without a reply (empty body or `success`): the user sees nothing."""
        return self.status == 200 and self.body.strip() in (b"", b"success")

    @property
    def is_valid(self) -> bool:
        """WeChat accepted the answer (an empty one included)."""
        return self.status == 200 and self.invalid_reason is None

    @property
    def msg_type(self) -> str | None:
        return None if self.reply is None else self.reply.get("MsgType")

    @property
    def content(self) -> str | None:
        """The text reply's content, or None for no/invalid/non-text replies."""
        if self.reply is None or self.reply.get("MsgType") != "text":
            return None
        return self.reply.get("Content", "")


class FakeWeChat:
    """WeChat's platform delivering user messages to one server URL for one official account."""

    def __init__(
        self,
        url: str,
        token: str,
        app_id: str,
        encoding_aes_key: str = "",
        mode: Mode = "plain",
        window: float = 5.0,
        deliveries: int = 3,
        account: str = "gh_test",
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if mode not in ("plain", "compat", "safe"):
            msg = f"mode must be plain, compat or safe, not {mode!r}"
            raise ValueError(msg)
        if mode != "plain" and not encoding_aes_key:
            msg = f"{mode} mode needs an EncodingAESKey"
            raise ValueError(msg)
        self.url = url
        self.mode = mode
        self.window = window
        self.deliveries = deliveries
        self.account = account
        self.cipher = WeChatCipher(token, encoding_aes_key, app_id)
        self._session = session
        self._owns_session = session is None
        self._msg_ids = itertools.count(24_000_000_000_000_000 + secrets.randbelow(10**15))

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # force_close: every attempt is its own TCP connection, as WeChat's retries are.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FakeWeChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- messages -----------------------------------------------------------------------------------------

    def _head(self, openid: str, msg_type: str, create_time: int | None) -> dict[str, str | int]:
        return {
            "ToUserName": self.account,
            "FromUserName": openid,
            "CreateTime": create_time if create_time is not None else int(time.time()),
            "MsgType": msg_type,
        }

    def _next_msg_id(self, msg_id: int | None) -> int:
        return msg_id if msg_id is not None else next(self._msg_ids)

    def text_message(
        self, openid: str, content: str, msg_id: int | None = None, create_time: int | None = None
    ) -> WeChatMessage:
        fields = self._head(openid, "text", create_time)
        fields |= {"Content": content, "MsgId": self._next_msg_id(msg_id)}
        return WeChatMessage(fields)

    def voice_message(
        self,
        openid: str,
        recognition: str | None = None,
        media_id: str | None = None,
        fmt: str = "amr",
        msg_id: int | None = None,
        create_time: int | None = None,
    ) -> WeChatMessage:
        """`recognition=None` omits `<Recognition>` (recognition off); "" sends it empty, as WeChat may."""
        fields = self._head(openid, "voice", create_time)
        fields |= {"MediaId": media_id or secrets.token_urlsafe(32), "Format": fmt}
        if recognition is not None:
            fields["Recognition"] = recognition
        fields["MsgId"] = self._next_msg_id(msg_id)
        return WeChatMessage(fields)

    def image_message(
        self,
        openid: str,
        pic_url: str = "http://mmbiz.qpic.cn/mmbiz_jpg/fake/0",
        media_id: str | None = None,
        msg_id: int | None = None,
        create_time: int | None = None,
    ) -> WeChatMessage:
        fields = self._head(openid, "image", create_time)
        fields |= {"PicUrl": pic_url, "MediaId": media_id or secrets.token_urlsafe(32)}
        fields["MsgId"] = self._next_msg_id(msg_id)
        return WeChatMessage(fields)

    def event_message(
        self, openid: str, event: str, event_key: str = "", create_time: int | None = None
    ) -> WeChatMessage:
        """subscribe (event_key "qrscene_<scene>" via a QR code), unsubscribe, SCAN (bare scene), CLICK, VIEW.

        Events carry no MsgId (deduplicate on FromUserName + CreateTime); QR events add a Ticket.
        """
        fields = self._head(openid, "event", create_time)
        fields |= {"Event": event, "EventKey": event_key}
        if event == "SCAN" or (event == "subscribe" and event_key.startswith("qrscene_")):
            fields["Ticket"] = "gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2Zha2U"
        return WeChatMessage(fields)

    # -- requests -----------------------------------------------------------------------------------------

    @staticmethod
    def _nonce() -> str:
        return str(secrets.randbelow(9 * 10**9) + 10**9)  # WeChat's nonces are 10-digit numbers

    def signed_query(self, extra: dict[str, str] | None = None, timestamp: int | str | None = None) -> dict[str, str]:
        """signature/timestamp/nonce (+ extra) signed with the account token; pass an old timestamp for stale."""
        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = self._nonce()
        query = {"signature": self.cipher.signature(ts, nonce), "timestamp": ts, "nonce": nonce}
        return query | (extra or {})

    def build_request(
        self, message: WeChatMessage | str, timestamp: int | str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and query string WeChat sends for this message in this account's mode."""
        xml = message.to_xml() if isinstance(message, WeChatMessage) else message
        openid = message.openid if isinstance(message, WeChatMessage) else _field(xml, "FromUserName")
        query = self.signed_query({"openid": openid}, timestamp)
        if self.mode == "plain":
            return xml.encode(), query
        encrypt = self.cipher.encrypt(xml)
        query |= {
            "encrypt_type": "aes",
            "msg_signature": self.cipher.msg_signature(query["timestamp"], query["nonce"], encrypt),
        }
        if self.mode == "compat":
            body = xml.removesuffix("</xml>") + f"<Encrypt>{cdata(encrypt)}</Encrypt></xml>"
        else:
            body = f"<xml><ToUserName>{cdata(self.account)}</ToUserName><Encrypt>{cdata(encrypt)}</Encrypt></xml>"
        return body.encode(), query

    async def deliver(self, message: WeChatMessage | str) -> Delivery:
        """Deliver like WeChat: up to `deliveries` identical POSTs, each abandoned after `window` seconds."""
        body, query = self.build_request(message)
        openid = query["openid"]
        session = await self._client()
        loop = asyncio.get_running_loop()
        started = loop.time()
        errors: list[str] = []
        for attempt in range(1, self.deliveries + 1):
            try:
                status, answer = await self._post(session, body, query)
            except TimeoutError:
                errors.append(f"attempt {attempt}: no answer within {self.window}s")
                continue
            except aiohttp.ClientError as exc:
                errors.append(f"attempt {attempt}: {exc!r}")
                continue
            delivery = Delivery(attempt, attempt, status, answer, loop.time() - started, errors=errors)
            self._interpret(delivery, openid)
            return delivery
        return Delivery(None, self.deliveries, None, b"", loop.time() - started, errors=errors)

    async def _post(self, session: aiohttp.ClientSession, body: bytes, query: dict[str, str]) -> tuple[int, bytes]:
        # On timeout aiohttp closes the half-used connection, so the server sees the disconnect.
        timeout = aiohttp.ClientTimeout(total=self.window)
        headers = {"Content-Type": "text/xml"}
        async with session.post(self.url, params=query, data=body, headers=headers, timeout=timeout) as resp:
            return resp.status, await resp.read()

    async def post_raw(self, body: bytes, query: dict[str, str]) -> Delivery:
        """One POST of exactly this body and query (forged, stale, malformed...); no retries."""
        session = await self._client()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            status, answer = await self._post(session, body, query)
        except TimeoutError:
            return Delivery(None, 1, None, b"", loop.time() - started, errors=["no answer"])
        delivery = Delivery(1, 1, status, answer, loop.time() - started)
        self._interpret(delivery, None)
        return delivery

    async def verify_get(self, echostr: str | None = None, query: dict[str, str] | None = None) -> Delivery:
        """The URL handshake: GET with signature/timestamp/nonce/echostr; the server must echo `echostr`."""
        query = query if query is not None else self.signed_query({"echostr": echostr or self._nonce()})
        session = await self._client()
        loop = asyncio.get_running_loop()
        started = loop.time()
        timeout = aiohttp.ClientTimeout(total=self.window)
        async with session.get(self.url, params=query, timeout=timeout) as resp:
            return Delivery(1, 1, resp.status, await resp.read(), loop.time() - started)

    async def send_text(self, openid: str, content: str, msg_id: int | None = None) -> Delivery:
        return await self.deliver(self.text_message(openid, content, msg_id))

    async def send_voice(
        self, openid: str, recognition: str | None = None, media_id: str | None = None, msg_id: int | None = None
    ) -> Delivery:
        return await self.deliver(self.voice_message(openid, recognition, media_id, msg_id=msg_id))

    async def send_image(self, openid: str, pic_url: str | None = None, msg_id: int | None = None) -> Delivery:
        message = self.image_message(openid, msg_id=msg_id, **({"pic_url": pic_url} if pic_url else {}))
        return await self.deliver(message)

    async def send_event(self, openid: str, event: str, event_key: str = "") -> Delivery:
        return await self.deliver(self.event_message(openid, event, event_key))

    # -- replies ------------------------------------------------------------------------------------------

    def _interpret(self, delivery: Delivery, openid: str | None) -> None:
        """Parse a 200 answer as WeChat would, setting `reply` or `invalid_reason`."""
        if delivery.status != 200 or delivery.is_empty:
            return
        try:
            fields = _parse(delivery.body)
        except ValueError as exc:
            delivery.invalid_reason = str(exc)
            return
        if "Encrypt" in fields:
            if self.mode == "plain":
                delivery.invalid_reason = "encrypted reply to an account in plaintext mode"
                return
            try:
                plain = self.cipher.decrypt_verified(
                    fields["Encrypt"], fields.get("TimeStamp", ""), fields.get("Nonce", ""),
                    fields.get("MsgSignature", ""),
                )
                fields = _parse(plain)
            except (CipherError, ValueError) as exc:
                delivery.invalid_reason = f"encrypted reply rejected: {exc}"
                return
            delivery.reply_xml = plain.decode()
        elif self.mode == "safe":
            delivery.invalid_reason = "safe mode needs an encrypted reply"
            return
        else:
            delivery.reply_xml = delivery.text
        delivery.reply = fields
        delivery.invalid_reason = _reply_problem(fields, openid, self.account)


def _parse(raw: bytes | str) -> dict[str, str]:
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        msg = f"reply is not XML: {exc}"
        raise ValueError(msg) from exc
    if root.tag != "xml":
        msg = f"reply root is <{root.tag}>, not <xml>"
        raise ValueError(msg)
    return {child.tag: child.text or "" for child in root}


def _field(xml: str, name: str) -> str:
    return _parse(xml).get(name, "")


def _reply_problem(fields: dict[str, str], openid: str | None, account: str) -> str | None:
    if not fields.get("MsgType"):
        return "reply has no MsgType"
    if openid is not None and fields.get("ToUserName") != openid:
        return "reply ToUserName is not the sender"
    if openid is not None and fields.get("FromUserName") != account:
        return "reply FromUserName is not the account"
    if fields["MsgType"] == "text" and len(fields.get("Content", "").encode()) > PASSIVE_TEXT_LIMIT:
        return f"text reply over {PASSIVE_TEXT_LIMIT} UTF-8 bytes"
    return None
