"""The rule chain on a real SQLite file: each refusal with its own code and reply, never charged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.config import Config, config_from_dict
from bot.rules import base
from bot.rules.base import Pass, Refusal
from bot.rules.chain import answer_check, build_chain, word_filter
from storage.accounts import Accounts
from storage.answers import Draft
from storage.db import Database
from storage.inbound import InboundRepo
from storage.ledger import Ledger

ALICE = "oAlice0000000000000000000001"
# 2024-05-01 23:59:00 in Asia/Shanghai (15:59 UTC).
BEFORE_MIDNIGHT = 1714579140.0


class Clock:
    def __init__(self, t: float = BEFORE_MIDNIGHT) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_config(tmp_path: Path, **sections: Any) -> Config:
    (tmp_path / "block.txt").write_text("大麻\n赌博\n", encoding="utf-8")
    (tmp_path / "mask.txt").write_text("笨蛋\n", encoding="utf-8")
    data: dict[str, Any] = {
        "server": {"public_url": "https://mp.example.com/"},
        "wechat": {"token": "t"},
        "channels": [{"name": "c", "provider": "openai", "api_key": "k", "models": ["gpt-4o-mini", "gpt-4o"]}],
        "models": {"gpt-4o": {"cost": 5, "aliases": ["4o"]}},
        "quota": {"trial_credits": 10, "daily_free": 0},
        "rules": {"tier_models": {"free": ["gpt-4o-mini"], "pro": ["gpt-4o-mini", "4o"]}},
        "words": {"dictionaries": [{"path": "block.txt", "name": "banned"},
                                   {"path": "mask.txt", "action": "mask", "name": "rude"}],
                  "exceptions": ["大麻烦"]},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data, base_dir=str(tmp_path))


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def ask(chain, text: str = "你好", model: str = "gpt-4o-mini", key: str = "m1", cost: int | None = 1,
              openid: str = ALICE) -> Pass | Refusal:
    return await chain.check(openid, model, text, gen_key=key, cost=cost)


async def test_a_plain_question_passes_and_reserves_its_cost(tmp_path, db, clock):
    chain = build_chain(make_config(tmp_path), db, word_filter(make_config(tmp_path)), clock)
    verdict = await ask(chain, cost=3)
    assert isinstance(verdict, Pass) and verdict.reserved and verdict.text == "你好"
    assert await Ledger(db).balance(ALICE) == 7
    assert await Ledger(db).settle("m1")


async def test_a_frozen_user_is_refused_with_its_own_code_and_reply_and_not_charged(tmp_path, db, clock):
    cfg = make_config(tmp_path)
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    await Accounts(db).freeze(ALICE)
    verdict = await ask(chain)
    assert verdict == Refusal(base.FROZEN, cfg.rules.texts.frozen)
    assert await Ledger(db).balance(ALICE) == 10


async def test_a_model_outside_the_tiers_allow_list_is_refused_with_its_own_code_and_reply(tmp_path, db, clock):
    cfg = make_config(tmp_path)
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    verdict = await ask(chain, model="gpt-4o", cost=5)
    assert isinstance(verdict, Refusal) and verdict.code == base.MODEL_NOT_ALLOWED
    assert verdict.text == "你当前的账号等级不能使用模型 gpt-4o，请换用其他模型。"
    await Accounts(db).set_tier(ALICE, "pro")
    assert isinstance(await ask(chain, model="gpt-4o", cost=5, key="m2"), Pass)  # allowed by its alias
    assert await Ledger(db).balance(ALICE) == 5


async def test_an_unknown_model_is_refused_never_free_even_for_whitelisted_users(tmp_path, db, clock):
    cfg = make_config(tmp_path, rules={"tier_models": {}})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    await Accounts(db).whitelist_add(ALICE)
    verdict = await ask(chain, model="mystery", cost=None)
    assert isinstance(verdict, Refusal) and verdict.code == base.MODEL_UNKNOWN and "mystery" in verdict.text
    # Without the models rule the credits rule still refuses an unknown model for others.
    cfg = make_config(tmp_path, rules={"order": ["status", "credits"]})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    verdict = await ask(chain, model="mystery", cost=None, openid="oBob")
    assert isinstance(verdict, Refusal) and verdict.code == base.MODEL_UNKNOWN


async def test_the_seventh_question_in_a_minute_is_refused_with_its_own_code_and_reply(tmp_path, db, clock):
    cfg = make_config(tmp_path)
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    verdicts = [await ask(chain, key=f"m{i}") for i in range(7)]
    assert all(isinstance(v, Pass) for v in verdicts[:6])
    assert verdicts[6] == Refusal(base.RATE_LIMITED, cfg.rules.texts.rate_limited)
    assert await Ledger(db).balance(ALICE) == 4  # six charged, the refused one not
    clock.t += 61
    assert isinstance(await ask(chain, key="m7"), Pass)


async def test_the_rate_limit_is_shared_by_two_processes(tmp_path, clock, open_database):
    cfg = make_config(tmp_path, rules={"rate_limit": 3})
    async with open_database() as one, open_database() as two:
        words = word_filter(cfg)
        a, b = build_chain(cfg, one, words, clock), build_chain(cfg, two, words, clock)
        verdicts = await asyncio.gather(*(ask(c, key=f"m{i}-{n}") for i in range(3) for n, c in enumerate((a, b))))
        codes = [v.code if isinstance(v, Refusal) else "pass" for v in verdicts]
        assert codes.count("pass") == 3 and codes.count(base.RATE_LIMITED) == 3


async def test_whitelisted_users_skip_the_rate_limit_and_credits(tmp_path, db, clock):
    cfg = make_config(tmp_path, quota={"trial_credits": 0})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    await Accounts(db).whitelist_add(ALICE, "owner")
    verdicts = [await ask(chain, key=f"m{i}") for i in range(10)]
    assert all(isinstance(v, Pass) and v.whitelisted and not v.reserved for v in verdicts)
    assert await Ledger(db).balance(ALICE) == 0


async def counts(db: Database) -> tuple[int, int]:
    """(rate events, reservations) stored for ALICE."""
    events = await db.fetchall("SELECT COUNT(*) AS n FROM rate_events WHERE openid = ?", (ALICE,))
    held = await db.fetchall("SELECT COUNT(*) AS n FROM reservations WHERE openid = ?", (ALICE,))
    return int(events[0]["n"]), int(held[0]["n"])


def code(verdict: Pass | Refusal) -> str:
    return verdict.code if isinstance(verdict, Refusal) else "pass"


async def test_what_later_rules_refuse_is_counted_and_the_rate_limit_refuses_first(tmp_path, db, clock):
    # The count and the reservation are one transaction (bot/rules/counted.py), with the rules
    # between run first; the replies, the counts and the log are still those of the configured order.
    cfg = make_config(tmp_path, rules={"rate_limit": 3}, quota={"trial_credits": 1})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    with capture_logs() as logs:
        verdicts = [await ask(chain, text="赌博", key="m0"), await ask(chain, cost=5, key="m1"),
                    await ask(chain, key="m2"), await ask(chain, text="赌博", key="m3"),
                    await ask(chain, cost=5, key="m4"), await ask(chain, model="mystery", cost=None, key="m5")]
    assert [code(v) for v in verdicts] == [base.SENSITIVE_QUESTION, base.NO_CREDITS, "pass",
                                           base.RATE_LIMITED, base.RATE_LIMITED, base.RATE_LIMITED]
    assert [e["rule"] for e in logs if e["event"] == "rules.refused"] == [
        "words", "credits", "ratelimit", "ratelimit", "ratelimit"]
    assert await counts(db) == (3, 1)  # the three before the limit counted; one reservation
    assert await Ledger(db).balance(ALICE) == 0
    clock.t += 61
    assert code(await ask(chain, model="mystery", cost=None, key="m6")) == base.MODEL_UNKNOWN
    assert code(await ask(chain, key="m7")) == base.NO_CREDITS
    assert await counts(db) == (2, 1)  # the expired three pruned; the new two counted


async def test_a_whitelist_between_the_rate_limit_and_credits_is_counted_but_not_charged(tmp_path, db, clock):
    cfg = make_config(tmp_path, rules={"order": ["ratelimit", "whitelist", "credits"], "rate_limit": 2})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    await Accounts(db).whitelist_add(ALICE, "owner")
    verdicts = [await ask(chain, key=f"m{i}") for i in range(3)]
    assert [code(v) for v in verdicts] == ["pass", "pass", base.RATE_LIMITED]
    assert all(not v.reserved for v in verdicts[:2])
    assert await counts(db) == (2, 0) and await Ledger(db).balance(ALICE) == 10


async def test_both_limits_hold_at_once_for_questions_from_two_processes(tmp_path, clock, open_database):
    # Released together against the same account: the rate limit lets 6 on, the credits pay for 4.
    cfg = make_config(tmp_path, rules={"rate_limit": 6}, quota={"trial_credits": 4})
    async with open_database() as one, open_database() as two:
        words = word_filter(cfg)
        chains = build_chain(cfg, one, words, clock), build_chain(cfg, two, words, clock)
        await chains[0].wallet.open_day(ALICE, await chains[0].wallet.standing.of(ALICE))
        verdicts = await asyncio.gather(*(ask(chains[i % 2], key=f"m{i}") for i in range(24)))
        assert sorted(code(v) for v in verdicts) == sorted(
            ["pass"] * 4 + [base.NO_CREDITS] * 2 + [base.RATE_LIMITED] * 18)
        assert await counts(one) == (6, 4)
        ledger = Ledger(one)
        assert await ledger.balance(ALICE) == 0 and await ledger.check_invariant() == []


def drafted(text: str, model: str, key: str) -> Draft:
    """The answer a WeChat question asks the chain to create with its reservation."""
    return Draft(openid=ALICE, msg_key=key, question=text, model=model, route="reply", now=BEFORE_MIDNIGHT,
                 deadline_at=BEFORE_MIDNIGHT + 60, holder="h", lease_until=BEFORE_MIDNIGHT + 30,
                 asked_before=BEFORE_MIDNIGHT - 60, idle=600, max_turns=4)


async def test_answers_are_created_with_their_reservations_for_exactly_the_questions_let_on(
        tmp_path, clock, open_database):
    # The two limits of the test above, each question carrying its answer to create: an answer
    # exists for a question if and only if the rules let it on and its credits are held.
    cfg = make_config(tmp_path, rules={"rate_limit": 6}, quota={"trial_credits": 4})
    async with open_database() as one, open_database() as two:
        words = word_filter(cfg)
        chains = build_chain(cfg, one, words, clock), build_chain(cfg, two, words, clock)
        await chains[0].wallet.open_day(ALICE, await chains[0].wallet.standing.of(ALICE))
        for i in range(24):  # each question's message, as the WeChat path records it first
            await InboundRepo(one).receive(f"m{i}", ALICE, "text", BEFORE_MIDNIGHT)

        async def asked(i: int) -> Pass | Refusal:
            return await chains[i % 2].check(ALICE, "gpt-4o-mini", "我是不是个笨 蛋？", gen_key=f"m{i}", cost=1,
                                             then=lambda text, model, key=f"m{i}": drafted(text, model, key))

        verdicts = await asyncio.gather(*(asked(i) for i in range(24)))
        let_on = {f"m{i}": v for i, v in enumerate(verdicts) if isinstance(v, Pass)}
        assert len(let_on) == 4 and all(v.reserved and v.started and v.started.created for v in let_on.values())
        stored = await one.fetchall("SELECT msg_key, question, model FROM answers WHERE openid = ?", (ALICE,))
        assert {r["msg_key"] for r in stored} == set(let_on) == {v.started.answer.msg_key for v in let_on.values()}
        # the answer holds the question as the model sees it (masked by a rule between), and the model
        assert {(r["question"], r["model"]) for r in stored} == {("我是不是个***？", "gpt-4o-mini")}
        held = await one.fetchall("SELECT gen_key FROM reservations WHERE openid = ?", (ALICE,))
        assert {r["gen_key"] for r in held} == set(let_on)

        # asked again with a key that holds credits already (a retry after a crash): the answer
        # made the first time, nothing charged twice
        clock.t += cfg.rules.rate_window + 1  # past the rate limit's window
        key = next(iter(let_on))
        again = await asked(int(key[1:]))
        assert isinstance(again, Pass) and again.started is not None and not again.started.created
        assert again.started.answer.id == let_on[key].started.answer.id
        assert await Ledger(one).balance(ALICE) == 0 and await Ledger(one).check_invariant() == []


async def test_without_the_rate_limit_and_credits_together_the_caller_creates_the_answer(tmp_path, db, clock):
    # A whitelisted sender holds no credits: the chain creates nothing, the caller does after it.
    cfg = make_config(tmp_path)
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    await Accounts(db).whitelist_add(ALICE, "owner")
    await InboundRepo(db).receive("w1", ALICE, "text", BEFORE_MIDNIGHT)
    verdict = await chain.check(ALICE, "gpt-4o-mini", "你好", gen_key="w1", cost=1,
                                then=lambda text, model: drafted(text, model, "w1"))
    assert isinstance(verdict, Pass) and verdict.started is None and not verdict.reserved
    assert await db.lookup("SELECT 1 FROM answers WHERE msg_key = 'w1'") is None


async def test_a_question_with_a_blocked_word_is_refused_and_the_log_names_the_dictionary_not_the_text(
        tmp_path, db, clock):
    cfg = make_config(tmp_path)
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    with capture_logs() as logs:
        verdict = await ask(chain, text="哪里能买到大 麻？")
    assert verdict == Refusal(base.SENSITIVE_QUESTION, cfg.rules.texts.sensitive_question)
    assert await Ledger(db).balance(ALICE) == 10
    hit = next(e for e in logs if e["event"] == "words.question_hit")
    assert hit["dictionaries"] == ("banned",)
    assert all("麻" not in str(v) for e in logs for v in e.values())
    assert isinstance(await ask(chain, text="这真是个大麻烦", key="m2"), Pass)


async def test_mask_list_words_are_starred_out_before_the_model_sees_the_question(tmp_path, db, clock):
    cfg = make_config(tmp_path)
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    verdict = await ask(chain, text="我是不是个笨 蛋？")
    assert isinstance(verdict, Pass) and verdict.text == "我是不是个***？"


async def test_the_credits_refusal_tells_the_balance_and_where_to_top_up(tmp_path, db, clock):
    cfg = make_config(tmp_path, quota={"trial_credits": 3})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    verdict = await ask(chain, cost=5)
    assert isinstance(verdict, Refusal) and verdict.code == base.NO_CREDITS
    assert verdict.text == "余额不足：本次提问需要 5 积分，你还有 3 积分。充值请打开：https://mp.example.com/"
    assert await Ledger(db).balance(ALICE) == 3


async def test_fifty_concurrent_questions_with_ten_credits_pass_exactly_ten(tmp_path, db, clock):
    cfg = make_config(tmp_path, rules={"rate_limit": 1000})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    verdicts = await asyncio.gather(*(ask(chain, key=f"m{i}") for i in range(50)))
    assert sum(isinstance(v, Pass) for v in verdicts) == 10
    assert {v.code for v in verdicts if isinstance(v, Refusal)} == {base.NO_CREDITS}
    ledger = Ledger(db)
    assert await ledger.balance(ALICE) == 0 and await ledger.check_invariant() == []


async def test_daily_free_credits_come_with_the_first_question_of_each_shanghai_day(tmp_path, db, clock):
    cfg = make_config(tmp_path, quota={"trial_credits": 0, "daily_free": 2})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    assert isinstance(await ask(chain, key="a"), Pass)
    assert isinstance(await ask(chain, key="b"), Pass)
    assert (await ask(chain, key="c")).code == base.NO_CREDITS
    clock.t += 120  # 00:01 the next day in Shanghai, still 16:01 the same day in UTC
    assert isinstance(await ask(chain, key="d", cost=2), Pass)
    account = await Ledger(db).account(ALICE)
    assert account.daily_day == "2024-05-02" and account.spendable == 0


async def test_the_balance_reply_shows_balance_todays_free_credits_and_the_top_up_link(tmp_path, db, clock):
    cfg = make_config(tmp_path, quota={"daily_free": 3})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    assert await chain.wallet.balance_text(ALICE) == (
        "余额：13 积分\n其中今日免费：3（每天 3，当天有效）\n充值请打开：https://mp.example.com/")
    cfg = make_config(tmp_path, server={"public_url": ""})
    chain = build_chain(cfg, db, word_filter(cfg), clock)
    # without a public address there is no link, but still what to do
    assert await chain.wallet.balance_text("oBob") == (
        "余额：10 积分\n需要更多积分：打开公众号菜单里的网页充值，或发送「兑换 兑换码」使用兑换码。")


async def test_the_answer_check_masks_or_withholds_before_delivery(tmp_path):
    cfg = make_config(tmp_path)
    check = answer_check(cfg, word_filter(cfg))
    reviewed = await check.review("笨蛋才去赌 博。")
    assert (reviewed.text, reviewed.withheld) == ("**才去***。", False)
    clean = await check.review("没什么问题。")
    assert (clean.text, clean.upto, clean.withheld) == ("没什么问题。", 6, False)
    growing = await check.review("你好，大麻", final=False)
    assert growing.text[:growing.upto] == "你好，"
    cfg = make_config(tmp_path, words={"answer_action": "withhold"})
    check = answer_check(cfg, word_filter(cfg))
    withheld = await check.review("可以去赌博。")
    assert withheld.withheld and withheld.text == cfg.rules.texts.answer_withheld
    assert (await check.review("你这个笨蛋")).text == "你这个**"  # mask lists are masked, never withheld
