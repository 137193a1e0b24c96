"""GET /metrics on the real app: requests counted by route name, never by raw path or openid; the
bearer token; a port of its own."""

from __future__ import annotations

import sqlite3

import aiohttp
import pytest

from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, METRICS_TOKEN, TOKEN, free_port, make_config
from tests.monitorkit import parse, scrape, serving, value


async def test_a_wechat_question_is_counted_under_its_route_name_with_its_status_and_latency(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url)) as (base, _):
        before = await scrape(base + "/metrics")
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            d = await wx.send_text("o_metrics_user_1", "你好")
        assert d.content
        after = await scrape(base + "/metrics")
    labels = {"route": "wechat", "method": "POST", "status": "200"}
    assert value(after, "mpgpt_http_requests_total", **labels) == value(before, "mpgpt_http_requests_total", **labels) + 1
    count = "mpgpt_http_request_duration_seconds_count"
    assert value(after, count, route="wechat") == value(before, count, route="wechat") + 1
    # The request took more than zero and less than WeChat's window.
    slow = value(after, "mpgpt_http_request_duration_seconds_bucket", route="wechat", le="0.005")
    fast = value(after, "mpgpt_http_request_duration_seconds_bucket", route="wechat", le="1.0")
    assert fast - slow >= 1


async def test_probing_random_paths_adds_no_series_and_never_shows_the_path_or_an_openid(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url)) as (base, _):
        before = await scrape(base + "/metrics")
        async with aiohttp.ClientSession() as http:
            for path in ("/wp-admin/o_secret_openid", "/.env", "/wechat/../../etc/passwd"):
                async with http.get(base + path) as resp:
                    assert resp.status == 404
            async with http.delete(base + "/wechat") as resp:
                assert resp.status == 405
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            await wx.send_text("o_very_secret_openid", "hi")
        async with aiohttp.ClientSession() as http, \
                http.get(base + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp:
            text = await resp.text()
    after = parse(text)
    assert "wp-admin" not in text and ".env" not in text and "passwd" not in text
    assert "o_very_secret_openid" not in text and "o_secret_openid" not in text
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "mpgpt_http_requests_total", **unmatched) >= value(before, "mpgpt_http_requests_total", **unmatched) + 3
    assert value(after, "mpgpt_http_requests_total", route="unmatched", method="DELETE", status="405") >= 1


async def test_with_a_token_a_scrape_must_bring_it(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, metrics={"token": METRICS_TOKEN})
    async with serving(cfg) as (base, _), aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": METRICS_TOKEN}):
            async with http.get(base + "/metrics", headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert "mpgpt_" not in await resp.text()
        samples = await scrape(base + "/metrics", token=METRICS_TOKEN)
    assert value(samples, "mpgpt_http_requests_total", route="metrics", method="GET", status="401") >= 3


async def test_on_a_port_of_its_own_metrics_leave_the_public_server(tmp_path, llm):
    port = free_port()
    cfg = make_config(tmp_path, llm.base_url, metrics={"port": port})
    async with serving(cfg) as (base, _), aiohttp.ClientSession() as http:
        async with http.get(base + "/metrics") as resp:
            assert resp.status == 404
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "mpgpt_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    with pytest.raises(aiohttp.ClientConnectionError):  # closed with the app
        await scrape(f"http://127.0.0.1:{port}/metrics")


async def test_by_default_metrics_leave_the_public_port_for_a_loopback_port_of_their_own(tmp_path, llm):
    from bot.config import ConfigError, config_from_dict
    from tests.harness import config_data

    data = config_data(tmp_path, llm.base_url)
    del data["metrics"]
    cfg = config_from_dict(data, base_dir=str(tmp_path))
    assert (cfg.metrics.port, cfg.metrics.host, cfg.metrics.token) == (9464, "127.0.0.1", "")
    with pytest.raises(ConfigError) as e:  # on the public port only with a token
        config_from_dict({**data, "metrics": {"port": 0}}, base_dir=str(tmp_path))
    assert e.value.key == "metrics.token"
    port = free_port()
    async with serving(make_config(tmp_path, llm.base_url, metrics={"port": port, "token": ""})) as (base, _), \
            aiohttp.ClientSession() as http:
        async with http.get(base + "/metrics") as resp:
            assert resp.status == 404  # what the Internet reaches shows no revenue, logins or channels
        samples = await scrape(f"http://127.0.0.1:{port}/metrics", token=None)
    assert value(samples, "process_resident_memory_bytes") > 0


async def test_a_taken_metrics_port_stops_start_up_with_the_key_named(tmp_path, llm):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = make_config(tmp_path, llm.base_url, metrics={"port": taken.getsockname()[1]})
        with pytest.raises(OSError) as e:
            async with serving(cfg):
                pass
    assert "metrics.port" in str(e.value)


async def test_metrics_switched_off_are_not_served(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, metrics={"enabled": False})
    async with serving(cfg) as (base, _), aiohttp.ClientSession() as http:
        async with http.get(base + "/metrics") as resp:
            assert resp.status == 404


async def test_channel_health_and_host_figures_are_read_at_scrape_time(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url)) as (base, _):
        samples = await scrape(base + "/metrics")
    assert value(samples, "mpgpt_channel_state", channel="fake", state="closed") == 1
    assert value(samples, "mpgpt_channel_state", channel="fake", state="open") == 0
    assert value(samples, "mpgpt_channel_in_flight", channel="fake") == 0
    assert value(samples, "mpgpt_system_memory_bytes", kind="total") > 0
    assert value(samples, "process_resident_memory_bytes") > 0


async def test_companion_logins_are_counted_by_outcome(tmp_path, llm):
    from tests.companionkit import token_in

    cfg = make_config(tmp_path, llm.base_url, server={"public_url": "https://mp.example.com/"})
    async with serving(cfg) as (base, _), aiohttp.ClientSession() as http:
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            token = token_in((await wx.send_text("o_login_metrics", "登录")).content or "")
        before = await scrape(base + "/metrics")
        for attempt in ("x" * 32, token):
            async with http.post(f"{base}/api/login", json={"token": attempt}) as resp:
                assert resp.status in (200, 401)
        after = await scrape(base + "/metrics")
    for outcome in ("invalid", "ok"):
        name = "mpgpt_login_attempts_total"
        assert value(after, name, method="link", outcome=outcome) == value(before, name, method="link", outcome=outcome) + 1


@pytest.mark.sqlite_file
async def test_a_failure_no_handler_foresaw_is_a_plain_500_logged_once_and_counted(tmp_path, llm):
    async with serving(make_config(tmp_path, llm.base_url)) as (base, _):
        before = await scrape(base + "/metrics")
        # The database broken under the running server (a tool run by hand, a bad restore).
        with sqlite3.connect(tmp_path / "mpgpt.db") as broken:
            broken.execute("DROP TABLE inbound")
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            body, query = wx.build_request(wx.text_message("o_broken_db", "帮助"))
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/wechat", data=body, params=query) as resp:
                    assert resp.status == 500
                    assert await resp.json() == {"error": "internal error"}
        after = await scrape(base + "/metrics")
    labels = {"route": "wechat", "method": "POST", "status": "500"}
    assert value(after, "mpgpt_http_requests_total", **labels) == value(before, "mpgpt_http_requests_total", **labels) + 1
