"""A follower's own API key: kept encrypted with the server secret, never logged or echoed back."""

from __future__ import annotations

import base64
import hashlib
import time

from cryptography.fernet import Fernet, InvalidToken

from storage.own_keys import OwnKeyRepo


class OwnKeys:
    def __init__(self, secret: str, repo: OwnKeyRepo, clock=time.time) -> None:
        # Fernet wants 32 url-safe base64 bytes; the configured secret is any long string.
        key = base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())
        self._fernet = Fernet(key)
        self.repo = repo
        self.clock = clock

    async def store(self, openid: str, api_key: str) -> None:
        await self.repo.put(openid, self._fernet.encrypt(api_key.encode()), self.clock())

    async def remove(self, openid: str) -> bool:
        return await self.repo.delete(openid)

    async def key_for(self, openid: str) -> str | None:
        """The follower's key, or None (also when the server secret changed: the old key is unreadable)."""
        ciphertext = await self.repo.get(openid)
        if ciphertext is None:
            return None
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            return None
