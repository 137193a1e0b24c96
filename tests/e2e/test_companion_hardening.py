"""The companion page's edge against a hostile Internet: headers on every response, JSON-only POSTs,
bounded JSON, client addresses only from trusted proxies, Secure cookies behind https, owner-only files."""

from __future__ import annotations

import os
import stat

import pytest

from tests.companionkit import browser_session, serving, token_in
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN

ALICE = "o_alice_hardening_0000000000"


async def logged_in(base: str, http, openid: str = ALICE) -> list[str]:
    async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        token = token_in((await wx.send_text(openid, "登录")).content or "")
    async with http.post(f"{base}/api/login", json={"token": token}) as resp:
        assert resp.status == 200
        return resp.headers.getall("Set-Cookie", [])


@pytest.mark.parametrize("path", ["/", "/static/index.html", "/static/app.js", "/static/app.css", "/api/me",
                                  "/api/products", "/no/such/page", "/static/missing.js"])
async def test_every_page_file_and_api_answer_carries_the_security_headers(tmp_path, llm, path):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        async with http.get(base + path) as resp:
            headers = resp.headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin" and headers["X-Frame-Options"] == "DENY"


async def test_the_page_is_only_served_branded_never_as_its_template(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        async with http.get(f"{base}/static/index.html") as resp:
            assert resp.status == 404
        async with http.get(f"{base}/") as resp:
            page = await resp.text()
    assert resp.status == 200 and "{{" not in page and "<title>" in page


async def test_logout_takes_json_only_so_another_sites_form_cannot_log_anyone_out(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        await logged_in(base, http)
        async with http.post(f"{base}/api/logout", data="x=1",
                             headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert resp.status == 415
        async with http.get(f"{base}/api/me") as resp:
            assert resp.status == 200
        async with http.post(f"{base}/api/logout", json={}) as resp:
            assert resp.status == 200


@pytest.mark.parametrize("path", ["/api/login", "/api/track", "/api/login/wait"])
# within /api/track's 4 KB and far past Python's recursion limit of 1,000
@pytest.mark.parametrize("body", [b"[" * 4_000, b'{"a":' * 790 + b"1" + b"}" * 10,
                                  b'{"token": 1' + b"0" * 30 + b"}", b'{"x": NaN}', "{}".encode("utf-16")],
                         ids=["brackets", "objects", "huge-int", "nan", "utf16"])
async def test_deep_huge_or_odd_json_gets_a_400_never_a_500(tmp_path, llm, path, body):
    assert len(body) <= 4096
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        async with http.post(base + path, data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400, await resp.text()


async def test_a_30_digit_conversation_id_gets_a_400(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        await logged_in(base, http)
        async with http.post(f"{base}/api/chat", json={"message": "hi", "conversation_id": 10**30}) as resp:
            assert resp.status == 400
        async with http.get(f"{base}/api/conversations/{10**30}") as resp:
            assert resp.status == 400


async def _waits(base: str, header: str, addresses: list[str]) -> list[int]:
    statuses = []
    for addr in addresses:
        async with browser_session() as fresh:
            async with fresh.post(f"{base}/api/login/wait", json={}, headers={header: addr}) as resp:
                statuses.append(resp.status)
    return statuses


async def test_a_client_address_header_from_an_untrusted_peer_is_ignored(tmp_path, llm):
    limits = {"ip_waits": 2, "client_ip_header": "X-Forwarded-For"}
    async with serving(tmp_path, llm.base_url, companion=limits,
                       server={"trusted_proxies": ["10.0.0.0/8"]}) as (base, _):
        statuses = await _waits(base, "X-Forwarded-For", ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    assert statuses == [200, 200, 429]  # the loopback peer is not a proxy we trust: one address for all


async def test_a_trusted_proxys_header_names_the_client_and_garbage_in_it_is_not_an_address(tmp_path, llm):
    limits = {"ip_waits": 2, "client_ip_header": "X-Forwarded-For"}
    async with serving(tmp_path, llm.base_url, companion=limits) as (base, _):  # loopback is trusted by default
        assert await _waits(base, "X-Forwarded-For", ["192.0.2.1", "192.0.2.2", "192.0.2.3"]) == [200] * 3
        junk = ["'; DROP TABLE x", "not-an-ip", "999.1.1.1"]
        assert await _waits(base, "X-Forwarded-For", junk) == [200, 200, 429]  # all count as the peer


async def test_with_an_https_public_url_the_session_cookie_is_secure_without_any_proxy_header(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, server={"public_url": "https://mp.example.com/"}) as (base, _), \
            browser_session() as http:
        cookies = await logged_in(base, http)
    assert "secure" in [p.strip().lower() for p in cookies[0].split(";")]


async def test_x_forwarded_proto_from_an_untrusted_peer_does_not_matter(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, server={"trusted_proxies": ["10.0.0.0/8"]}) as (base, _), \
            browser_session() as http:
        async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            token = token_in((await wx.send_text(ALICE, "登录")).content or "")
        async with http.post(f"{base}/api/login", json={"token": token}, headers={"X-Forwarded-Proto": "https"}) as r:
            cookies = r.headers.getall("Set-Cookie", [])
    assert "secure" not in [p.strip().lower() for p in cookies[0].split(";")]


@pytest.mark.sqlite_file
async def test_the_database_its_wal_and_shm_and_backups_are_owner_only(tmp_path, llm):
    from bot.keys import DB
    from storage.backup import backup

    os.umask(0o022)  # the usual umask: files would be 0644
    async with serving(tmp_path, llm.base_url) as (base, app), browser_session() as http:
        await logged_in(base, http)
        await backup(app[DB], tmp_path / "copy.db")
        paths = [tmp_path / name for name in ("mpgpt.db", "mpgpt.db-wal", "mpgpt.db-shm", "copy.db")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert modes == dict.fromkeys(modes, 0o600)
