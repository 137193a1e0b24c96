"""Login links, waiting browsers, sessions and secrets on a real SQLite database."""

from __future__ import annotations

import hashlib

import pytest

from storage.db import Database
from storage.login import LoginLinkRepo, NoFreeCode, SecretRepo, SessionRepo
from tests.companionkit import token_in
from tests.harness import make_config
from web_companion.login import Logins

ALICE, BOB = "o_alice_000000000000000000000", "o_bob_00000000000000000000000"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def logins(tmp_path, db, clock, public_url: str = "https://mp.example.com/", **companion) -> Logins:
    cfg = make_config(tmp_path, "http://127.0.0.1:9", companion=companion, server={"public_url": public_url})
    return Logins(cfg, db, clock=clock)


async def test_the_reply_carries_the_link_its_lifetime_and_the_desktop_way(tmp_path, db):
    reply = await logins(tmp_path, db, Clock()).issue(ALICE)
    assert "https://mp.example.com/#login=" in reply and "5 分钟" in reply and "「登录 数字」" in reply


async def test_without_a_public_url_the_reply_leaves_the_link_out(tmp_path, db):
    reply = await logins(tmp_path, db, Clock(), public_url="").issue(ALICE)
    assert "#login=" not in reply and "「登录 数字」" in reply


async def test_only_the_tokens_hash_is_stored(tmp_path, db):
    token = token_in(await logins(tmp_path, db, Clock()).issue(ALICE))
    rows = await db.fetchall("SELECT token_hash FROM login_links")
    assert [bytes(r["token_hash"]) for r in rows] == [hashlib.sha256(token.encode()).digest()]


async def test_a_link_logs_in_once_and_never_after_its_lifetime(tmp_path, db):
    clock = Clock()
    service = logins(tmp_path, db, clock, login_code_ttl=60)
    once, late = token_in(await service.issue(ALICE)), token_in(await service.issue(BOB))
    assert await service.redeem_link(once) == ALICE and await service.redeem_link(once) is None
    clock.now += 60
    assert await service.redeem_link(late) is None


async def test_a_link_used_through_one_process_is_spent_for_another(tmp_path, db, open_database):
    clock = Clock()
    token = token_in(await logins(tmp_path, db, clock).issue(ALICE))
    async with open_database() as other_process:
        assert await logins(tmp_path, other_process, clock).redeem_link(token) == ALICE
    assert await logins(tmp_path, db, clock).redeem_link(token) is None


async def test_live_wait_codes_are_unique_and_a_colliding_draw_is_drawn_again(tmp_path, db):
    repo = LoginLinkRepo(db)
    draws = iter(["111111", "111111", "222222"])
    a = await repo.start_wait(b"a" * 32, lambda: next(draws), "ip", 0.0, 300)
    b = await repo.start_wait(b"b" * 32, lambda: next(draws), "ip", 0.0, 300)
    assert (a.code, b.code) == ("111111", "222222")
    # once a's wait expires its code is free again
    c = await repo.start_wait(b"c" * 32, lambda: "111111", "ip", 301.0, 300)
    assert c.code == "111111"


async def test_a_draw_that_always_collides_gives_up_with_a_named_error(tmp_path, db):
    repo = LoginLinkRepo(db)
    await repo.start_wait(b"a" * 32, lambda: "333333", "ip", 0.0, 300)
    with pytest.raises(NoFreeCode):
        await repo.start_wait(b"b" * 32, lambda: "333333", "ip", 1.0, 300)


async def test_a_wait_is_claimed_once_and_picked_up_once(tmp_path, db, open_database):
    repo = LoginLinkRepo(db)
    await repo.start_wait(b"s" * 32, lambda: "444444", "ip", 0.0, 300)
    assert (await repo.finish_wait(b"s" * 32, 1.0)).openid is None
    async with open_database() as other_process:
        assert await LoginLinkRepo(other_process).claim("444444", ALICE, 2.0)
    assert not await repo.claim("444444", BOB, 3.0)
    assert (await repo.finish_wait(b"s" * 32, 4.0)).openid == ALICE
    assert await repo.finish_wait(b"s" * 32, 5.0) is None


async def test_an_expired_wait_can_be_neither_claimed_nor_picked_up(tmp_path, db):
    repo = LoginLinkRepo(db)
    await repo.start_wait(b"s" * 32, lambda: "555555", "ip", 0.0, 300)
    assert not await repo.claim("555555", ALICE, 300.0)
    await repo.start_wait(b"t" * 32, lambda: "666666", "ip", 0.0, 300)
    assert await repo.claim("666666", ALICE, 299.0)
    assert await repo.finish_wait(b"t" * 32, 300.0) is None


async def test_a_session_is_active_until_it_is_revoked_or_expires(tmp_path, db):
    repo = SessionRepo(db)
    await repo.create("s1", ALICE, "code", 0.0, 100.0)
    await repo.create("s2", ALICE, "oauth", 0.0, 100.0)
    assert (await repo.active("s1", 50.0)).openid == ALICE
    assert await repo.revoke("s1", 60.0) and not await repo.revoke("s1", 61.0)
    assert await repo.active("s1", 61.0) is None
    assert await repo.active("s2", 99.0) is not None and await repo.active("s2", 100.0) is None


async def test_a_generated_secret_is_made_once_and_shared(tmp_path, db, open_database):
    repo = SecretRepo(db)
    made = iter(["first", "second"])
    a = await repo.get_or_create("session", lambda: next(made), 0.0)
    async with open_database() as other:
        b = await SecretRepo(other).get_or_create("session", lambda: "third", 1.0)
    assert a == b == "first"


async def test_a_session_token_stops_working_when_its_lifetime_is_over(tmp_path, db):
    from web_companion.sessions import Sessions

    clock = Clock()
    cfg = make_config(tmp_path, "http://127.0.0.1:9", companion={"session_days": 1})
    sessions = await Sessions.open(cfg, db, clock)
    token = await sessions.start(ALICE, "code")
    clock.now += 86400 - 1
    assert await sessions.openid(token) == ALICE
    clock.now += 1
    assert await sessions.openid(token) is None


async def test_a_session_token_signed_with_another_key_is_refused_without_reaching_storage(tmp_path, db):
    from storage.login import SessionRepo
    from web_companion.sessions import Sessions

    cfg = make_config(tmp_path, "http://127.0.0.1:9")
    ours = Sessions(cfg, SessionRepo(db), b"k" * 32)
    theirs = Sessions(cfg, SessionRepo(db), b"x" * 32)
    token = await theirs.start(ALICE, "code")
    assert await theirs.openid(token) == ALICE and await ours.openid(token) is None
    assert not await ours.end(token) and await theirs.openid(token) == ALICE
