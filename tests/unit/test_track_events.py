"""What the page tracker may post: each field checked, paths stripped of queries, a per-address limit."""

from __future__ import annotations

import pytest

from storage.analytics import PageAct, PageClick, PageLeave, PageView
from web_companion.analytics import BadEvent, IpRateLimit, parse_event

VID, PV = "0123456789abcdef01234567", "fedcba9876543210fedcba98"


def _view(**extra):
    return {"t": "view", "vid": VID, "pv": PV, "page": "/", "ref": "", "vw": 390, "vh": 844, **extra}


def test_a_page_view_keeps_the_path_and_only_the_origin_and_path_of_the_referrer():
    e = parse_event(_view(page="/pay?code=123456#x", ref="https://mp.weixin.qq.com/s/abc?token=secret"), "1.2.3.4", 5.0)
    assert e == PageView(PV, VID, "/pay", "https://mp.weixin.qq.com/s/abc", "1.2.3.4", 390, 844, 5.0)


def test_a_referrer_that_is_not_a_web_address_is_dropped():
    assert parse_event(_view(ref="javascript:alert(1)"), "ip", 0).referrer == ""


def test_leave_and_click_events_are_read_with_their_numbers():
    assert parse_event({"t": "leave", "vid": VID, "pv": PV, "ms": 1234}, "ip", 0) == PageLeave(PV, VID, 1234)
    click = parse_event({"t": "click", "vid": VID, "pv": PV, "page": "/", "x": 10, "y": 20.0, "vw": 390,
                         "el": "main>button#pay"}, "ip", 7.0)
    assert click == PageClick(PV, "/", 10, 20, 390, "main>button#pay", 7.0)


@pytest.mark.parametrize("event,word", [
    ([], "JSON object"),
    ({"t": "hover"}, "t must be"),
    (_view(vid="short"), "vid"),
    (_view(pv="../../etc/passwd"), "pv"),
    (_view(page="https://evil.example/"), "page"),
    (_view(page="/" + "a" * 300), "page"),
    (_view(vw=-1), "vw"),
    (_view(vw=True), "vw"),
    (_view(vh="844"), "vh"),
    (_view(ref=5), "ref"),
    ({"t": "leave", "vid": VID, "pv": PV, "ms": 10**12}, "ms"),
    ({"t": "click", "vid": VID, "pv": PV, "page": "/", "x": 1.5, "y": 1, "vw": 390}, "x"),
    ({"t": "click", "vid": VID, "pv": PV, "page": "/", "x": 1, "y": 1, "vw": 390, "el": "按钮"}, "el"),
    (_view(screen="Chat"), "screen"),
    (_view(screen=["chat"]), "screen"),
    ({"t": "act", "vid": VID, "pv": "x"}, "pv"),
    ({"t": "act", "pv": PV}, "vid"),
])
def test_bad_events_are_refused_with_the_field_named(event, word):
    with pytest.raises(BadEvent) as e:
        parse_event(event, "ip", 0)
    assert word in str(e.value)


def test_a_screen_of_the_page_is_kept_on_views_and_clicks_and_an_act_names_its_view():
    assert parse_event(_view(screen="chat"), "ip", 1.0).screen == "chat"
    assert parse_event(_view(), "ip", 1.0).screen == ""  # a page without screens
    click = parse_event({"t": "click", "vid": VID, "pv": PV, "page": "/", "x": 1, "y": 2, "vw": 390,
                         "screen": "shop"}, "ip", 2.0)
    assert click == PageClick(PV, "/", 1, 2, 390, "", 2.0, "shop")
    assert parse_event({"t": "act", "vid": VID, "pv": PV}, "ip", 3.0) == PageAct(PV, VID)


def test_each_address_gets_its_own_allowance_per_window():
    now = [0.0]
    limit = IpRateLimit(3, 60, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b")
    now[0] = 60.0
    assert limit.allow("a")


def test_a_flood_of_addresses_cannot_grow_the_limiter_without_bound():
    now = [0.0]
    limit = IpRateLimit(1, 60, clock=lambda: now[0], max_addresses=100)
    for i in range(1000):
        assert limit.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limit._counts) <= 100
