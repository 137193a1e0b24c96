"""WeChat's message protocol: URL signatures, AES (werobot's crypto), XML parsing and replies.

Everything that can be wrong with an inbound request raises `EdgeError(status, reason)`, so the
handler answers a 4xx with the reason and never lets a malformed body reach the chat service.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections.abc import Mapping
from xml.etree import ElementTree

from werobot.crypto import MessageCrypt, PrpCrypto
from werobot.crypto.exceptions import AppIdValidationError, UnvalidEncodingAESKey
from werobot.parser import process_message
from werobot.replies import TextReply

from bot.chat.messages import Inbound
from bot.config import WechatConfig

# The envelope of an encrypted message is tiny and fixed; reading it with a regex saves a full XML
# parse per message. The Encrypt value is authenticated by msg_signature before use, and the
# decrypted message itself always goes through werobot's parser.
_ENVELOPE = re.compile(rb"\A\s*<xml>.*?<Encrypt><!\[CDATA\[([A-Za-z0-9+/=]{1,65536})\]\]></Encrypt>.*</xml>\s*\Z", re.S)


class _PrpCrypto(PrpCrypto):
    """werobot's AES piece with a cheaper random prefix (16 random characters, as WeChat asks)."""

    def get_random_string(self) -> str:
        return _random_prefix()


_POOL_BYTES = 4096
_pool = bytearray()


def _random_prefix() -> str:
    """16 hex characters from the system's CSPRNG, drawn from a pool refilled 512 prefixes at a time:
    one getrandom() call per reply showed as 4% of the edge's CPU under load."""
    global _pool
    if len(_pool) < 8:
        _pool = bytearray(secrets.token_bytes(_POOL_BYTES))
    chunk = _pool[-8:]
    del _pool[-8:]
    return chunk.hex()


class EdgeError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(*parts: str) -> str:
    """WeChat's signature: sha1 over the sorted parts joined (token, timestamp, nonce[, Encrypt])."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    # werobot compares with ==; a constant-time compare leaks nothing about the expected value.
    return hmac.compare_digest(a.encode(), b.encode())


class WeChatProtocol:
    def __init__(self, cfg: WechatConfig, clock=time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self._crypt: MessageCrypt | None = None
        if cfg.encoding_aes_key:
            try:
                self._crypt = MessageCrypt(cfg.token, cfg.encoding_aes_key, cfg.app_id)
                self._crypt.prp_crypto.__class__ = _PrpCrypto
            except (UnvalidEncodingAESKey, binascii.Error, ValueError):
                from bot.config import ConfigError

                raise ConfigError("wechat.encoding_aes_key", "is not a valid EncodingAESKey") from None

    @property
    def encrypts(self) -> bool:
        """An EncodingAESKey is configured: only encrypted, msg_signature-checked messages are read."""
        return self._crypt is not None

    def check_url(self, query: Mapping[str, str]) -> tuple[str, str]:
        """Verify signature and freshness of a request; return (timestamp, nonce)."""
        signature, timestamp, nonce = query.get("signature", ""), query.get("timestamp", ""), query.get("nonce", "")
        if not (signature and timestamp and nonce):
            raise EdgeError(400, "missing signature, timestamp or nonce")
        if len(nonce) > 64 or len(signature) > 64:
            raise EdgeError(400, "nonce or signature too long")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise EdgeError(400, "timestamp is not a number")
        ts = int(timestamp)
        if abs(self.clock() - ts) > self.cfg.timestamp_tolerance:
            raise EdgeError(403, "stale timestamp")
        if not _same(sign(self.cfg.token, timestamp, nonce), signature):
            raise EdgeError(403, "bad signature")
        return timestamp, nonce

    def open_body(self, query: Mapping[str, str], body: bytes) -> tuple[dict, bool]:
        """Parse (and decrypt, in compatible/safe mode) the XML body; return (fields, encrypted)."""
        if self._crypt is None:
            if query.get("encrypt_type", "raw") == "aes":
                raise EdgeError(400, "encrypted message but no encoding_aes_key is configured")
            fields = _parse_xml(body)
            if "Encrypt" in fields and "MsgType" not in fields:
                raise EdgeError(400, "encrypted body without encrypt_type=aes")
            return fields, False
        # With a key configured (compatible or safe mode) only the encrypted part counts: the URL
        # signature covers no body, so plaintext fields (or a plaintext request) could be anyone's.
        if query.get("encrypt_type") != "aes":
            raise EdgeError(400, "this account encrypts its messages: encrypt_type=aes and msg_signature required")
        envelope = _ENVELOPE.match(body)
        encrypt = envelope.group(1).decode() if envelope else _parse_xml(body).get("Encrypt")
        msg_signature = query.get("msg_signature", "")
        if not isinstance(encrypt, str) or not encrypt or not msg_signature:
            raise EdgeError(400, "missing Encrypt or msg_signature")
        if not _same(sign(self.cfg.token, query["timestamp"], query["nonce"], encrypt), msg_signature):
            raise EdgeError(403, "bad msg_signature")
        try:
            plain = self._crypt.prp_crypto.decrypt(encrypt, self.cfg.app_id)
        except AppIdValidationError:
            raise EdgeError(403, "message is for another app_id") from None
        except (ValueError, TypeError, IndexError, KeyError, struct.error, binascii.Error, UnicodeError):
            raise EdgeError(400, "cannot decrypt message") from None
        return _parse_xml(plain), True

    def to_inbound(self, fields: dict) -> Inbound:
        try:
            msg = process_message(dict(fields))
        except (KeyError, TypeError, AttributeError, ValueError):
            raise EdgeError(400, "not a WeChat message") from None
        openid = fields.get("FromUserName")
        if not isinstance(openid, str) or not openid:
            raise EdgeError(400, "message without FromUserName")
        kind = msg.type
        if kind.endswith("_event"):
            event = kind[: -len("_event")]
            key = f"{openid}:{fields.get('CreateTime', '')}:{event}"
            mapped = event if event in ("subscribe", "unsubscribe") else "event"
            event_key = fields.get("EventKey") if isinstance(fields.get("EventKey"), str) else ""
            return Inbound(mapped, openid, key, content=event, event_key=event_key or "")
        msg_id = fields.get("MsgId")
        if not isinstance(msg_id, str) or not msg_id.isdigit():
            raise EdgeError(400, "message without a numeric MsgId")
        if kind == "text":
            content = fields.get("Content")
            return Inbound("text", openid, msg_id, content=content if isinstance(content, str) else "")
        media_id = _text(fields.get("MediaId"))
        if kind == "voice":
            rec = fields.get("Recognition")
            return Inbound("voice", openid, msg_id, content=rec if isinstance(rec, str) else "", media_id=media_id,
                           recognized=isinstance(rec, str) and bool(rec.strip()))
        if kind == "image":
            return Inbound("image", openid, msg_id, media_id=media_id, pic_url=_text(fields.get("PicUrl")))
        return Inbound("other", openid, msg_id, content=kind)

    def render(self, fields: dict, content: str, encrypted: bool, timestamp: str, nonce: str) -> str:
        """A text reply to `fields`' sender, encrypted when the request was."""
        # CDATA cannot contain "]]>": split it across two sections so model output cannot break the XML.
        safe = xml_text(content).replace("]]>", "]]]]><![CDATA[>")
        xml = TextReply(target=fields["FromUserName"], source=fields.get("ToUserName", ""), content=safe,
                        time=int(self.clock())).render()
        if encrypted and self._crypt is not None:
            return self._crypt.encrypt_message(xml, timestamp, nonce)
        return xml


