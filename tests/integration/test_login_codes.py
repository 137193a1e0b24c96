"""Login codes, sessions and secrets on a real SQLite database."""

from __future__ import annotations

import asyncio
import re
import sqlite3

import pytest

from storage.db import Database
from storage.login import LoginCodeRepo, NoFreeCode, SecretRepo, SessionRepo
from tests.harness import make_config
from web_companion.login import LoginCodes, LoginRefused

ALICE, BOB = "o_alice_000000000000000000000", "o_bob_00000000000000000000000"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def codes(tmp_path, db, clock, **companion) -> LoginCodes:
    cfg = make_config(tmp_path, "http://127.0.0.1:9", companion=companion,
                      server={"public_url": "https://mp.example.com/"})
    return LoginCodes(cfg, db, clock=clock)


def code_in(reply: str) -> str:
    found = re.findall(r"\d{6}", reply)
    assert len(found) == 1, reply
    return found[0]


async def test_the_reply_carries_a_six_digit_code_its_lifetime_and_the_page_address(tmp_path, db):
    reply = await codes(tmp_path, db, Clock()).issue(ALICE)
    assert re.search(r"\d{6}", reply) and "5 分钟" in reply and "https://mp.example.com/" in reply


async def test_without_a_public_url_the_reply_leaves_the_address_line_out(tmp_path, db):
    cfg = make_config(tmp_path, "http://127.0.0.1:9")
    reply = await LoginCodes(cfg, db, clock=Clock()).issue(ALICE)
    assert "请在页面中输入" not in reply and re.search(r"\d{6}", reply)


async def test_asking_again_while_the_code_is_live_resends_the_same_code(tmp_path, db):
    clock = Clock()
    login = codes(tmp_path, db, clock)
    first = code_in(await login.issue(ALICE))
    clock.now += 200
    assert code_in(await login.issue(ALICE)) == first
    assert (await LoginCodeRepo(db).issue(ALICE, lambda: "999999", clock.now, 300)).code == first


async def test_an_expired_code_is_replaced_by_a_fresh_one(tmp_path, db):
    clock = Clock()
    repo = LoginCodeRepo(db)
    first = await repo.issue(ALICE, lambda: "111111", clock.now, 300)
    clock.now += 300
    second = await repo.issue(ALICE, lambda: "222222", clock.now, 300)
    assert (first.code, first.fresh, second.code, second.fresh) == ("111111", True, "222222", True)


async def test_a_code_logs_in_once_and_then_never_again(tmp_path, db):
    login = codes(tmp_path, db, Clock())
    code = code_in(await login.issue(ALICE))
    assert await login.redeem(code, "10.0.0.1") == ALICE
    assert await login.redeem(code, "10.0.0.1") == LoginRefused("invalid")


async def test_a_code_past_its_lifetime_logs_nobody_in(tmp_path, db):
    clock = Clock()
    login = codes(tmp_path, db, clock, login_code_ttl=60)
    code = code_in(await login.issue(ALICE))
    clock.now += 60
    assert await login.redeem(code, "10.0.0.1") == LoginRefused("invalid")


async def test_live_codes_are_unique_and_a_colliding_draw_is_drawn_again(tmp_path, db):
    repo = LoginCodeRepo(db)
    draws = iter(["123456", "123456", "654321"])
    a = await repo.issue(ALICE, lambda: next(draws), 0.0, 300)
    b = await repo.issue(BOB, lambda: next(draws), 0.0, 300)
    assert (a.code, b.code) == ("123456", "654321")
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO login_codes (code, openid, created_at, expires_at)"
                               " VALUES ('123456', 'o_carol', 0, 300)")


async def test_an_expired_code_does_not_block_the_same_digits_for_someone_else(tmp_path, db):
    repo = LoginCodeRepo(db)
    await repo.issue(ALICE, lambda: "123456", 0.0, 300)
    later = await repo.issue(BOB, lambda: "123456", 300.0, 300)
    assert later.code == "123456"
    assert (await repo.redeem("123456", "ip", 301.0, window=600, ip_limit=10, global_limit=100)).openid == BOB


