"""A follower's own API key: encrypted with a key derived from the server secret, bound to the
follower, never logged or echoed back.

AES-256-GCM under HKDF-SHA256(chat.key_secret), with the openid as associated data: a ciphertext
moved to another follower's row (a bad restore, a hand-edited database) does not decrypt, and the
secret itself is never used as a key. (The `cryptography` package: HKDF and AES-GCM as specified,
rather than hand-made constructions.)
"""

from __future__ import annotations

import base64
import hashlib
import os
import time

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage.own_keys import OwnKeyRepo

log = structlog.get_logger(__name__)

_INFO = b"mpgpt own API keys v2"
_NONCE = 12


def _derive(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())


class OwnKeys:
    def __init__(self, secret: str, repo: OwnKeyRepo, clock=time.time) -> None:
        self._aead = AESGCM(_derive(secret))
        # only to read rows written before scheme 2 (migration 0011), once, at start-up
        self._legacy = Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))
        self.repo = repo
        self.clock = clock

    def _seal(self, openid: str, api_key: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, api_key.encode(), openid.encode())

    def _open(self, openid: str, ciphertext: bytes) -> str | None:
        try:
            return self._aead.decrypt(ciphertext[:_NONCE], ciphertext[_NONCE:], openid.encode()).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None

    async def store(self, openid: str, api_key: str) -> None:
        await self.repo.put(openid, self._seal(openid, api_key), self.clock())

    async def remove(self, openid: str) -> bool:
        return await self.repo.delete(openid)

    async def key_for(self, openid: str) -> str | None:
        """The follower's key, or None (also when the server secret changed or the row is another's)."""
        ciphertext = await self.repo.get(openid)
        return None if ciphertext is None else self._open(openid, ciphertext)

    async def upgrade(self) -> int:
        """Re-encrypt the rows stored before scheme 2; returns how many. A row the secret cannot read
        stays as it is (it reads as no key, as it did before)."""
        done = 0
        for openid, old in await self.repo.old_rows():
            try:
                api_key = self._legacy.decrypt(old).decode()
            except (InvalidToken, UnicodeDecodeError):
                continue
            done += await self.repo.upgrade(openid, old, self._seal(openid, api_key))
        if done:
            log.info("own_keys_reencrypted", rows=done)
        return done
