"""WeChat's message signature and AES scheme, written independently of werobot and of mpgpt.

The fake WeChat must not share code with the server it tests, or a bug in the server's crypto would be mirrored
here and every test would still pass. So this module uses only `hashlib`, `hmac` and `cryptography`, following
WeChat's documentation ("消息加解密说明"):

- URL `signature` = sha1 of the sorted [token, timestamp, nonce] joined without separator;
  `msg_signature` adds the `Encrypt` value to the sorted list.
- AES-256-CBC with key = base64decode(EncodingAESKey + "="), IV = the key's first 16 bytes.
- Plaintext = 16 random bytes + 4-byte big-endian length of the XML + the XML bytes + the AppID,
  PKCS#7-padded to a multiple of 32 bytes (WeChat's block size for padding, not AES's 16).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PAD_BLOCK = 32  # WeChat pads to 32 bytes although AES works on 16-byte blocks.


class CipherError(ValueError):
    """A message WeChat would refuse: bad signature, bad padding, bad length or another account's AppID."""


def random_aes_key() -> str:
    """A fresh EncodingAESKey as the official-account console generates it: 43 base64 chars for 32 bytes."""
    return base64.b64encode(os.urandom(32)).decode().rstrip("=")


def sha1_signature(*parts: str) -> str:
    """WeChat's signature: sha1 over the parts sorted as strings and concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class WeChatCipher:
    """Signs and (de)crypts messages for one official account the way WeChat's servers do."""

    def __init__(self, token: str, encoding_aes_key: str, app_id: str) -> None:
        self.token = token
        self.app_id = app_id
        self._key = self._decode_key(encoding_aes_key) if encoding_aes_key else b""

    @staticmethod
    def _decode_key(encoding_aes_key: str) -> bytes:
        if len(encoding_aes_key) != 43:
            msg = f"EncodingAESKey must be 43 characters, got {len(encoding_aes_key)}"
            raise ValueError(msg)
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error as exc:
            msg = "EncodingAESKey is not base64"
            raise ValueError(msg) from exc
        if len(key) != 32:
            msg = "EncodingAESKey must decode to 32 bytes"
            raise ValueError(msg)
        return key

    # -- signatures ---------------------------------------------------------------------------------------

    def signature(self, timestamp: str, nonce: str) -> str:
        """The URL `signature` WeChat puts on every request (and on the GET handshake)."""
        return sha1_signature(self.token, timestamp, nonce)

    def msg_signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """The `msg_signature` that covers an encrypted body (query string inbound, `<MsgSignature>` outbound)."""
        return sha1_signature(self.token, timestamp, nonce, encrypt)

    # -- AES ----------------------------------------------------------------------------------------------

    def _cipher(self) -> Cipher:
        if not self._key:
            msg = "this account has no EncodingAESKey (plaintext mode)"
            raise CipherError(msg)
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def encrypt(self, xml: str | bytes, random_prefix: bytes | None = None) -> str:
        """Encrypt one message; returns the base64 text that goes into `<Encrypt>`."""
        body = xml.encode() if isinstance(xml, str) else xml
        prefix = random_prefix if random_prefix is not None else os.urandom(16)
        if len(prefix) != 16:
            msg = "the random prefix is 16 bytes"
            raise ValueError(msg)
        plain = prefix + struct.pack(">I", len(body)) + body + self.app_id.encode()
        pad = PAD_BLOCK - len(plain) % PAD_BLOCK  # 1..32: a full block of padding when already aligned
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

    def decrypt(self, encrypt: str | bytes) -> bytes:
        """Decrypt an `<Encrypt>` value, checking padding, the length field and the AppID; returns the XML bytes."""
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            msg = "Encrypt is not base64"
            raise CipherError(msg) from exc
        if not raw or len(raw) % PAD_BLOCK:
            msg = f"ciphertext length {len(raw)} is not a multiple of {PAD_BLOCK}"
            raise CipherError(msg)
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= PAD_BLOCK or plain[-pad:] != bytes([pad]) * pad:
            msg = "bad PKCS#7 padding"
            raise CipherError(msg)
        content = plain[16:-pad]
        if len(content) < 4:
            msg = "plaintext too short"
            raise CipherError(msg)
        (length,) = struct.unpack(">I", content[:4])
        if 4 + length > len(content):
            msg = "length field runs past the plaintext"
            raise CipherError(msg)
        xml, app_id = content[4 : 4 + length], content[4 + length :]
        if not hmac.compare_digest(app_id, self.app_id.encode()):
            msg = "the message was encrypted for another AppID"
            raise CipherError(msg)
        return xml

    def decrypt_verified(self, encrypt: str, timestamp: str, nonce: str, msg_signature: str) -> bytes:
        """Check `msg_signature` (constant time) and then decrypt."""
        expected = self.msg_signature(timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected, msg_signature):
            msg = "msg_signature does not match"
            raise CipherError(msg)
        return self.decrypt(encrypt)
