"""The owner's commands as separate `mpgpt` processes against the database of a running `mpgpt serve`
child process: what they change is what the running server does next, and every change is audited."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from storage.db import Database
from storage.ledger import Ledger
from tests.fakes.llm import Script
from tests.ownerkit import ROOT, ask, assert_one_line_failure, mpgpt, ok, serving

ALICE = "o6_bmjrPTlm6_alice_x2501"
BOB = "o6_bmjrPTlm6_bob_xx2501"
ANSWER = "你好，我是测试模型。"


async def books(tmp_path: Path) -> Ledger:
    db = await Database(tmp_path / "mpgpt.db").open(migrate=False)
    return Ledger(db)


@pytest.mark.sqlite_file
async def test_credits_grant_and_deduct_go_through_the_ledger_while_the_server_charges_the_user(tmp_path, llm):
    async with serving(tmp_path, llm, quota={"trial_credits": 10, "daily_free": 0}) as (config, _, wechat):
        assert await ask(wechat, ALICE) == ANSWER  # the trial's 10, one spent
        granted = (await ok(config, "credits", "grant", "alice_x2501", "100", "--reason", "补偿故障", "--json")).json()
        assert granted["user"] == ALICE and granted["balance"] == 109

        # The owner's adjustments and the follower's questions interleave; nothing is lost or doubled.
        results = await asyncio.gather(
            *(ok(config, "credits", "grant", ALICE, "5", "--reason", f"round {i}") for i in range(3)),
            *(ask(wechat, ALICE, f"问题 {i}") for i in range(3)))
        assert results[3:] == [ANSWER] * 3
        deducted = (await ok(config, "credits", "deduct", ALICE, "20", "--reason", "误发", "--json")).json()
        assert deducted["balance"] == 109 + 15 - 3 - 20

        too_much = await mpgpt(config, "credits", "deduct", ALICE, "1000", "--reason", "清零")
        assert_one_line_failure(too_much, "cannot deduct 1000", f"the balance is {deducted['balance']}", code=1)

        ledger = await books(tmp_path)
        try:
            assert await ledger.check_invariant() == []
            account = await ledger.account(ALICE)
            assert account is not None and account.balance == deducted["balance"]
            admin = [e for e in await ledger.history(ALICE, limit=100) if e.kind == "admin"]
            assert sorted(e.amount for e in admin) == [-20, 5, 5, 5, 100]
            trail = {e["id"]: e for e in (await ok(config, "audit", "--target", ALICE, "--json")).json()}
            # Every admin row names the audit row that explains it, and only changes are audited.
            for e in admin:
                row = trail[int(e.ref.removeprefix("audit:"))]
                assert row["detail"]["amount"] == e.amount and row["action"].startswith("credits.")
            assert len(trail) == 5
            grant = next(r for r in trail.values() if r["reason"] == "补偿故障")
            assert grant["args"][:4] == ["credits", "grant", "alice_x2501", "100"] and "@" in grant["actor"]
        finally:
            await ledger.db.close()


async def test_freezing_and_the_whitelist_change_what_the_running_server_answers(tmp_path, llm):
    async with serving(tmp_path, llm, quota={"trial_credits": 1, "daily_free": 0}) as (config, _, wechat):
        assert await ask(wechat, ALICE) == ANSWER
        out_of_credits = await ask(wechat, ALICE)
        assert "余额不足" in out_of_credits

        added = await ok(config, "whitelist", "add", ALICE, "--note", "朋友", "--reason", "测试账号")
        assert ALICE in added.out and "whitelisted" in added.out
        assert await ask(wechat, ALICE) == ANSWER  # the whitelist skips credits
        listed = (await ok(config, "whitelist", "list", "--json")).json()
        assert [(w["openid"], w["note"]) for w in listed] == [(ALICE, "朋友")]

        frozen = (await ok(config, "users", "freeze", ALICE, "--reason", "滥用", "--json")).json()
        assert frozen["status"] == "frozen" and frozen["changed"]
        assert "暂停" in await ask(wechat, ALICE)
        again = (await ok(config, "users", "freeze", ALICE, "--json")).json()
        assert not again["changed"]
        await ok(config, "users", "unfreeze", ALICE)
        assert await ask(wechat, ALICE) == ANSWER

        await ok(config, "whitelist", "remove", ALICE)
        assert "余额不足" in await ask(wechat, ALICE)
        assert_one_line_failure(await mpgpt(config, "whitelist", "remove", ALICE), "not on the whitelist", code=1)

        actions = [r["action"] for r in (await ok(config, "audit", "--target", ALICE, "--json")).json()]
        assert actions == ["whitelist.remove", "users.unfreeze", "users.freeze", "users.freeze", "whitelist.add"]


async def test_users_list_filters_and_show_tells_the_owner_about_one_follower(tmp_path, llm):
    async with serving(tmp_path, llm) as (config, _, wechat):
        await ask(wechat, ALICE)
        await ask(wechat, BOB)
        await ok(config, "users", "freeze", BOB)
        everyone = (await ok(config, "users", "list", "--json")).json()
        assert {u["openid"] for u in everyone} == {ALICE, BOB}
        assert [u["openid"] for u in (await ok(config, "users", "list", "--frozen", "--json")).json()] == [BOB]
        assert (await ok(config, "users", "list", "--paying", "--json")).json() == []
        recent = (await ok(config, "users", "list", "--active-since", "1h", "--json")).json()
        assert len(recent) == 2
        assert (await ok(config, "users", "list", "--active-since", "2999-01-01", "--json")).json() == []
        table = (await ok(config, "users", "list")).out
        assert table.splitlines()[0].split()[:3] == ["USER", "STATUS", "TIER"] and BOB in table

        shown = (await ok(config, "users", "show", "alice_x2501", "--json")).json()
        assert shown["openid"] == ALICE and shown["usage"]["questions"] == 1
        assert {e["kind"] for e in shown["ledger"]} >= {"trial", "reserve", "settle"}
        assert shown["usage"]["models"][0]["model"] == "gpt-4o-mini"
        text = (await ok(config, "users", "show", ALICE)).out
        assert "ledger (newest first, every row)" in text and "usage by model" in text

        # The last characters of two openids alike: say so instead of picking one.
        assert_one_line_failure(await mpgpt(config, "users", "show", "2501"), "several users", code=1)


async def test_a_channel_disabled_and_enabled_by_the_owner_is_followed_by_the_running_server(tmp_path, llm):
    async with serving(tmp_path, llm) as (config, _, wechat):
        assert await ask(wechat, ALICE) == ANSWER
        await ok(config, "channels", "disable", "fake", "--reason", "余额用完")
        await asyncio.sleep(0.1)  # router.disabled_sync_interval is 0.05 s here
        served = len(llm.requests)
        assert await ask(wechat, ALICE, "还在吗") != ANSWER
        assert len(llm.requests) == served  # the disabled channel was not asked
        listed = (await ok(config, "channels", "list", "--json")).json()
        assert listed[0]["name"] == "fake" and listed[0]["state"] == "disabled: owner: 余额用完"
        assert listed[0]["attempts"] >= 1

        # The owner can try the disabled channel directly before enabling it again.
        probe = (await ok(config, "channels", "test", "fake", "--json")).json()
        assert probe["ok"] and probe["reply"] == ANSWER and probe["first_token_ms"] > 0
        await ok(config, "channels", "enable", "fake", "--reason", "已充值")
        await asyncio.sleep(0.1)
        assert await ask(wechat, ALICE, "现在呢") == ANSWER

        llm.queue(Script.unauthorized())
        failed = await mpgpt(config, "channels", "test", "fake")
        assert failed.code == 1 and "FAIL" in failed.out and "auth" in failed.out
        assert_one_line_failure(await mpgpt(config, "channels", "test", "nope"), "unknown channel 'nope'", code=1)
        assert_one_line_failure(await mpgpt(config, "channels", "disable", "fake"), "--reason", code=2)
        actions = [r["action"] for r in (await ok(config, "audit", "--target", "fake", "--json")).json()]
        assert actions == ["channels.enable", "channels.disable"]


async def test_words_test_shows_the_filters_verdict_and_reload_reaches_the_running_server(tmp_path, llm):
    words = tmp_path / "words.txt"
    words.write_text("违禁词\n", encoding="utf-8")
    dictionary = f'[[words.dictionaries]]\npath = "{words}"\n'
    async with serving(tmp_path, llm, dictionary, words={"reload_interval": 0.05}) as (config, _, wechat):
        verdict = (await ok(config, "words", "test", "这里有违 禁词吗", "--json")).json()
        assert verdict["question"] == "refused" and verdict["answer"] == "masked"
        assert verdict["hits"][0]["text"] == "违 禁词" and verdict["masked_answer"] == "这里有****吗"
        assert (await ok(config, "words", "test", "天气不错", "--json")).json()["hits"] == []
        assert "refused" in (await ok(config, "words", "test", "违禁词")).out

        # The file is rewritten in place with its size and time kept (as `cp -p` of a same-size file
        # does): nothing tells a running server it changed, until the owner reloads.
        before = os.stat(words)
        with open(words, "r+b") as f:
            f.write("新禁词\n".encode())
        os.utime(words, ns=(before.st_atime_ns, before.st_mtime_ns))
        await asyncio.sleep(0.1)
        assert await ask(wechat, ALICE, "说说新禁词") == ANSWER
        reloaded = (await ok(config, "words", "reload", "--reason", "新词表", "--json")).json()
        assert reloaded["words"] == 1
        await asyncio.sleep(0.1)
        assert "不适宜" in await ask(wechat, ALICE, "再说说新禁词")

        words.write_bytes(b"\xff\xfe broken")
        assert_one_line_failure(await mpgpt(config, "words", "reload"), "not UTF-8", code=2)


async def test_bad_arguments_end_in_one_line_and_a_non_zero_exit(tmp_path, llm):
    async with serving(tmp_path, llm) as (config, _, wechat):
        await ask(wechat, ALICE)
        cases = [
            (("users", "show", "nobody-at-all"), 1, "unknown user 'nobody-at-all'"),
            (("users", "frobnicate"), 2, "invalid choice"),
            (("users", "list", "--active-since", "yesterday"), 1, "neither a duration"),
            (("credits", "grant", ALICE, "-5", "--reason", "x"), 2, "must be greater than 0"),
            (("credits", "grant", ALICE, "lots", "--reason", "x"), 2, "not a whole number"),
            (("credits", "grant", ALICE, "5"), 2, "--reason"),
            (("credits", "grant", ALICE, "5", "--reason", "  "), 2, "reason cannot be empty"),
            (("credits", "grant", "nobody-at-all", "5", "--reason", "x"), 1, "unknown user"),
            (("orders", "show", "MP000000"), 1, "unknown order 'MP000000'"),
            (("orders", "refund", "MP000000", "--reason", "x"), 1, "unknown order"),
            (("orders", "refund", "MP000000", "--amount", "0", "--reason", "x"), 2, "greater than 0"),
            (("products", "add", "p1", "--name", "x", "--credits", "1", "--price-fen", "0"), 2, "greater than 0"),
            (("menu", "set", str(tmp_path / "absent.json")), 1, "no such file"),
            (("backup", "--out", str(tmp_path / "no" / "such" / "x.db")), 1, "no such folder"),
            (("backup",), 2, "--out"),
            (("prune", "--days", "0"), 2, "greater than 0"),
            (("channels", "enable", "nope"), 1, "unknown channel"),
            (("audit", "--limit", "-1"), 2, "greater than 0"),
        ]
        results = await asyncio.gather(*(mpgpt(config, *args) for args, _, _ in cases))
        for (args, code, needle), result in zip(cases, results):
            assert_one_line_failure(result, needle, code=code)
        assert (await ok(config, "audit", "--json")).json() == []  # nothing was changed


@pytest.mark.parametrize("args", [("users", "list"), ("credits", "grant"), ("orders", "refund"), ("doctor",),
                                  ("backup",), ("products", "add"), ("channels", "test"), ("menu", "set"),
                                  ("menu", "show"), ("menu", "delete")])
async def test_every_command_explains_itself_with_help(args):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.cli", *args, "--help", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0 and b"usage: mpgpt" in out and not err


async def test_channels_list_shows_a_breaker_the_running_server_opened(tmp_path, llm):
    async with serving(tmp_path, llm, router={"breaker_failures": 2, "breaker_cooldown": 60}) as (config, _, wechat):
        for _ in range(4):
            llm.queue(Script.server_error())
        for i in range(2):
            await ask(wechat, ALICE, f"问题{i}")
        listed = (await ok(config, "channels", "list", "--json")).json()
        shown = (await ok(config, "channels", "list")).out
    assert listed[0]["name"] == "fake" and listed[0]["state"] == "breaker open"
    assert "breaker open" in shown
