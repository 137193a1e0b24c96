"""Redemption codes end to end: the owner makes them with `mpgpt codes`, followers redeem them in WeChat
(two server processes on one database) and on the companion page."""

from __future__ import annotations

import asyncio
import csv
import stat

import aiohttp
import pytest

from tests.companionkit import browser_session, token_in
from tests.companionkit import serving as serving_page
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, ServerProcess, config_data, free_port, write_toml
from tests.ownerkit import assert_one_line_failure, ask, mpgpt, ok, serving
from web_companion.routes import COMPANION


def _codes(path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.sqlite_file
async def test_the_owner_makes_codes_a_follower_redeems_one_and_the_owner_sees_it(tmp_path, llm):
    out = tmp_path / "codes.csv"
    async with serving(tmp_path, llm, quota={"trial_credits": 0, "daily_free": 0}) as (config, _, wechat):
        r = await ok(config, "codes", "create", "--credits", "30", "--count", "3", "--expires", "30d",
                     "--batch", "fair-2026", "--out", str(out), "--json")
        assert r.json()["count"] == 3
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        rows = _codes(out)
        assert [(x["batch"], x["credits"]) for x in rows] == [("fair-2026", "30")] * 3
        code = rows[0]["code"]
        # typed carelessly: lower case, spaces for dashes
        reply = await ask(wechat, "o_fair", "兑换 " + code.lower().replace("-", " "))
        assert "兑换成功" in reply and "30" in reply
        assert "你已经兑换过了" in await ask(wechat, "o_fair", f"兑换 {code}")
        assert "已经被使用过了" in await ask(wechat, "o_other", f"兑换 {code}")
        assert "兑换码不正确" in await ask(wechat, "o_other", "兑换 AAAAA-BBBBB-CCCCC-DDDDD")
        assert "30" in await ask(wechat, "o_fair", "余额")

        shown = (await ok(config, "codes", "show", code, "--json")).json()
        assert (shown["state"], shown["redeemed_by"], shown["credits"]) == ("redeemed", "o_fair", 30)
        [batch] = (await ok(config, "codes", "list", "--json")).json()
        assert (batch["batch"], batch["total"], batch["redeemed"], batch["open"]) == ("fair-2026", 3, 1, 2)
        assert "o_fair" in (await ok(config, "codes", "show", "fair-2026")).out

        assert (await ok(config, "codes", "disable", rows[1]["code"], "--json")).json()["disabled"] == 1
        assert "已失效" in await ask(wechat, "o_other", f"兑换 {rows[1]['code']}")
        assert (await ok(config, "codes", "disable", "--batch", "fair-2026", "--json")).json()["disabled"] == 1
        assert "已失效" in await ask(wechat, "o_other", f"兑换 {rows[2]['code']}")
        audit = (await ok(config, "audit", "--json")).json()
        assert {"codes.create", "codes.disable"} <= {a["action"] for a in audit}
        # the database holds no code, only hashes
        assert code.encode() not in (tmp_path / "mpgpt.db").read_bytes()

        assert_one_line_failure(await mpgpt(config, "codes", "create", "--credits", "1", "--count", "1",
                                            "--out", str(out)), "exists already")
        assert_one_line_failure(await mpgpt(config, "codes", "create", "--credits", "1", "--count", "1",
                                            "--batch", "fair-2026", "--out", str(tmp_path / "new.csv")),
                                "exists already")
        assert not (tmp_path / "new.csv").exists()
        assert_one_line_failure(await mpgpt(config, "codes", "create", "--credits", "0", "--count", "1",
                                            "--out", str(tmp_path / "x.csv")), "credits")
        assert_one_line_failure(await mpgpt(config, "codes", "create", "--credits", "1", "--count", "1",
                                            "--expires", "soon", "--out", str(tmp_path / "x.csv")), "duration")
        assert_one_line_failure(await mpgpt(config, "codes", "show", "nothing-like-it"), "neither a code nor a batch")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, query: dict) -> str:
    async with session.post(url, data=body, params=query, timeout=aiohttp.ClientTimeout(total=10)) as r:
        assert r.status == 200
        return (await r.read()).decode()


async def test_fifty_redemptions_of_one_code_over_two_processes_credit_it_once(tmp_path, llm):
    config = write_toml(tmp_path / "config.toml", config_data(tmp_path, llm.base_url,
                                                               quota={"trial_credits": 0, "daily_free": 0}))
    a = await asyncio.to_thread(ServerProcess(config, free_port()).start)
    b = await asyncio.to_thread(ServerProcess(config, free_port()).start)
    try:
        out = tmp_path / "one.csv"
        await ok(config, "codes", "create", "--credits", "100", "--count", "1", "--out", str(out))
        code = _codes(out)[0]["code"]
        wx = FakeWeChat(f"{a.url}/wechat", TOKEN, APP_ID, window=5)
        requests = [wx.build_request(wx.text_message(f"o_racer{i:02d}", f"兑换 {code}")) for i in range(50)]
        async with aiohttp.ClientSession() as session:
            replies = await asyncio.gather(*(
                _post(session, f"{(a, b)[i % 2].url}/wechat", body, query)
                for i, (body, query) in enumerate(requests)))
        await wx.close()
        assert sum("兑换成功" in r for r in replies) == 1
        assert sum("已经被使用过了" in r for r in replies) == 49
        shown = (await ok(config, "codes", "show", code, "--json")).json()
        winner = shown["redeemed_by"]
        assert "兑换成功" in replies[int(winner[-2:])]
        user = (await ok(config, "users", "show", winner, "--json")).json()
        assert user["balance"] == 100
    finally:
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)


async def test_the_page_redeems_a_code_and_limits_wrong_ones(tmp_path, llm):
    from bot.economics.codes import hash_of, new_code
    from bot.keys import DB
    from storage.codes import CodeRepo

    quota = {"trial_credits": 0, "daily_free": 0}
    async with serving_page(tmp_path, llm.base_url, quota=quota, codes={"max_failures": 2}) as (base, app), \
            browser_session() as http:
        code = new_code()
        await CodeRepo(app[DB]).add_batch("page", 12, [hash_of(code)], None)  # type: ignore[list-item]
        async with http.post(f"{base}/api/redeem", json={"code": code}) as resp:
            assert resp.status == 401
        login = token_in(await app[COMPANION].login.issue("o_page"))
        async with http.post(f"{base}/api/login", json={"token": login}) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/api/redeem", json={"code": code}) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["credits"] == 12 and body["balance"] == 12
            assert "兑换成功" in body["message"]
        async with http.post(f"{base}/api/redeem", json={"code": code}) as resp:
            assert resp.status == 200 and (await resp.json())["outcome"] == "mine"
        statuses = []
        for _ in range(3):
            async with http.post(f"{base}/api/redeem", json={"code": new_code()}) as resp:
                statuses.append((resp.status, (await resp.json())["reason"]))
        assert statuses == [(400, "invalid"), (400, "invalid"), (429, "limited")]
        async with http.post(f"{base}/api/redeem", json={"code": 5}) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/api/redeem", data="code") as resp:
            assert resp.status == 415
        async with http.get(f"{base}/api/me") as resp:
            items = (await resp.json())["history"]["items"]
            assert [(i["kind"], i["amount"]) for i in items if i["kind"] == "redeem"] == [("redeem", 12)]
