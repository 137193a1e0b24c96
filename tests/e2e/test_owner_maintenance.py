"""`mpgpt backup`, `prune`, `menu set` and `doctor` as separate processes while `mpgpt serve` runs on the
same database, with the fakes of WeChat's API, WeChat Pay and the model provider on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from bot.config import load_config
from bot.pay.client import PayClient
from bot.pay.service import PayService
from storage.analytics import PageEvents, PageView
from storage.answers import AnswerRepo, Draft
from storage.db import Database
from storage.inbound import InboundRepo
from storage.ledger import Ledger, apply_entry
from storage.orders import OrderRepo
from storage.tokens import TokenRepo
from tests.fakes.llm import Script
from tests.fakes.wechat_api import FakeWeChatAPI
from tests.fakes.wechatpay import FakeWeChatPay, make_keys
from tests.harness import APP_ID, APP_SECRET, config_data, write_toml
from tests.ownerkit import ask, assert_one_line_failure, mpgpt, ok, serving
from tests.paykit import config_data as pay_config_data

ALICE = "o6_bmjrPTlm6_alice_b7001"
OLD = "o6_bmjrPTlm6_oldie_b7002"
ANSWER = "你好，我是测试模型。"
DAY = 86400.0


async def seed_history(db: Database, openid: str, when: float, n: int, text: str = "旧的对话内容") -> None:
    """What the chat path leaves behind for `n` questions asked at `when`: inbound rows, finished
    answers, conversation turns."""
    inbound, answers = InboundRepo(db), AnswerRepo(db)
    for i in range(n):
        key = f"{openid}:{when}:{i}"
        await inbound.receive(key, openid, "text", when)
        new = await answers.create(Draft(openid=openid, msg_key=key, question=text, model="gpt-4o-mini", route="reply",
                                         now=when, deadline_at=when + 60, holder="seed",
                                         # held until finished: a server's recovery must not take it over meanwhile
                                         lease_until=time.time() + 600,
                                         asked_before=when, idle=1800, max_turns=10))
        await answers.finish(new.answer.id, "seed", "done", text * 20, when, (text, text * 20))


@pytest.mark.sqlite_file
async def test_a_backup_taken_while_the_server_works_restores_to_a_database_whose_books_balance(tmp_path, llm):
    # Enough history that the copy takes several steps (a progress bar worth the name).
    db = await Database(tmp_path / "mpgpt.db").open()
    await seed_history(db, OLD, time.time() - 3 * DAY, 300, "一段较长的历史对话内容" * 10)
    await db.close()
    async with serving(tmp_path, llm) as (config, _, wechat):
        assert await ask(wechat, ALICE) == ANSWER
        out = tmp_path / "backups" / "mpgpt-copy.db"
        out.parent.mkdir()
        backup, *answers = await asyncio.gather(
            mpgpt(config, "backup", "--out", str(out)),
            *(ask(wechat, ALICE, f"备份时的问题 {i}") for i in range(4)),
            ok(config, "credits", "grant", ALICE, "50", "--reason", "备份时发放"))
        assert backup.code == 0, backup.err
        assert answers[:4] == [ANSWER] * 4
        assert "100%" in backup.err and "pages" in backup.err  # the progress bar
        report = {line.split()[0]: line for line in backup.out.splitlines()}
        assert report["integrity"].endswith(" ok") and "balances match the ledger" in report["ledger"]

        again = await mpgpt(config, "backup", "--out", str(out))
        assert_one_line_failure(again, "exists (use --force", code=1)
        forced = (await ok(config, "backup", "--out", str(out), "--force", "--json")).json()
        assert forced["ok"] and forced["integrity"] == "ok" and forced["ledger_mismatches"] == 0
        assert forced["pages"] > 256 and not Path(str(out) + ".partial").exists()
        live = await Database(tmp_path / "mpgpt.db").open(migrate=False)
        live_balance = (await Ledger(live).account(ALICE)).balance
        await live.close()

    # Restore: the copy in place of a lost database, with a server and the commands on it.
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    shutil.copy(out, restored_dir / "mpgpt.db")
    restored = await Database(restored_dir / "mpgpt.db").open()
    try:
        ledger = Ledger(restored)
        assert await ledger.check_invariant() == []
        assert (await ledger.account(ALICE)).balance == live_balance
    finally:
        await restored.close()
    async with serving(restored_dir, llm) as (config, _, wechat):
        assert await ask(wechat, ALICE, "恢复以后") == ANSWER
        shown = (await ok(config, "users", "show", ALICE, "--json")).json()
        assert shown["balance"] == live_balance - 1 and shown["usage"]["questions"] == 6


@pytest.mark.sqlite_file
async def test_prune_deletes_old_messages_and_keeps_recent_ones_and_the_books(tmp_path, llm):
    async with serving(tmp_path, llm, storage={"retention_days": 30}, analytics={"retention_days": 20}) as (
            config, _, wechat):
        assert await ask(wechat, ALICE) == ANSWER
        db = await Database(tmp_path / "mpgpt.db").open(migrate=False)
        try:
            await seed_history(db, OLD, time.time() - 40 * DAY, 3)
            await seed_history(db, OLD, time.time() - 10 * DAY, 2)
            await PageEvents(db).write([PageView(f"v{i}", "visitor", "/", "", "127.0.0.1", 390, 844, when)
                                        for i, when in enumerate((time.time() - 25 * DAY, time.time()))])
            dry = (await ok(config, "prune", "--dry-run", "--json")).json()
            assert (dry["inbound"], dry["answers"], dry["turns"], dry["conversations"]) == (3, 3, 6, 1)

            pruned = (await ok(config, "prune", "--json")).json()
            assert (pruned["inbound"], pruned["answers"], pruned["turns"], pruned["conversations"]) == (3, 3, 6, 1)
            assert pruned["page_events"] == 1  # [analytics] retention_days: its own 20 days
            left = await db.fetchall("SELECT openid, COUNT(*) AS n FROM answers GROUP BY openid ORDER BY openid")
            assert [(r["openid"], r["n"]) for r in left] == [(ALICE, 1), (OLD, 2)]
            assert await Ledger(db).check_invariant() == []
            assert (await ok(config, "prune", "--days", "5", "--json")).json()["answers"] == 2
            [audit, _] = (await ok(config, "audit", "--action", "prune", "--json")).json()
            assert audit["detail"]["days"] == 5 and audit["detail"]["answers"] == 2
        finally:
            await db.close()
        assert await ask(wechat, ALICE, "还记得吗") == ANSWER  # recent conversation untouched
        assert await ask(wechat, OLD, "我回来了") == ANSWER


@pytest.mark.sqlite_file
async def test_menu_set_sends_a_checked_menu_with_the_shared_token_and_refuses_a_bad_file(tmp_path, llm):
    menu = {"button": [{"type": "click", "name": "余额", "key": "BALANCE"},
                       {"name": "更多", "sub_button": [{"type": "view", "name": "充值", "url": "https://example.com/"},
                                                      {"type": "click", "name": "帮助", "key": "HELP"}]}]}
    good = tmp_path / "menu.json"
    good.write_text(json.dumps(menu, ensure_ascii=False), encoding="utf-8")
    async with FakeWeChatAPI(APP_ID, APP_SECRET) as api:
        async with serving(tmp_path, llm, wechat={"api_base": api.base_url}) as (config, _, _):
            done = await ok(config, "menu", "set", str(good), "--reason", "新菜单")
            assert "余额 | 更多" in done.out and api.menus == [menu]
            db = await Database(tmp_path / "mpgpt.db").open(migrate=False)
            stored = await TokenRepo(db).get(APP_ID)
            await db.close()
            assert stored is not None and stored[0] == api.access_token  # shared with the servers
            await ok(config, "menu", "set", str(good))
            assert api.token_calls == 1 and len(api.menus) == 2

            api.invalidate_token()  # someone called /cgi-bin/token elsewhere: refreshed once, then sent
            await ok(config, "menu", "set", str(good))
            assert api.force_refresh_calls == 1 and len(api.menus) == 3

            bad = {
                "four.json": {"button": [{"type": "click", "name": f"b{i}", "key": "K"} for i in range(4)]},
                "long.json": {"button": [{"type": "click", "name": "这个按钮的名字太长了", "key": "K"}]},
                "nourl.json": {"button": [{"type": "view", "name": "充值"}]},
                "shape.json": [1, 2, 3],
            }
            needles = {"four.json": "1-3 buttons", "long.json": "at most 16", "nourl.json": "needs 'url'",
                       "shape.json": '"button" list'}
            for name, content in bad.items():
                (tmp_path / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
                assert_one_line_failure(await mpgpt(config, "menu", "set", str(tmp_path / name)), needles[name],
                                        code=1)
            (tmp_path / "broken.json").write_text("{ not json", encoding="utf-8")
            assert_one_line_failure(await mpgpt(config, "menu", "set", str(tmp_path / "broken.json")),
                                    "not valid JSON", code=1)
            assert len(api.menus) == 3
            trail = (await ok(config, "audit", "--action", "menu", "--json")).json()
            assert len(trail) == 3 and trail[-1]["detail"]["menu"] == menu and trail[-1]["reason"] == "新菜单"

            # what WeChat has now, in the format `menu set` takes; then gone
            shown = (await ok(config, "menu", "show", "--json")).json()
            listed = (await ok(config, "menu", "show")).out
            assert shown == menu
            assert "余额  (click: BALANCE)" in listed and "  - 充值  (view: https://example.com/)" in listed
            assert "deleted" in (await ok(config, "menu", "delete", "--reason", "换季")).out
            assert api.menus == []
            assert "no custom menu" in (await ok(config, "menu", "show")).out
            trail = (await ok(config, "audit", "--action", "menu.delete", "--json")).json()
            assert len(trail) == 1 and trail[0]["reason"] == "换季"


async def create_order(config: Path, tmp_path: Path) -> str:
    """An order made the way a server makes one (its pay service, on this database)."""
    cfg = load_config(config)
    db = await Database(tmp_path / "mpgpt.db").open(migrate=False)
    try:
        async with PayClient.from_config(cfg) as client:
            service = PayService(cfg.pay, cfg.products, OrderRepo(db, apply_entry), client)
            return (await service.create_order(ALICE, "p6", "native")).order.out_trade_no
    finally:
        await db.close()


@pytest.mark.sqlite_file
async def test_doctor_passes_when_everything_answers_and_names_each_failure(tmp_path, llm):
    async with FakeWeChatAPI(APP_ID, APP_SECRET) as api, FakeWeChatPay(make_keys()) as pay:
        pay_data = pay_config_data(tmp_path, pay)
        async with serving(tmp_path, llm, wechat={"api_base": api.base_url}, pay=pay_data["pay"],
                           products=pay_data["products"]) as (config, _, wechat):
            assert await ask(wechat, ALICE) == ANSWER
            fresh = {c["name"]: c for c in (await ok(config, "doctor", "--json")).json()}
            assert {name: c["result"] for name, c in fresh.items()} == {
                "config": "pass", "placeholders": "pass", "database": "pass", "schema": "pass", "ledger": "pass", "wechat": "pass",
                "pay": "pass", "channel fake": "pass"}
            assert "no order yet" in fresh["pay"]["detail"]
            assert api.token_calls == 1 and api.force_refresh_calls == 0
            assert pay.count("/v3/pay/transactions/out-trade-no/DOCTOR") == 1

            # With an order to ask about, WeChat Pay's signed answer is verified too.
            no = await create_order(config, tmp_path)
            healthy = await ok(config, "doctor")
            assert f"order {no} queried, the signed answer verified" in healthy.out

            api.secret = "rotated-in-the-console"
            llm.queue(Script.unauthorized())
            pay.forge_answers = True
            # A hand edit of a balance (the ledger is append-only, accounts are not).
            with sqlite3.connect(tmp_path / "mpgpt.db") as raw:
                raw.execute("UPDATE accounts SET balance = balance + 5 WHERE openid = ?", (ALICE,))
            raw.close()
            sick = await mpgpt(config, "doctor")
            assert sick.code == 1
            lines = {line.split()[0] + (" " + line.split()[1] if line.startswith("channel") else ""): line
                     for line in sick.out.splitlines()[2:]}
            assert "FAIL" in lines["wechat"] and "40125" in lines["wechat"]
            assert "FAIL" in lines["channel fake"] and "auth" in lines["channel fake"]
            assert "FAIL" in lines["pay"] and "signature" in lines["pay"]
            assert "FAIL" in lines["ledger"] and "1 mismatch:" in lines["ledger"]
            assert "pass" in lines["config"] and "pass" in lines["schema"]


@pytest.mark.sqlite_file
async def test_doctor_reports_a_config_it_cannot_load_and_an_old_schema(tmp_path, llm):
    broken = tmp_path / "broken.toml"
    broken.write_text("[wechat]\nmode = \"aggressive\"\n", encoding="utf-8")
    result = await mpgpt(broken, "doctor", "--json")
    assert result.code == 1 and result.json() == [{"name": "config", "result": "fail",
                                                   "detail": result.json()[0]["detail"]}]
    assert "wechat" in result.json()[0]["detail"]

    # WeChat's API is out of reach here: the check fails at once instead of waiting for a timeout.
    path = write_toml(tmp_path / "mpgpt.toml", config_data(tmp_path, llm.base_url,
                                                           wechat={"api_base": "http://127.0.0.1:9"}))
    await ok(path, "migrate")
    with sqlite3.connect(tmp_path / "mpgpt.db") as raw:
        raw.execute("DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations)")
    raw.close()
    old = await mpgpt(path, "doctor", "--json")
    schema = next(c for c in old.json() if c["name"] == "schema")
    assert old.code == 1 and schema["result"] == "fail" and "run `mpgpt migrate`" in schema["detail"]
    assert_one_line_failure(await mpgpt(path, "users", "list"), "run `mpgpt migrate`", code=1)
    assert_one_line_failure(await mpgpt(tmp_path / "absent.toml", "users", "list"), "cannot read config file",
                            code=2)
