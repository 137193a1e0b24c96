"""The WeChat fakes speak WeChat's protocol: checked against werobot (an independent implementation) and over
loopback HTTP against tiny aiohttp apps."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from werobot.crypto import MessageCrypt
from werobot.parser import parse_user_msg
from werobot.utils import check_signature

from tests.fakes.wechat import (
    CipherError,
    FakeWeChat,
    FakeWeChatAPI,
    WeChatCipher,
    cdata,
    random_aes_key,
)

TOKEN = "fake-token"
APP_ID = "wx1234567890abcdef"
XML = "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Content><![CDATA[你好 ]]]]><![CDATA[>]]></Content></xml>"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def aes_key() -> str:
    return random_aes_key()


@pytest.fixture
def cipher(aes_key: str) -> WeChatCipher:
    return WeChatCipher(TOKEN, aes_key, APP_ID)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve one handler at /wechat on loopback; returns its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/wechat", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/wechat"

    yield start
    for runner in runners:
        await runner.cleanup()


# -- crypto ----------------------------------------------------------------------------------------------


def test_random_aes_key_is_a_43_character_key_werobot_accepts(aes_key: str) -> None:
    assert len(aes_key) == 43
    MessageCrypt(TOKEN, aes_key, APP_ID)  # raises UnvalidEncodingAESKey otherwise


def test_url_signature_matches_werobots_check(cipher: WeChatCipher) -> None:
    assert check_signature(TOKEN, "1700000000", "123456", cipher.signature("1700000000", "123456"))
    assert not check_signature(TOKEN, "1700000001", "123456", cipher.signature("1700000000", "123456"))


def test_fake_encryption_is_decrypted_by_werobot(cipher: WeChatCipher, aes_key: str) -> None:
    encrypt = cipher.encrypt(XML)
    signature = cipher.msg_signature("1700000000", "42", encrypt)
    plain = MessageCrypt(TOKEN, aes_key, APP_ID).decrypt_message("1700000000", "42", signature, encrypt)
    assert plain == XML.encode()


def test_werobot_encrypted_reply_is_decrypted_and_verified_by_the_fake(cipher: WeChatCipher, aes_key: str) -> None:
    envelope = MessageCrypt(TOKEN, aes_key, APP_ID).encrypt_message(XML, timestamp="1700000000", nonce="nonce1")
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    signature = envelope.split("<MsgSignature><![CDATA[")[1].split("]]>")[0]
    assert cipher.decrypt_verified(encrypt, "1700000000", "nonce1", signature) == XML.encode()
    with pytest.raises(CipherError, match="msg_signature"):
        cipher.decrypt_verified(encrypt, "1700000000", "nonce2", signature)


def test_ciphertext_is_padded_to_32_byte_blocks(cipher: WeChatCipher) -> None:
    for size in range(0, 70):
        raw = base64.b64decode(cipher.encrypt("x" * size))
        assert len(raw) % 32 == 0
        assert cipher.decrypt(cipher.encrypt("x" * size)) == b"x" * size


@pytest.mark.parametrize("position", [0, 1, 3, 17, -17, -1])
def test_a_tampered_ciphertext_is_rejected(cipher: WeChatCipher, position: int) -> None:
    raw = bytearray(base64.b64decode(cipher.encrypt(XML)))
    raw[position] ^= 0x01
    with pytest.raises(CipherError):
        cipher.decrypt(base64.b64encode(bytes(raw)).decode())


def test_a_message_for_another_appid_is_rejected(cipher: WeChatCipher, aes_key: str) -> None:
    envelope = MessageCrypt(TOKEN, aes_key, "wxanother").encrypt_message(XML)
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    with pytest.raises(CipherError, match="AppID"):
        cipher.decrypt(encrypt)


def test_garbage_is_rejected_not_crashed_on(cipher: WeChatCipher) -> None:
    for bad in ["", "not base64!", base64.b64encode(b"short").decode(), base64.b64encode(bytes(48)).decode()]:
        with pytest.raises(CipherError):
            cipher.decrypt(bad)


def test_a_malformed_encoding_aes_key_is_refused() -> None:
    with pytest.raises(ValueError, match="43"):
        WeChatCipher(TOKEN, "short", APP_ID)


# -- message XML -----------------------------------------------------------------------------------------


def test_built_messages_parse_with_werobot() -> None:
    wechat = FakeWeChat("http://127.0.0.1:1/wechat", TOKEN, APP_ID)
    text = parse_user_msg(wechat.text_message("o_user", "hi ]]> there").to_xml())
    assert (text.type, text.content, text.source, text.target) == ("text", "hi ]]> there", "o_user", "gh_test")
    voice = parse_user_msg(wechat.voice_message("o_user", recognition="语音").to_xml())
    assert (voice.type, voice.recognition) == ("voice", "语音")
    follow = parse_user_msg(wechat.event_message("o_user", "subscribe", "qrscene_ref42").to_xml())
    assert (follow.type, follow.key) == ("subscribe_event", "qrscene_ref42")
    click = parse_user_msg(wechat.event_message("o_user", "CLICK", "MENU_HELP").to_xml())
    assert (click.type, click.key) == ("click_event", "MENU_HELP")


def test_msg_ids_increase_unless_given() -> None:
    wechat = FakeWeChat("http://127.0.0.1:1/wechat", TOKEN, APP_ID)
    first, second = wechat.text_message("o", "a"), wechat.text_message("o", "b")
    assert second.msg_id == first.msg_id + 1
    assert wechat.text_message("o", "c", msg_id=7).msg_id == 7
    assert wechat.event_message("o", "unsubscribe").msg_id is None


# -- delivery cadence ------------------------------------------------------------------------------------


def _text_reply(to: str, content: str) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[gh_test]]></FromUserName>"
        f"<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content>{cdata(content)}</Content></xml>"
    )


async def test_a_slow_first_answer_is_retried_with_the_identical_request_and_the_second_counts(serve) -> None:
    seen: list[tuple[bytes, dict[str, str]]] = []
    disconnects: list[bool] = []
    first_done = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        seen.append((await request.read(), dict(request.query)))
        if len(seen) == 1:
            for _ in range(200):  # wait for WeChat to give up on us
                await asyncio.sleep(0.01)
                if request.transport is None or request.transport.is_closing():
                    disconnects.append(True)
                    break
            first_done.set()
            return web.Response(text="too late")
        return web.Response(text=_text_reply(request.query["openid"], "pong"))

    async with FakeWeChat(await serve(handler), TOKEN, APP_ID, window=0.2) as wechat:
        delivery = await wechat.send_text("o_user", "ping")
    assert delivery.attempt == 2
    assert delivery.content == "pong" and delivery.is_valid
    assert seen[0] == seen[1]
    await asyncio.wait_for(first_done.wait(), 3)
    assert disconnects == [True]  # the abandoned connection really closed
    assert 0.2 <= delivery.elapsed < 1.0


async def test_three_unanswered_attempts_give_up_without_an_answer(serve) -> None:
    bodies: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        await asyncio.sleep(0.5)
        return web.Response(text="success")

    async with FakeWeChat(await serve(handler), TOKEN, APP_ID, window=0.1) as wechat:
        delivery = await wechat.send_text("o_user", "ping")
    assert (delivery.attempt, delivery.attempts, len(bodies)) == (None, 3, 3)
    assert len(set(bodies)) == 1 and len(delivery.errors) == 3


async def test_a_served_client_error_stops_the_retries(serve) -> None:
    calls: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(1)
        return web.Response(status=403, text="bad signature")

    async with FakeWeChat(await serve(handler), TOKEN, APP_ID, window=0.2) as wechat:
        delivery = await wechat.send_text("o_user", "ping")
    assert (delivery.attempt, delivery.status, delivery.text, len(calls)) == (1, 403, "bad signature", 1)


async def test_success_is_an_empty_answer(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="success")

    async with FakeWeChat(await serve(handler), TOKEN, APP_ID) as wechat:
        delivery = await wechat.send_event("o_user", "unsubscribe")
    assert delivery.is_empty and delivery.is_valid and delivery.content is None


# -- encrypted modes against a werobot-based endpoint ------------------------------------------------------


def _werobot_endpoint(aes_key: str, reply: Callable[[str], str] | None = None) -> Handler:
    crypt = MessageCrypt(TOKEN, aes_key, APP_ID)

    async def handler(request: web.Request) -> web.Response:
        q = request.query
        if q.get("encrypt_type") != "aes" or not check_signature(TOKEN, q["timestamp"], q["nonce"], q["signature"]):
            return web.Response(status=403)
        body = (await request.read()).decode()
        encrypt = body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
        message = parse_user_msg(crypt.decrypt_message(q["timestamp"], q["nonce"], q["msg_signature"], encrypt))
        plain = _text_reply(message.source, "echo " + message.content)
        return web.Response(text=reply(plain) if reply else crypt.encrypt_message(plain))

    return handler


@pytest.mark.parametrize("mode", ["compat", "safe"])
async def test_encrypted_delivery_is_readable_by_werobot_and_its_reply_is_decrypted(serve, aes_key, mode) -> None:
    url = await serve(_werobot_endpoint(aes_key))
    async with FakeWeChat(url, TOKEN, APP_ID, aes_key, mode=mode) as wechat:
        delivery = await wechat.send_text("o_user", "secret ]]> text")
    assert delivery.is_valid, delivery.invalid_reason
    assert delivery.content == "echo secret ]]> text"


async def test_a_plaintext_reply_in_safe_mode_is_invalid(serve, aes_key) -> None:
    url = await serve(_werobot_endpoint(aes_key, reply=lambda plain: plain))
    async with FakeWeChat(url, TOKEN, APP_ID, aes_key, mode="safe") as wechat:
        delivery = await wechat.send_text("o_user", "hi")
    assert not delivery.is_valid and "encrypted" in delivery.invalid_reason


async def test_an_encrypted_reply_with_a_forged_signature_is_invalid(serve, aes_key) -> None:
    def forge(plain: str) -> str:
        return MessageCrypt("other-token", aes_key, APP_ID).encrypt_message(plain)

    async with FakeWeChat(await serve(_werobot_endpoint(aes_key, forge)), TOKEN, APP_ID, aes_key, "safe") as wechat:
        delivery = await wechat.send_text("o_user", "hi")
    assert not delivery.is_valid and "msg_signature" in delivery.invalid_reason


async def test_verify_get_and_post_raw_send_exactly_what_they_are_given(serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=request.query.get("echostr") or (await request.text()))

    async with FakeWeChat(await serve(handler), TOKEN, APP_ID) as wechat:
        handshake = await wechat.verify_get("echo-123")
        raw = await wechat.post_raw(b"<not-xml", wechat.signed_query(timestamp=1))
    assert (handshake.status, handshake.text) == (200, "echo-123")
    assert raw.text == "<not-xml" and raw.invalid_reason.startswith("reply is not XML")


# -- the API fake --------------------------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeWeChatAPI, aiohttp.ClientSession]]:
    async with FakeWeChatAPI(app_id=APP_ID, secret="s3cret") as fake, aiohttp.ClientSession() as session:
        yield fake, session


async def _call(session: aiohttp.ClientSession, url: str, payload: dict | None = None) -> dict:
    method = session.post if payload is not None else session.get
    async with method(url, json=payload) as resp:
        assert resp.status == 200
        return await resp.json(content_type=None)


async def _token(fake: FakeWeChatAPI, session: aiohttp.ClientSession, force: bool = False, **over) -> dict:
    payload = {"grant_type": "client_credential", "appid": APP_ID, "secret": "s3cret", "force_refresh": force}
    return await _call(session, fake.base_url + "/cgi-bin/stable_token", payload | over)


async def _send(fake: FakeWeChatAPI, session: aiohttp.ClientSession, token: str, to: str, content: str) -> int:
    url = f"{fake.base_url}/cgi-bin/message/custom/send?access_token={token}"
    answer = await _call(session, url, {"touser": to, "msgtype": "text", "text": {"content": content}})
    return answer["errcode"]


async def test_stable_token_returns_the_same_token_until_forced(api) -> None:
    fake, session = api
    first, second = await _token(fake, session), await _token(fake, session)
    assert first["access_token"] == second["access_token"] and 7190 <= first["expires_in"] <= 7200
    forced = await _token(fake, session, force=True)
    assert forced["access_token"] != first["access_token"]
    assert (fake.token_calls, fake.force_refresh_calls) == (3, 1)
    assert await _send(fake, session, first["access_token"], "o", "hi") == 40001


async def test_stable_token_refuses_a_wrong_appid_or_secret(api) -> None:
    fake, session = api
    assert (await _token(fake, session, appid="wxnope"))["errcode"] == 40013
    assert (await _token(fake, session, secret="nope"))["errcode"] == 40125


async def test_an_invalidated_token_answers_40001_until_a_forced_refresh(api) -> None:
    fake, session = api
    token = (await _token(fake, session))["access_token"]
    fake.invalidate_token()
    assert await _send(fake, session, token, "o", "hi") == 40001
    assert (await _token(fake, session))["access_token"] == token  # still the broken one
    fresh = (await _token(fake, session, force=True))["access_token"]
    assert await _send(fake, session, fresh, "o", "hi") == 0
    fake.expire_token()
    assert await _send(fake, session, fresh, "o", "hi") == 42001


async def test_custom_send_records_text_and_refuses_oversized_content(api) -> None:
    fake, session = api
    token = (await _token(fake, session))["access_token"]
    assert await _send(fake, session, token, "o_a", "答" * 682) == 0  # 2046 bytes
    assert await _send(fake, session, token, "o_a", "答" * 683) == 45002  # 2049 bytes
    assert fake.sent == [("o_a", "答" * 682)]


async def test_scripted_failures_are_answered_in_order_per_user_then_globally(api) -> None:
    fake, session = api
    token = (await _token(fake, session))["access_token"]
    fake.fail_next(45047, times=2, openid="o_a")
    fake.fail_next(-1)
    codes = [await _send(fake, session, token, who, "x") for who in ("o_a", "o_b", "o_a", "o_a", "o_b")]
    assert codes == [45047, -1, 45047, 0, 0]


async def test_the_budget_allows_five_messages_per_user_message(api) -> None:
    fake, session = api
    fake.enforce_budget = True
    token = (await _token(fake, session))["access_token"]
    assert await _send(fake, session, token, "o_a", "x") == 45015
    fake.new_user_message("o_a")
    codes = [await _send(fake, session, token, "o_a", f"part {i}") for i in range(6)]
    assert codes == [0, 0, 0, 0, 0, 45047]
    fake.new_user_message("o_a")
    assert await _send(fake, session, token, "o_a", "again") == 0


async def test_menu_create_records_a_valid_menu_and_refuses_four_buttons(api) -> None:
    fake, session = api
    token = (await _token(fake, session))["access_token"]
    url = f"{fake.base_url}/cgi-bin/menu/create?access_token={token}"
    menu = {"button": [{"type": "click", "name": "帮助", "key": "HELP"}]}
    assert (await _call(session, url, menu))["errcode"] == 0
    assert (await _call(session, url, {"button": menu["button"] * 4}))["errcode"] == 40016
    assert fake.menus == [menu]


async def test_oauth_codes_resolve_to_an_openid_once(api) -> None:
    fake, session = api
    fake.register_oauth_code("code1", "o_web")
    url = f"{fake.base_url}/sns/oauth2/access_token?appid={APP_ID}&secret=s3cret&grant_type=authorization_code"
    assert (await _call(session, url + "&code=code1"))["openid"] == "o_web"
    assert (await _call(session, url + "&code=code1"))["errcode"] == 40163
    assert (await _call(session, url + "&code=unknown"))["errcode"] == 40029


async def test_an_endpoint_delay_slows_only_that_endpoint(api) -> None:
    fake, session = api
    fake.delays["/cgi-bin/stable_token"] = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _token(fake, session)
    assert loop.time() - started >= 0.2
