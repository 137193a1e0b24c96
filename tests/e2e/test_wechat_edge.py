"""The /wechat edge: handshake, the three message modes, and every kind of bad input."""

from __future__ import annotations

import time

import pytest

from tests.fakes.wechat import FakeWeChat, WeChatCipher
from tests.harness import AES_KEY, APP_ID, TOKEN, make_config, running


@pytest.fixture
async def plain(tmp_path, llm):
    async with running(make_config(tmp_path, llm.base_url)) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx


@pytest.fixture
async def safe(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, wechat={"encoding_aes_key": AES_KEY})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, AES_KEY, mode="safe", window=0.6) as wx:
            yield wx


async def test_the_url_handshake_echoes_echostr_only_when_signed_by_our_token(plain):
    ok = await plain.verify_get("hello123")
    assert ok.status == 200 and ok.text == "hello123"
    forged = await plain.verify_get("hello123", query={"signature": "0" * 40, "timestamp": str(int(time.time())),
                                                      "nonce": "n", "echostr": "hello123"})
    assert forged.status == 403


async def test_a_plaintext_question_is_answered_in_the_first_reply(plain, llm):
    d = await plain.send_text("o_alice", "你好")
    assert d.attempt == 1 and d.is_valid
    assert d.content == "你好，我是测试模型。"
    assert len(llm.requests) == 1


async def test_a_safe_mode_question_gets_an_encrypted_reply_that_wechat_can_verify(safe, llm):
    d = await safe.send_text("o_bob", "你好")
    assert d.is_valid, d.invalid_reason
    assert b"<Encrypt>" in d.body and b"<MsgSignature>" in d.body
    assert d.content == "你好，我是测试模型。"


async def test_compatible_mode_messages_are_read_from_the_encrypted_part(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, wechat={"encoding_aes_key": AES_KEY})
    async with running(cfg) as (url, _):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, AES_KEY, mode="compat", window=0.6) as wx:
            d = await wx.send_text("o_carol", "你好")
    assert d.is_valid and d.content == "你好，我是测试模型。"


async def test_model_output_containing_cdata_end_cannot_break_the_reply_xml(plain, llm):
    from tests.fakes.llm import Script

    llm.queue(Script(text="a]]>b<xml>c</xml>"))
    d = await plain.send_text("o_dave", "echo")
    assert d.is_valid and d.content == "a]]>b<xml>c</xml>"


def _fresh_query(wx: FakeWeChat, **extra: str) -> dict[str, str]:
    return wx.signed_query(extra)


@pytest.mark.parametrize("case", ["forged", "stale", "missing", "future"])
async def test_forged_stale_or_unsigned_requests_get_a_4xx_and_no_model_call(plain, llm, case):
    body, query = plain.build_request(plain.text_message("o_eve", "hi"))
    if case == "forged":
        query["signature"] = "f" * 40
    elif case == "stale":
        query = plain.signed_query({"openid": "o_eve"}, timestamp=int(time.time()) - 3600)
    elif case == "future":
        query = plain.signed_query({"openid": "o_eve"}, timestamp=int(time.time()) + 3600)
    else:
        query.pop("signature")
    d = await plain.post_raw(body, query)
    assert d.status in (400, 403)
    assert d.text  # a reason, not an empty 4xx
    assert llm.requests == []


@pytest.mark.parametrize("body,status", [
    (b"<xml><MsgType>text", 400),                                                  # malformed
    (b"not xml at all", 400),
    (b"<notxml><a>1</a></notxml>", 400),                                             # wrong root
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'  # XXE
     b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>"
     b"<MsgType>text</MsgType><Content>&e;</Content><MsgId>1</MsgId></xml>", 400),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
     b"<xml><Content>&b;</Content></xml>", 400),                                     # billion laughs
    (b"<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>x</Content></xml>", 400),  # no MsgId
    (b"<xml><MsgType>text</MsgType><Content>x</Content><MsgId>5</MsgId></xml>", 400),  # no sender
])
async def test_malformed_bodies_get_a_400_and_no_model_call(plain, llm, body, status):
    d = await plain.post_raw(body, plain.signed_query({"openid": "o_eve"}))
    assert d.status == status
    assert llm.requests == []


async def test_an_oversized_body_is_refused_with_413(plain, llm):
    body = b"<xml><Content>" + b"x" * (70 * 1024) + b"</Content></xml>"
    d = await plain.post_raw(body, plain.signed_query({"openid": "o_eve"}))
    assert d.status == 413
    assert llm.requests == []


async def test_wrongly_encrypted_messages_get_a_4xx_and_no_model_call(safe, llm):
    good_body, query = safe.build_request(safe.text_message("o_eve", "hi"))
    # a valid signature over garbage ciphertext
    garbage = "QUJD" * 20
    q = dict(query, msg_signature=safe.cipher.msg_signature(query["timestamp"], query["nonce"], garbage))
    d1 = await safe.post_raw(f"<xml><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>".encode(), q)
    # the right ciphertext with a forged msg_signature
    d2 = await safe.post_raw(good_body, dict(query, msg_signature="0" * 40))
    # encrypted for another app
    other = WeChatCipher(TOKEN, AES_KEY, "wxotherapp0000000")
    enc = other.encrypt(safe.text_message("o_eve", "hi").to_xml())
    q3 = dict(query, msg_signature=safe.cipher.msg_signature(query["timestamp"], query["nonce"], enc))
    d3 = await safe.post_raw(f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>".encode(), q3)
    # encrypted, but the query does not say so
    d4 = await safe.post_raw(good_body, {k: v for k, v in query.items() if k not in ("encrypt_type", "msg_signature")})
    assert [d1.status, d2.status, d3.status, d4.status] == [400, 403, 403, 400]
    assert llm.requests == []


async def test_subscribe_gets_the_welcome_and_unsubscribe_is_recorded(plain, llm):
    d = await plain.send_event("o_frank", "subscribe")
    assert "感谢关注" in (d.content or "")
    d = await plain.send_event("o_frank", "unsubscribe")
    assert d.is_empty
    assert llm.requests == []


async def test_voice_with_recognition_is_chat_and_without_it_gets_an_explanation(plain, llm):
    d = await plain.send_voice("o_gina", recognition="今天天气怎么样")
    assert d.content == "「今天天气怎么样」\n\n你好，我是测试模型。"
    assert llm.requests[-1].messages[-1]["content"] == "今天天气怎么样"
    d = await plain.send_voice("o_gina", recognition="")
    assert "语音" in (d.content or "")
    assert len(llm.requests) == 1


async def test_other_message_types_get_a_text_only_reply(plain, llm):
    d = await plain.send_image("o_hank")
    assert "文字" in (d.content or "")
    assert llm.requests == []


async def test_an_oversized_chunked_body_is_refused_with_413_too(tmp_path, llm):
    import aiohttp

    async with running(make_config(tmp_path, llm.base_url)) as (url, _):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            query = wx.signed_query({"openid": "o_eve"})

        async def chunks():
            for _ in range(80):
                yield b"x" * 1024

        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/wechat", params=query, data=chunks()) as resp:
                assert resp.status == 413
    assert llm.requests == []
