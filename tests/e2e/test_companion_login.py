"""Logging in on the companion page over real HTTP: a one-time link or a desktop code from /wechat, the
session cookie, limits that stop only whoever trips them, OAuth."""

from __future__ import annotations

import asyncio
import re
import urllib.parse

import pytest
from yarl import URL

from tests.companionkit import browser_session, serving, token_in
from tests.fakes.wechat import FakeWeChat, FakeWeChatAPI
from tests.harness import APP_ID, APP_SECRET, TOKEN

ALICE = "o_alice_companion_0000000000"
MALLORY = "o_mallory_companion_00000000"


async def say(base: str, openid: str, text: str) -> str:
    async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        delivery = await wx.send_text(openid, text)
    assert delivery.is_valid, delivery.invalid_reason
    return delivery.content or ""


async def code_from_wechat(base: str, openid: str = ALICE) -> str:
    """The token of the one-time link 登录 answers (named for the tests that only need a login)."""
    return token_in(await say(base, openid, "登录"))


async def login(http, base: str, token: str, **headers: str):
    async with http.post(f"{base}/api/login", json={"token": token}, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers.getall("Set-Cookie", [])


async def wait(http, base: str, **headers: str):
    async with http.post(f"{base}/api/login/wait", json={}, headers=headers) as resp:
        return resp.status, await resp.json()


async def me(http, base: str, **params: str):
    async with http.get(f"{base}/api/me", params=params) as resp:
        return resp.status, await resp.json()


async def test_the_login_word_answers_a_one_time_link_whose_token_never_reaches_a_server_log(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _):
        reply = await say(base, ALICE, "登录")
    (link,) = re.findall(r"\S+#login=\S+", reply)
    url = urllib.parse.urlsplit(link)
    assert f"{url.scheme}://{url.netloc}{url.path}" == base + "/" and url.query == ""
    token = url.fragment.removeprefix("login=")  # a fragment: browsers never send it
    assert len(token) >= 32 and len(set(token)) > 10  # 192 random bits, URL-safe base64


async def test_the_link_logs_the_follower_in_and_the_page_knows_them(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        status, body, cookies = await login(http, base, await code_from_wechat(base))
        assert status == 200 and body == {"ok": True}
        status, data = await me(http, base)
    assert status == 200 and data["user"] == ALICE[-6:]


async def test_a_follower_whose_first_message_is_the_login_word_sees_the_trial_credits(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, quota={"trial_credits": 10, "daily_free": 2}) as (base, _), \
            browser_session() as http:
        status, _, _ = await login(http, base, await code_from_wechat(base, "o_first_words_login_00000000"))
        assert status == 200
        status, data = await me(http, base)
    assert status == 200 and (data["balance"], data["paid"], data["daily"]) == (12, 10, 2)
    assert [item["kind"] for item in data["history"]["items"]] == ["daily", "trial"]


async def test_the_session_cookie_is_httponly_lax_and_lives_the_configured_days(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, companion={"session_days": 2}) as (base, _), browser_session() as http:
        _, _, cookies = await login(http, base, await code_from_wechat(base))
    (cookie,) = cookies
    flags = [p.strip().lower() for p in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert f"max-age={2 * 86400}" in flags
    assert "secure" not in flags  # plain HTTP on loopback: a Secure cookie would never come back


async def test_behind_an_https_proxy_the_session_cookie_is_secure(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        _, _, cookies = await login(http, base, await code_from_wechat(base), **{"X-Forwarded-Proto": "https"})
    assert "secure" in [p.strip().lower() for p in cookies[0].split(";")]


async def test_each_login_word_sends_a_new_link_and_each_link_works_once(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        first, second = await code_from_wechat(base), await code_from_wechat(base)
        assert first != second
        assert (await login(http, base, first))[0] == 200
        status, body, cookies = await login(http, base, first)
        assert (await login(http, base, second))[0] == 200
    assert status == 401 and "登录链接已失效" in body["error"] and body["reason"] == "invalid" and not cookies


async def test_an_expired_link_is_refused_and_asking_again_brings_a_new_one(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, companion={"login_code_ttl": 0.3}) as (base, _), \
            browser_session() as http:
        token = await code_from_wechat(base)
        await asyncio.sleep(0.35)
        assert (await login(http, base, token))[0] == 401
        assert (await login(http, base, await code_from_wechat(base)))[0] == 200


@pytest.mark.parametrize(("body", "content_type", "status", "reason"), [
    (b'{"token": 123456}', "application/json", 400, "token_required"),
    (b'{}', "application/json", 400, "token_required"),
    (b'{"token": ', "application/json", 400, "bad_json"),
    (b'["x"]', "application/json", 400, "bad_json"),
    (b'token=abc', "application/x-www-form-urlencoded", 415, "json_required"),
])
async def test_a_malformed_login_request_gets_a_clear_4xx(tmp_path, llm, body, content_type, status, reason):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        async with http.post(f"{base}/api/login", data=body, headers={"Content-Type": content_type}) as resp:
            assert resp.status == status
            assert (await resp.json())["reason"] == reason


async def test_a_flood_of_wrong_tokens_locks_nobody_out(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        token = await code_from_wechat(base)
        statuses = {(await login(http, base, f"{i:032d}"))[0] for i in range(150)}
        assert statuses == {401}
        assert (await login(http, base, token))[0] == 200


# -- a desktop browser: a short code sent back in chat ----------------------------------------------------


async def test_a_desktop_browser_shows_a_code_and_sending_it_in_chat_logs_in_that_browser_only(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as desk, \
            browser_session() as other:
        status, shown = await wait(desk, base)
        assert status == 200 and shown["ok"] is False and re.fullmatch(r"\d{6}", shown["code"])
        assert shown["send"] == f"登录 {shown['code']}" and 0 < shown["expires_in"] <= 300
        _, elsewhere = await wait(other, base)
        assert elsewhere["code"] != shown["code"]
        assert (await wait(desk, base))[1]["code"] == shown["code"]  # polling keeps the same code
        assert "已登录网页" in await say(base, ALICE, f"登录 {shown['code']}")
        status, done = await wait(desk, base)
        assert status == 200 and done == {"ok": True}
        assert (await me(desk, base))[1]["user"] == ALICE[-6:]
        assert (await me(other, base))[0] == 401 and (await wait(other, base))[1]["ok"] is False


async def test_a_code_already_claimed_cannot_be_claimed_again(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as desk:
        code = (await wait(desk, base))[1]["code"]
        assert "已登录网页" in await say(base, ALICE, f"登录 {code}")
        assert "登录码不正确或已过期" in await say(base, MALLORY, f"登录 {code}")
        await wait(desk, base)
        assert (await me(desk, base))[1]["user"] == ALICE[-6:]


async def test_wrong_codes_in_chat_limit_only_the_follower_who_sends_them(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, companion={"code_attempts": 2}) as (base, _), \
            browser_session() as desk:
        code = (await wait(desk, base))[1]["code"]
        wrong = "000000" if code != "000000" else "111111"
        for _ in range(2):
            assert "登录码不正确" in await say(base, MALLORY, f"登录 {wrong}")
        assert "错误次数过多" in await say(base, MALLORY, f"登录 {code}")  # even the right one, for them
        assert "已登录网页" in await say(base, ALICE, f"登录 {code}")
        assert (await wait(desk, base))[1] == {"ok": True}


async def test_one_address_may_start_only_a_few_waits(tmp_path, llm):
    async with serving(tmp_path, llm.base_url, companion={"ip_waits": 2}) as (base, _):
        statuses = []
        for _ in range(3):
            async with browser_session() as fresh:
                statuses.append((await wait(fresh, base))[0])
    assert statuses == [200, 200, 429]


async def test_without_a_session_the_api_answers_401_and_names_the_login_word(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        status, body = await me(http, base)
    assert status == 401 and body["reason"] == "login_required"
    assert body["login_word"] == "登录" and body["oauth_url"] is None


async def test_logout_revokes_the_session_even_for_a_copy_of_the_cookie(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        await login(http, base, await code_from_wechat(base))
        token = http.cookie_jar.filter_cookies(URL(base))["mpgpt_session"].value
        async with http.post(f"{base}/api/logout", json={}) as resp:
            assert resp.status == 200
        assert (await me(http, base))[0] == 401
        async with browser_session() as thief:
            thief.cookie_jar.update_cookies({"mpgpt_session": token}, URL(base))
            assert (await me(thief, base))[0] == 401


async def test_a_tampered_session_cookie_is_not_accepted(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        await login(http, base, await code_from_wechat(base))
        token = http.cookie_jar.filter_cookies(URL(base))["mpgpt_session"].value
        version, sid, expires, sig = token.split(".")
        for forged in (f"{version}.{sid}.{int(expires) + 86400}.{sig}", f"{version}.{sid}.{expires}.{sig[::-1]}",
                       "garbage", ""):
            async with browser_session() as other:
                other.cookie_jar.update_cookies({"mpgpt_session": forged}, URL(base))
                assert (await me(other, base))[0] == 401


async def test_sessions_survive_a_restart_with_the_secret_generated_once_and_stored(tmp_path, llm):
    async with browser_session() as http:
        async with serving(tmp_path, llm.base_url) as (base, _):
            await login(http, base, await code_from_wechat(base))
            token = http.cookie_jar.filter_cookies(URL(base))["mpgpt_session"].value
        async with serving(tmp_path, llm.base_url) as (base2, _), browser_session() as again:
            again.cookie_jar.update_cookies({"mpgpt_session": token}, URL(base2))
            assert (await me(again, base2))[0] == 200


async def test_a_configured_secret_signs_the_sessions_and_changing_it_logs_everyone_out(tmp_path, llm):
    first = {"session_secret": "a" * 40}
    async with browser_session() as http:
        async with serving(tmp_path, llm.base_url, companion=first) as (base, _):
            await login(http, base, await code_from_wechat(base))
            token = http.cookie_jar.filter_cookies(URL(base))["mpgpt_session"].value
        for secret, expected in (("a" * 40, 200), ("b" * 40, 401)):
            async with serving(tmp_path, llm.base_url, companion={"session_secret": secret}) as (base2, _), \
                    browser_session() as again:
                again.cookie_jar.update_cookies({"mpgpt_session": token}, URL(base2))
                assert (await me(again, base2))[0] == expected


# -- web OAuth ------------------------------------------------------------------------------------------


@pytest.fixture
async def wechat_api():
    async with FakeWeChatAPI(APP_ID, APP_SECRET) as api:
        yield api


def oauth_overrides(api: FakeWeChatAPI) -> dict:
    return {"companion": {"oauth": True}, "wechat": {"api_base": api.base_url}}


async def test_oauth_sends_the_browser_to_wechats_authorize_page_with_our_callback(tmp_path, llm, wechat_api):
    async with serving(tmp_path, llm.base_url, **oauth_overrides(wechat_api)) as (base, _), browser_session() as http:
        async with http.get(f"{base}/auth/wechat", allow_redirects=False) as resp:
            assert resp.status == 302
            location = resp.headers["Location"]
        state = http.cookie_jar.filter_cookies(URL(base))["mpgpt_oauth_state"].value
    url = urllib.parse.urlsplit(location)
    assert (url.scheme, url.netloc, url.path, url.fragment) == (
        "https", "open.weixin.qq.com", "/connect/oauth2/authorize", "wechat_redirect")
    query = urllib.parse.parse_qsl(url.query)
    assert [k for k, _ in query] == ["appid", "redirect_uri", "response_type", "scope", "state"]
    assert dict(query) == {"appid": APP_ID, "redirect_uri": f"{base}/auth/wechat/callback", "response_type": "code",
                           "scope": "snsapi_base", "state": state}


async def oauth_round(http, base: str, api: FakeWeChatAPI, openid: str, code: str = "oauth-code-1",
                      state: str | None = None) -> str:
    """Start OAuth, let 'WeChat' redirect back with `code`; returns where the callback sends the browser."""
    async with http.get(f"{base}/auth/wechat", allow_redirects=False) as resp:
        sent_state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))["state"]
    api.register_oauth_code(code, openid)
    params = {"code": code, "state": sent_state if state is None else state}
    async with http.get(f"{base}/auth/wechat/callback", params=params, allow_redirects=False) as resp:
        assert resp.status == 302
        return resp.headers["Location"]


async def test_oauth_logs_the_follower_in_without_a_code(tmp_path, llm, wechat_api):
    async with serving(tmp_path, llm.base_url, **oauth_overrides(wechat_api)) as (base, _), browser_session() as http:
        assert await oauth_round(http, base, wechat_api, ALICE) == "/"
        status, data = await me(http, base)
    assert status == 200 and data["user"] == ALICE[-6:]
    assert "/sns/oauth2/access_token" in wechat_api.calls


async def test_an_oauth_code_wechat_refuses_sends_the_browser_back_to_the_code_form(tmp_path, llm, wechat_api):
    async with serving(tmp_path, llm.base_url, **oauth_overrides(wechat_api)) as (base, _), browser_session() as http:
        assert await oauth_round(http, base, wechat_api, ALICE, code="c1") == "/"
        # The same code again: WeChat answers 40163 (code been used).
        async with http.get(f"{base}/auth/wechat", allow_redirects=False) as resp:
            state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))["state"]
        async with http.get(f"{base}/auth/wechat/callback", params={"code": "c1", "state": state},
                            allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/?login=failed"


async def test_an_oauth_callback_with_another_browsers_state_logs_nobody_in(tmp_path, llm, wechat_api):
    async with serving(tmp_path, llm.base_url, **oauth_overrides(wechat_api)) as (base, _), browser_session() as http:
        assert await oauth_round(http, base, wechat_api, ALICE, state="not-the-state") == "/?login=failed"
        assert (await me(http, base))[0] == 401
    assert "/sns/oauth2/access_token" not in wechat_api.calls


async def test_with_oauth_on_the_401_tells_the_page_where_to_start_it(tmp_path, llm, wechat_api):
    async with serving(tmp_path, llm.base_url, **oauth_overrides(wechat_api)) as (base, _), browser_session() as http:
        assert (await me(http, base))[1]["oauth_url"] == "/auth/wechat"


async def test_with_oauth_off_its_routes_answer_404(tmp_path, llm):
    async with serving(tmp_path, llm.base_url) as (base, _), browser_session() as http:
        for path in ("/auth/wechat", "/auth/wechat/callback?code=x&state=y"):
            async with http.get(base + path, allow_redirects=False) as resp:
                assert resp.status == 404 and (await resp.json())["reason"] == "oauth_off"