def _text(value: object) -> str:
    """A field's text; a media id or URL is never longer than this (anything longer is not WeChat's)."""
    return value.strip() if isinstance(value, str) and len(value) <= 2048 else ""


# Characters XML 1.0 forbids anywhere in a document (most C0 controls, lone surrogates, U+FFFE/FFFF): a
# model answer carrying one (NUL, ESC) made the reply unparseable, and WeChat showed 该公众号暂时无法提供服务.
_FORBIDDEN = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """`text` without the characters no XML 1.0 document may contain (every outgoing text passes here)."""
    return _FORBIDDEN.sub("", text)


# WeChat's messages nest three levels at most (<xml><ScanCodeInfo><ScanResult>); this leaves room.
MAX_DEPTH = 8
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_DECLARED = re.compile(rb"\A\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")


def _parse_xml(body: bytes | str) -> dict:
    """The message's fields as werobot's parser expects them (xmltodict's shape), from a C parser.

    werobot reads XML with xmltodict, which costs more per message than everything else in the
    edge together (bench/); ElementTree builds the same dict. WeChat never sends a DOCTYPE, and
    refusing one up front rules out entity tricks (XXE, billion laughs) before any parsing.
    """
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "replace")
    # WeChat sends UTF-8 without a byte order mark. Anything else is refused before parsing: in UTF-16 a
    # DOCTYPE would slip past the byte-level check below.
    if raw.startswith(_BOMS):
        raise EdgeError(400, "XML with a byte order mark is not accepted (UTF-8 only)")
    declared = _DECLARED.match(raw)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise EdgeError(400, "XML must be UTF-8")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EdgeError(400, "XML must be UTF-8") from None
    if _DOCTYPE.search(raw):
        raise EdgeError(400, "XML with a DOCTYPE or entities is not accepted")
    try:
        root = ElementTree.fromstring(raw)
    except (ElementTree.ParseError, ValueError, TypeError):
        raise EdgeError(400, "malformed XML") from None
    if root.tag != "xml":
        raise EdgeError(400, "XML root is not <xml>")
    fields = _element_dict(root, 0)
    return fields if isinstance(fields, dict) else {}


_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.I)


def _element_dict(element: ElementTree.Element, depth: int) -> dict | str | None:
    if depth > MAX_DEPTH:
        raise EdgeError(400, f"XML nested deeper than {MAX_DEPTH}")
    children = list(element)
    if not children:
        # stripped, as xmltodict (in wechatpy and werobot) reads it: WeChat's own samples write
        # <MsgType> <![CDATA[event]]> </MsgType>
        return (element.text or "").strip() or None
    out: dict = {}
    for child in children:
        value = _element_dict(child, depth + 1)
        if child.tag in out:  # a repeated tag becomes a list, as xmltodict does
            existing = out[child.tag]
            out[child.tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[child.tag] = value
    return out
