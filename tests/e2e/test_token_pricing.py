"""Token pricing as a follower meets it in WeChat: one reserve and one settle per answer, charged the exact
price of the provider's reported usage (or of what was delivered), never overdrawn."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from math import ceil

import pytest

from bot.economics.codes import hash_of, new_code
from bot.keys import DB, GENERATOR
from bot.providers.base import estimate_tokens
from storage.codes import CodeRepo
from storage.ledger import Ledger
from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, make_config, running

PROMPT, COMPLETION = Fraction("0.37"), Fraction("1.13")  # credits per 1,000 tokens


def price_milli(prompt_tokens: int, completion_tokens: int) -> int:
    """The rule the README states: exact, rounded up to the milli-credit once per answer."""
    return ceil(prompt_tokens * PROMPT + completion_tokens * COMPLETION)


@pytest.fixture
async def server(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, quota={"trial_credits": 10, "daily_free": 0},
                      rules={"rate_limit": 1000},
                      models={"gpt-4o-mini": {"prompt_price": 0.37, "completion_price": 1.13}})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx, app


async def rows(app, openid: str) -> list[tuple[str, str, int]]:
    got = await app[DB].fetchall(
        "SELECT kind, ref, (amount + daily_amount) * 1000 + amount_milli + daily_milli AS milli FROM ledger"
        " WHERE openid = ? AND kind IN ('reserve', 'settle', 'refund') ORDER BY id", (openid,))
    return [(r["kind"], r["ref"], r["milli"]) for r in got]


async def exact(app, openid: str) -> int:
    account = await Ledger(app[DB]).account(openid)
    assert account is not None
    return account.balance_exact + account.daily_exact


async def test_an_answer_is_charged_the_exact_price_of_the_reported_usage(server, llm):
    wx, app = server
    llm.queue(Script(text="按用量计费的回答。", prompt_tokens=1234, completion_tokens=567))
    d = await wx.send_text("o_tok", "问题")
    assert d.content == "按用量计费的回答。"
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    price = price_milli(1234, 567)  # 456.58 + 640.71 -> 1098 milli-credits
    assert price == 1098
    moved = await rows(app, "o_tok")
    # one reserve (the upper bound: the context budget and max_output_tokens, in whole credits), one settle
    assert [k for k, _, _ in moved] == ["reserve", "settle"] and moved[0][1] == moved[1][1]
    assert moved[0][2] == -4000 and moved[0][2] + moved[1][2] == -price
    assert await exact(app, "o_tok") == 10_000 - price
    reservation = await Ledger(app[DB]).reservation(moved[0][1])
    assert reservation is not None and (reservation.charged_milli, reservation.estimated) == (price, False)
    assert llm.requests[0].body["max_tokens"] == 2048  # the bound holds because the provider is told
    assert await Ledger(app[DB]).check_invariant() == []
    balance = await wx.send_text("o_tok", "余额")
    assert "余额：8.902 积分" in balance.content and "：1.098 积分" in balance.content
    assert "估算" not in balance.content
    models = await wx.send_text("o_tok", "模型")
    assert "每千 token 提问 0.37 积分、回答 1.13 积分" in models.content


async def test_a_redeemed_code_replies_with_the_exact_balance_after_a_token_priced_answer(server, llm):
    wx, app = server
    llm.queue(Script(text="按用量计费的回答。", prompt_tokens=1234, completion_tokens=567))
    await wx.send_text("o_gift", "问题")
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    gift = new_code()
    await CodeRepo(app[DB]).add_batch("gift", 20, [hash_of(gift)], None)  # type: ignore[list-item]
    reply = (await wx.send_text("o_gift", f"兑换 {gift}")).content
    # 10 - 1.098 + 20: the same figure 余额 shows, not the 28 whole credits a reservation may take
    assert "兑换成功" in reply and "当前可用 28.902 积分" in reply
    assert "余额：28.902 积分" in (await wx.send_text("o_gift", "余额")).content


async def test_a_dozen_answers_cost_exactly_the_sum_of_their_prices(server, llm):
    wx, app = server
    usages = [(17 + 97 * i, 3 + 131 * i) for i in range(12)]
    llm.queue(*(Script(text=f"第{i}个。", prompt_tokens=p, completion_tokens=c) for i, (p, c) in enumerate(usages)))
    assert await Ledger(app[DB]).apply("o_many", "topup", 100, "order-1")  # so a dozen answers fit
    for i in range(12):
        d = await wx.send_text("o_many", f"问题{i}")
        assert d.content == f"第{i}个。"
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    assert await exact(app, "o_many") == 100_000 + 10_000 - sum(price_milli(p, c) for p, c in usages)
    assert len(await rows(app, "o_many")) == 24
    assert await Ledger(app[DB]).check_invariant() == []


async def test_no_usage_reported_is_estimated_and_recorded_as_estimated(server, llm):
    wx, app = server
    llm.queue(Script(text="没有用量的回答。", usage="none"))
    d = await wx.send_text("o_est", "问题")
    assert d.content == "没有用量的回答。"
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    sent = llm.requests[0].messages
    prompt = sum(estimate_tokens(m["content"]) + 4 for m in sent)
    price = price_milli(prompt, estimate_tokens("没有用量的回答。"))
    moved = await rows(app, "o_est")
    assert [k for k, _, _ in moved] == ["reserve", "settle"] and moved[0][2] + moved[1][2] == -price
    reservation = await Ledger(app[DB]).reservation(moved[0][1])
    assert reservation is not None and reservation.estimated and reservation.charged_milli == price
    balance = await wx.send_text("o_est", "余额")
    assert "（估算）" in balance.content


async def test_an_answer_cut_short_is_charged_for_what_was_delivered(server, llm):
    wx, app = server
    text = "这是一个很长很长的回答，会在中途断掉，后面的部分用户永远看不到。"
    llm.queue(Script(text=text, chunk_chars=4, cut_after=3, prompt_tokens=50, completion_tokens=900))
    d = await wx.send_text("o_cut", "问题")
    await asyncio.wait_for(app[GENERATOR].idle(), 10)
    delivered = text[:12]
    assert d.status == 200
    stored = await app[DB].fetchone("SELECT text, status FROM answers WHERE openid = 'o_cut'")
    assert stored is not None and stored["status"] == "cut" and stored["text"].startswith(delivered)
    sent = llm.requests[0].messages
    prompt = sum(estimate_tokens(m["content"]) + 4 for m in sent)
    price = price_milli(prompt, estimate_tokens(delivered))
    assert price < price_milli(50, 900)
    moved = await rows(app, "o_cut")
    assert [k for k, _, _ in moved] == ["reserve", "settle"] and moved[0][2] + moved[1][2] == -price
    reservation = await Ledger(app[DB]).reservation(moved[0][1])
    assert reservation is not None and reservation.estimated


async def test_fifty_concurrent_questions_never_overdraw_one_account(server, llm):
    wx, app = server
    llm.default = Script(text="答案。", first_delay=0.2, prompt_tokens=1234, completion_tokens=567)
    replies = await asyncio.gather(*(wx.send_text("o_race", f"问题{i}") for i in range(50)))
    await asyncio.wait_for(app[GENERATOR].idle(), 15)
    refused = [d for d in replies if d.content and d.content.startswith("余额不足")]
    # 10 credits hold two 4-credit reservations at once; a settle gives credits back for a later one
    # (an answer slower than the window is owed, not refused: it still counts as asked)
    asked = 50 - len(refused)
    assert 2 <= asked < 50 and len(llm.requests) == asked
    settled = await app[DB].fetchone("SELECT COUNT(*) AS n FROM reservations WHERE openid = 'o_race'"
                                     " AND state = 'settled'")
    assert settled is not None and settled["n"] == asked
    assert await exact(app, "o_race") == 10_000 - asked * 1098 >= 0
    assert await Ledger(app[DB]).check_invariant() == []


async def test_the_page_shows_the_price_the_charge_and_one_history_line_per_answer(tmp_path, llm):
    from tests.companionkit import browser_session, serving, token_in
    from tests.e2e.test_webchat import read_events

    priced = {"models": {"gpt-4o-mini": {"prompt_price": 0.37, "completion_price": 1.13, "min_cost": 0.5}}}
    async with serving(tmp_path, llm.base_url, **priced) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as browser:
            code = token_in((await wx.send_text("o_page", "登录")).content)
            async with browser.post(f"{base}/api/login", json={"token": code}) as r:
                assert r.status == 200
            llm.queue(Script(text="网页上的回答。", prompt_tokens=1234, completion_tokens=567))
            async with browser.post(f"{base}/api/chat", json={"message": "你好"}) as r:
                events = await read_events(r)
            done = events[-1][1]
            assert (done["credits_charged"], done["estimated"], done["balance"]) == ("1.098", False, "11.902")
            async with browser.get(f"{base}/api/me") as r:
                me = await r.json()
            async with browser.get(f"{base}/api/models") as r:
                listed = await r.json()
            gift = new_code()
            await CodeRepo(app[DB]).add_batch("page", 5, [hash_of(gift)], None)  # type: ignore[list-item]
            async with browser.post(f"{base}/api/redeem", json={"code": gift}) as r:
                redeemed = await r.json()
    # the page shows what the reply says: the exact balance, fractions and all (not 16 whole credits)
    assert r.status == 200 and redeemed["balance"] == "16.902" and "当前可用 16.902 积分" in redeemed["message"]
    # today's 3 free credits paid first: 1.098 of them spent, the rest back where it came from
    assert (me["balance"], me["paid"], me["daily"]) == ("11.902", 10, "1.902")
    items = me["history"]["items"]
    assert [(i["kind"], i["credits"], i["model"]) for i in items[:1]] == [("reserve", "-1.098", "gpt-4o-mini")]
    assert "settle" not in {i["kind"] for i in items}
    assert listed["models"][0]["price"] == {"prompt": "0.37", "completion": "1.13", "min_cost": "0.5"}


@pytest.mark.sqlite_file
async def test_an_answer_closed_by_another_process_after_a_crash_is_charged_for_its_delivered_text(tmp_path, llm):
    import sqlite3

    from tests.harness import ServerProcess, config_data, free_port, write_toml

    config = write_toml(tmp_path / "config.toml", config_data(
        tmp_path, llm.base_url, quota={"trial_credits": 10, "daily_free": 0}))
    # as an owner writes it: TOML floats, kept as the decimals written
    config.write_text(config.read_text(encoding="utf-8")
                      + "\n[models.gpt-4o-mini]\nprompt_price = 0.37\ncompletion_price = 1.13\n", encoding="utf-8")
    llm.default = Script(text="第一句。第二句。" + "后面还有很多很多句。" * 30, chunk_chars=4, chunk_delay=0.1,
                         prompt_tokens=40, completion_tokens=2000)
    first = ServerProcess(config, free_port()).start()
    wx = FakeWeChat(f"{first.url}/wechat", TOKEN, APP_ID, window=0.6)
    try:
        d = await wx.send_text("o_crash", "问题")
        assert (d.content or "").startswith("第一句。")  # part of it reached the follower
        first.kill()  # a crash mid-answer: the other process must close it, charged for what it has
        second = ServerProcess(config, free_port()).start()
        try:
            db = sqlite3.connect(tmp_path / "mpgpt.db")
            for _ in range(100):
                await asyncio.sleep(0.1)
                state = db.execute("SELECT state FROM reservations").fetchone()
                if state and state[0] != "reserved":
                    break
            text, question = db.execute("SELECT text, question FROM answers").fetchone()
            spent, estimated = db.execute("SELECT spent_milli, estimated FROM reservations").fetchone()
            kinds = [k for (k,) in db.execute("SELECT kind FROM ledger WHERE kind IN ('reserve', 'settle', 'refund')")]
            db.close()
        finally:
            second.stop()
    finally:
        await wx.close()
    from bot.config import Config  # the system prompt the answer was asked with (the default)

    system = Config.model_fields["chat"].default_factory().system_prompt
    said = text.split("\n")[0] if "\n" in text else text
    prompt = estimate_tokens(system) + estimate_tokens(question) + 8
    assert kinds == ["reserve", "settle"] and estimated == 1
    assert spent == price_milli(prompt, estimate_tokens(said)) < price_milli(40, 2000)


async def test_after_a_top_up_the_page_shows_the_exact_balance_not_the_whole_credits(tmp_path, llm):
    from tests.companionkit import browser_session, serving, token_in
    from tests.e2e.test_webchat import read_events
    from tests.fakes.wechatpay import FakeWeChatPay, make_keys

    priced = {"models": {"gpt-4o-mini": {"prompt_price": 0.37, "completion_price": 1.13}}}
    async with FakeWeChatPay(make_keys()) as pay, serving(tmp_path, llm.base_url, pay, **priced) as (base, app):
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx, browser_session() as browser:
            code = token_in((await wx.send_text("o_buyer", "登录")).content)
            async with browser.post(f"{base}/api/login", json={"token": code}) as r:
                assert r.status == 200
            llm.queue(Script(text="网页上的回答。", prompt_tokens=1234, completion_tokens=567))
            async with browser.post(f"{base}/api/chat", json={"message": "你好"}) as r:
                await read_events(r)
            async with browser.post(f"{base}/api/orders", json={"product_id": "p6"}) as r:
                no = (await r.json())["out_trade_no"]
            assert await pay.pay(no) == 204
            async with browser.get(f"{base}/api/orders/{no}") as r:
                polled = await r.json()
    # 13 (trial and today's free credits) - 1.098 + 600: the page puts this figure in its balance card
    assert polled["paid"] and polled["balance"] == "611.902"
