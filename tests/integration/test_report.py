"""`mpgpt report` against a real database holding a fixture with known figures."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scripts.report import build_report, page_figures
from storage.analytics import PageClick, PageEvents, PageLeave, PageView, prune_page_events
from storage.db import Database
from storage.inbound import InboundRepo
from storage.ledger import Ledger, apply_entry
from storage.orders import OrderRepo, Payment
from storage.users import UserRepo
from tests.harness import config_data, write_toml

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 28, 20, 0, tzinfo=TZ).timestamp()
TODAY = datetime(2026, 11, 28, 9, 0, tzinfo=TZ).timestamp()
YESTERDAY = TODAY - 86400


def _view(n: int, visitor: str, page: str, ip: str, at: float) -> PageView:
    return PageView(f"view{n:08d}", f"visitor-{visitor}", page, "", ip, 390, 844, at)


# Visitor a: "/" then "/pay" a minute later (one session, no bounce); "/" again 3 h later (a bounce);
# "/" yesterday (a bounce). b: "/" (a bounce). c: "/pay" (a bounce), from b's address.
# PV 6, UV 3, 2 IPs, 5 sessions of which 4 bounce: 80 %.
VIEWS = [
    _view(1, "a", "/", "10.0.0.1", TODAY),
    _view(2, "a", "/pay", "10.0.0.1", TODAY + 60),
    _view(3, "a", "/", "10.0.0.1", TODAY + 3 * 3600),
    _view(4, "b", "/", "10.0.0.2", TODAY + 10),
    _view(5, "c", "/pay", "10.0.0.2", TODAY + 20),
    _view(6, "a", "/", "10.0.0.1", YESTERDAY),
]
LEAVES = [PageLeave("view00000001", "visitor-a", 60_000), PageLeave("view00000002", "visitor-a", 30_000),
          PageLeave("view00000002", "visitor-a", 12_000),  # a late, smaller total never lowers it
          PageLeave("view00000004", "visitor-b", 6_000),
          PageLeave("view00000005", "visitor-WRONG", 99_000)]  # not the view's visitor: ignored


async def _seed(db: Database) -> None:
    await PageEvents(db).write([*VIEWS, *LEAVES, PageClick("view00000001", "/", 10, 10, 390, "button", TODAY)])
    inbound, users = InboundRepo(db), UserRepo(db)
    for i, (openid, kind, at) in enumerate([("o_x", "text", TODAY), ("o_x", "text", TODAY + 5), ("o_y", "voice", TODAY),
                                            ("o_y", "subscribe", TODAY), ("o_z", "text", YESTERDAY)]):
        await inbound.receive(f"m{i}", openid, kind, at)
    await users.set_subscribed("o_y", True, TODAY)
    await users.set_subscribed("o_old", True, TODAY - 30 * 86400)
    for openid, at in [("o_x", TODAY), ("o_y", TODAY), ("o_z", YESTERDAY), ("o_old", TODAY - 30 * 86400)]:
        await Ledger(db, clock=lambda at=at: at).ensure_account(openid, 10)
    orders = OrderRepo(db, apply_entry)
    for no, openid in [("MP0000000001", "o_x"), ("MP0000000002", "o_old"), ("MP0000000003", "o_y")]:
        await orders.open_order(no, openid, "p6", "native", 600, 600, TODAY, TODAY + 1800, TODAY)
        await orders.set_created(no, TODAY, code_url="weixin://x")
    await orders.settle(Payment("MP0000000001", "4200000001", 600, "SUCCESS"), "notify", TODAY + 100)
    await orders.settle(Payment("MP0000000002", "4200000002", 600, "SUCCESS"), "notify", TODAY + 200)
    # o_y's order is never paid.


async def _seed_file(path) -> None:
    async with Database(path) as db:
        await _seed(db)


@pytest.fixture
async def db(tmp_path):
    async with Database(tmp_path / "mpgpt.db") as db:
        await _seed(db)
        yield db


async def test_page_figures_match_the_fixture_in_total_per_day_and_per_page(db):
    r = await build_report(db, 2, TZ, now=NOW)
    total = r["page"]["total"]
    assert (total["pv"], total["uv"], total["ips"]) == (6, 3, 2)
    assert (total["sessions"], total["bounces"], total["bounce_rate"]) == (5, 4, 0.8)
    assert total["avg_seconds"] == pytest.approx((60 + 30 + 6) / 3)
    today, yesterday = r["page"]["by_day"]["2026-11-28"], r["page"]["by_day"]["2026-11-27"]
    assert (today["pv"], today["uv"], today["sessions"], today["bounces"]) == (5, 3, 4, 3)
    assert (yesterday["pv"], yesterday["uv"], yesterday["bounce_rate"]) == (1, 1, 1.0)
    home, pay = r["page"]["by_page"]["/"], r["page"]["by_page"]["/pay"]
    assert (home["pv"], home["uv"], home["sessions"], home["bounce_rate"]) == (4, 2, 4, 0.75)
    assert (pay["pv"], pay["uv"], pay["ips"], pay["sessions"], pay["bounce_rate"]) == (2, 2, 2, 1, 1.0)


async def test_the_period_is_whole_days_in_the_configured_time_zone(db):
    r = await build_report(db, 1, TZ, now=NOW)
    assert r["from"] == r["to"] == "2026-11-28"
    assert r["page"]["total"]["pv"] == 5 and "2026-11-27" not in r["page"]["by_day"]
    r = await build_report(db, 3, TZ, now=NOW)
    assert list(r["page"]["by_day"]) == ["2026-11-26", "2026-11-27", "2026-11-28"]
    quiet = r["page"]["by_day"]["2026-11-26"]  # a day without views is shown, as zeros
    assert (quiet["pv"], quiet["bounce_rate"], quiet["avg_seconds"]) == (0, None, None)


async def test_the_chat_side_counts_messages_not_events_and_paying_users_and_trial_conversion(db):
    r = await build_report(db, 2, TZ, now=NOW)
    w = r["wechat"]
    assert w["by_day"]["2026-11-28"] == {"messages": 3, "active_users": 2, "new_followers": 1, "paying_users": 2}
    assert w["by_day"]["2026-11-27"] == {"messages": 1, "active_users": 1, "new_followers": 0, "paying_users": 0}
    assert w["total"]["active_users"] == 3
    # o_x, o_y and o_z opened accounts in the period; of them only o_x paid (o_old paid but is older).
    assert (w["trial_accounts"], w["trial_accounts_paid"], w["trial_conversion"]) == (3, 1, pytest.approx(1 / 3))


async def test_a_view_a_session_apart_is_a_new_session_and_one_just_inside_is_not():
    base = TODAY
    views = [_view(1, "a", "/", "ip", base), _view(2, "a", "/x", "ip", base + 29 * 60),
             _view(3, "a", "/", "ip", base + 29 * 60 + 30 * 60)]
    figs = page_figures([_row(v) for v in views], TZ)["total"][""]
    assert (figs.sessions, figs.bounces) == (2, 1)


def _row(v: PageView):
    from storage.analytics import ViewRow
    return ViewRow(v.visitor, v.page, v.ip, v.at, 0)


async def test_pruning_deletes_only_what_is_older_than_the_retention(db):
    gone = await prune_page_events(db, 1, now=TODAY + 3600)
    assert gone == 1  # yesterday's view, a day and an hour old
    r = await build_report(db, 2, TZ, now=NOW)
    assert r["page"]["total"]["pv"] == 5


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_the_command_prints_the_figures_as_json_and_as_a_table(tmp_path):
    asyncio.run(_seed_file(tmp_path / "mpgpt.db"))
    cfg = config_data(tmp_path, "http://127.0.0.1:9/v1", storage={"path": str(tmp_path / "mpgpt.db")})
    path = write_toml(tmp_path / "config.toml", cfg)
    days = (datetime.now(TZ).date() - datetime.fromtimestamp(YESTERDAY, TZ).date()).days + 1
    result = _cli("report", "--config", str(path), "--days", str(days), "--json")
    assert result.returncode == 0, result.stderr
    r = json.loads(result.stdout)
    assert (r["page"]["total"]["pv"], r["page"]["total"]["uv"], r["page"]["total"]["bounce_rate"]) == (6, 3, 0.8)
    result = _cli("report", "--config", str(path), "--days", str(days))
    table = result.stdout
    assert "80.0%" in table and "trial -> paid: 1 of 3" in table
    assert any(line.split()[:4] == ["/pay", "2", "2", "2"] for line in table.splitlines())


def test_bad_arguments_end_in_one_line_and_a_non_zero_exit(tmp_path):
    path = write_toml(tmp_path / "config.toml", config_data(tmp_path, "http://127.0.0.1:9/v1"))
    for args, word in ((["--days", "0"], "--days"), (["--heatmap", "/"], "--out"), (["--width", "5"], "--width")):
        result = _cli("report", "--config", str(path), *args)
        assert result.returncode != 0 and word in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
