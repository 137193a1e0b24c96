"""Pure pieces of the owner's commands: hiding secrets, times, tables, menus, refund shares."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from bot.pay.service import credits_to_take_back
from scripts.owner.kit import OwnerError, parse_since, safe_argv, table
from scripts.owner.menu import menu_problem
from storage.orders import Order


def test_the_audit_keeps_the_command_line_but_not_secret_values():
    argv = ["channels", "test", "x", "--api-key", "sk-live", "--token=abc", "--reason", "key rotated"]
    assert safe_argv(argv) == ["channels", "test", "x", "--api-key", "***", "--token=***", "--reason", "key rotated"]


def test_since_takes_durations_and_dates_in_the_configured_time_zone():
    now = 1_800_000_000.0
    assert parse_since("7d", now, "Asia/Shanghai") == now - 7 * 86400
    assert parse_since("90m", now, "Asia/Shanghai") == now - 5400
    expected = dt.datetime(2026, 1, 31, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    assert parse_since("2026-01-31", now, "Asia/Shanghai") == expected
    with pytest.raises(OwnerError, match="neither a duration"):
        parse_since("last week", now, "Asia/Shanghai")


def test_tables_line_up_chinese_text_by_its_display_width():
    lines = table([("p6", "600 积分", 600), ("p30", "x", None)], ("ID", "NAME", "CREDITS")).splitlines()
    # "积分" takes four columns on a terminal: the third column starts at the same place on every line.
    assert [line.replace("积分", "####").rfind(" ") + 1 for line in (lines[0], lines[2], lines[3])] == [15] * 3
    assert lines[3].endswith("-")
    assert table([], ("A", "B")).splitlines()[-1] == "(none)"


@pytest.mark.parametrize("menu,problem", [
    ({"button": []}, "1-3 buttons"),
    ({"button": [{"type": "click", "name": "一二三四五六", "key": "K"}]}, "at most 16"),
    ({"button": [{"name": "更多", "sub_button": [{"type": "view", "name": "x", "url": "ftp://x"}]}]}, "url must"),
    ({"button": [{"name": "更多", "sub_button": [{"type": "click", "name": "x"}] * 6}]}, "more than 5"),
    ({"button": [{"type": "teleport", "name": "x"}]}, "unknown type"),
    ({"menu": []}, '"button" list'),
])
def test_a_menu_breaking_wechats_rules_is_named_before_it_is_sent(menu, problem):
    assert problem in (menu_problem(menu) or "")


def test_a_menu_within_wechats_rules_passes():
    sub = [{"type": "view", "name": "充值" * 5, "url": "https://example.com"}] * 5
    assert menu_problem({"button": [{"type": "click", "name": "余额余额余", "key": "B"},
                                    {"name": "更多", "sub_button": sub}]}) is None


def _order(credits: int, amount_fen: int) -> Order:
    return Order("MP0000001", "o", "p", credits, amount_fen, "native", "paid", None, None, 0.0, 0.0, None, None, None,
                 False, None)


@pytest.mark.parametrize("credits,amount,refund,taken", [
    (3500, 3000, 3000, 3500), (3500, 3000, 1000, 1167), (600, 600, 1, 1), (600, 600, 599, 599), (10, 3, 1, 4)])
def test_a_refund_takes_back_its_share_of_the_credits_rounded_up(credits, amount, refund, taken):
    assert credits_to_take_back(_order(credits, amount), refund) == taken
