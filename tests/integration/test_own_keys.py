"""Followers' own API keys at rest: AES-GCM under an HKDF key, bound to the openid; older Fernet rows
are re-encrypted at start-up."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet

from bot.chat.own_keys import OwnKeys
from storage.own_keys import OwnKeyRepo

SECRET = "a-key-secret-of-sixteen-or-more"
ALICE, BOB = "o_alice_own_key_000000000000", "o_bob_own_key_00000000000000"
KEY = "sk-alice-0123456789abcdef"


async def _users(db, *openids: str) -> None:
    async with db.transaction() as conn:
        for openid in openids:
            await conn.execute("INSERT INTO users (openid, first_seen, last_seen) VALUES (?, 0, 0)", (openid,))


async def test_a_stored_key_reads_back_only_for_its_own_follower(db):
    await _users(db, ALICE, BOB)
    keys = OwnKeys(SECRET, OwnKeyRepo(db))
    await keys.store(ALICE, KEY)
    await keys.store(BOB, "sk-bob-0123456789abcdefgh")
    row = await db.fetchone("SELECT ciphertext, scheme FROM own_keys WHERE openid = ?", (ALICE,))
    assert row["scheme"] == 2 and KEY.encode() not in bytes(row["ciphertext"])
    assert await keys.key_for(ALICE) == KEY
    # Alice's ciphertext copied into Bob's row (a bad restore, a hand edit) is not Bob's key, nor anyone's
    await db.write(lambda conn: conn.execute("UPDATE own_keys SET ciphertext = ? WHERE openid = ?",
                                             (bytes(row["ciphertext"]), BOB)))
    assert await keys.key_for(BOB) is None
    assert await OwnKeys("another-secret-of-16-chars", OwnKeyRepo(db)).key_for(ALICE) is None


async def test_the_same_key_stored_twice_is_two_different_ciphertexts(db):
    await _users(db, ALICE)
    keys = OwnKeys(SECRET, OwnKeyRepo(db))
    await keys.store(ALICE, KEY)
    first = (await db.fetchone("SELECT ciphertext FROM own_keys"))["ciphertext"]
    await keys.store(ALICE, KEY)
    assert (await db.fetchone("SELECT ciphertext FROM own_keys"))["ciphertext"] != first


async def test_keys_stored_before_the_change_are_re_encrypted_once_at_start_up(db):
    await _users(db, ALICE, BOB)
    # as the earlier version wrote them: Fernet with SHA-256(secret), not bound to anyone (scheme 1)
    legacy = Fernet(base64.urlsafe_b64encode(hashlib.sha256(SECRET.encode()).digest()))
    unreadable = Fernet(Fernet.generate_key()).encrypt(b"sk-under-a-secret-long-gone")
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO own_keys (openid, ciphertext, set_at) VALUES (?, ?, 0)",
                           (ALICE, legacy.encrypt(KEY.encode())))
        await conn.execute("INSERT INTO own_keys (openid, ciphertext, set_at) VALUES (?, ?, 0)", (BOB, unreadable))
    keys = OwnKeys(SECRET, OwnKeyRepo(db))
    assert await keys.key_for(ALICE) is None  # not read through the old scheme
    assert await keys.upgrade() == 1 and await keys.upgrade() == 0
    assert await keys.key_for(ALICE) == KEY and await keys.key_for(BOB) is None
    schemes = {r["openid"]: r["scheme"] for r in await db.fetchall("SELECT openid, scheme FROM own_keys")}
    assert schemes == {ALICE: 2, BOB: 1}