async def test_a_draw_that_always_collides_gives_up_with_a_named_error(tmp_path, db):
    repo = LoginCodeRepo(db)
    await repo.issue(ALICE, lambda: "123456", 0.0, 300)
    with pytest.raises(NoFreeCode):
        await repo.issue(BOB, lambda: "123456", 1.0, 300)


async def test_two_users_asking_at_once_get_different_codes(tmp_path, db):
    login = codes(tmp_path, db, Clock())
    users = [f"o_user_{i:022d}" for i in range(30)]
    replies = await asyncio.gather(*(login.issue(u) for u in users))
    assert len({code_in(r) for r in replies}) == 30


async def test_wrong_codes_from_one_address_are_limited_and_the_limit_ages_out(tmp_path, db):
    clock = Clock()
    login = codes(tmp_path, db, clock, ip_failures=3, failure_window=60)
    code = code_in(await login.issue(ALICE))
    wrong = "000000" if code != "000000" else "000001"
    for _ in range(3):
        assert await login.redeem(wrong, "10.0.0.9") == LoginRefused("invalid")
        clock.now += 1
    refused = await login.redeem(code, "10.0.0.9")
    assert isinstance(refused, LoginRefused) and refused.reason == "ip_limited"
    assert refused.retry_after == pytest.approx(57)
    assert await login.redeem(code, "10.0.0.10") == ALICE  # another address is not held up
    clock.now += 57
    code = code_in(await login.issue(ALICE))
    assert await login.redeem(code, "10.0.0.9") == ALICE


async def test_wrong_codes_from_many_addresses_reach_the_global_limit(tmp_path, db):
    clock = Clock()
    login = codes(tmp_path, db, clock, ip_failures=5, global_failures=4, failure_window=60)
    code = code_in(await login.issue(ALICE))
    for i in range(4):
        await login.redeem("abc", f"10.0.1.{i}")
    refused = await login.redeem(code, "10.0.2.1")
    assert isinstance(refused, LoginRefused) and refused.reason == "global_limited"


async def test_a_session_is_active_until_it_is_revoked_or_expires(tmp_path, db):
    repo = SessionRepo(db)
    await repo.create("s1", ALICE, "code", 0.0, 100.0)
    await repo.create("s2", ALICE, "oauth", 0.0, 100.0)
    assert (await repo.active("s1", 50.0)).openid == ALICE
    assert await repo.revoke("s1", 60.0) and not await repo.revoke("s1", 61.0)
    assert await repo.active("s1", 61.0) is None
    assert await repo.active("s2", 99.0) is not None and await repo.active("s2", 100.0) is None


async def test_a_generated_secret_is_made_once_and_shared(tmp_path, db):
    repo = SecretRepo(db)
    made = iter(["first", "second"])
    a = await repo.get_or_create("session", lambda: next(made), 0.0)
    async with Database(tmp_path / "mpgpt.db") as other:
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


async def test_failures_counted_through_one_connection_hold_for_another_process(tmp_path, db):
    repo = LoginCodeRepo(db)
    await repo.issue(ALICE, lambda: "123456", 0.0, 300)
    limits = {"window": 600, "ip_limit": 2, "global_limit": 100}
    async with Database(tmp_path / "mpgpt.db") as other_process:
        other = LoginCodeRepo(other_process)
        assert (await repo.redeem("000000", "1.2.3.4", 1.0, **limits)).refusal == "invalid"
        assert (await other.redeem("000000", "1.2.3.4", 2.0, **limits)).refusal == "invalid"
        assert (await repo.redeem("123456", "1.2.3.4", 3.0, **limits)).refusal == "ip_limited"
        assert (await other.redeem("123456", "5.6.7.8", 3.0, **limits)).openid == ALICE
        assert (await repo.redeem("123456", "5.6.7.8", 4.0, **limits)).refusal == "invalid"
