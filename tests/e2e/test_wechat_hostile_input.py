"""/wechat against what a hostile sender (or a careless model) can put in a body: depth, encodings,
characters XML forbids, and the whitespace WeChat's own samples put around CDATA.

The cross-checks read the same bytes with wechatpy, an independent implementation of the format.
"""

from __future__ import annotations

import pytest
import wechatpy
from wechatpy.crypto import WeChatCrypto

from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import AES_KEY, APP_ID, TOKEN, make_config, running

SENDER = "o_hostile_input_000000000000"


@pytest.fixture
async def plain(tmp_path, llm):
    async with running(make_config(tmp_path, llm.base_url)) as (url, _):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx


async def post(wx: FakeWeChat, body: bytes):
    return await wx.post_raw(body, wx.signed_query({"openid": SENDER}))


async def test_xml_nested_thousands_deep_with_a_valid_signature_gets_a_400(plain, llm):
    d = await post(plain, b"<xml>" + b"<a>" * 5000 + b"x" + b"</a>" * 5000 + b"</xml>")
    assert d.status == 400 and "deeper" in d.text
    assert (await plain.send_text(SENDER, "你好")).content == "你好，我是测试模型。"  # still serving


@pytest.mark.parametrize("body", [
    # a DOCTYPE in UTF-16 has no "<!DOCTYPE" bytes for a byte-level check to see
    ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY e "boom">]>'
     "<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>&e;</Content><MsgId>1</MsgId></xml>"
     ).encode("utf-16"),
    b"\xef\xbb\xbf<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>",
    b'<?xml version="1.0" encoding="ISO-8859-1"?><xml><FromUserName>o</FromUserName><MsgType>text</MsgType>'
    b"<Content>\xe9</Content><MsgId>1</MsgId></xml>",
    b"<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>\xff\xfe</Content><MsgId>1</MsgId></xml>",
], ids=["utf16-doctype", "utf8-bom", "latin1", "not-utf8"])
async def test_bodies_not_in_plain_utf8_are_refused_before_parsing(plain, llm, body):
    d = await post(plain, body)
    assert d.status == 400 and ("UTF-8" in d.text or "byte order mark" in d.text)
    assert llm.requests == []


async def test_a_model_answer_with_characters_xml_forbids_still_makes_a_valid_reply(plain, llm):
    llm.queue(Script(text="a\x00b\x1bc\x0bd\ufffee\x7ff 好"))
    d = await plain.send_text(SENDER, "echo")
    assert d.is_valid, d.invalid_reason
    assert d.content == "abcde\x7ff 好"  # DEL is allowed in XML 1.0


def _spaced(msg_type: str, inner: str) -> str:
    """A message written as WeChat's card-event samples are: whitespace around every CDATA."""
    return (f"<xml>\n  <ToUserName>\n    <![CDATA[gh_test]]>\n  </ToUserName>\n  <FromUserName> <![CDATA[{SENDER}]]> "
            f"</FromUserName>\n  <CreateTime>1700000000</CreateTime>\n  <MsgType>\n    <![CDATA[{msg_type}]]>\n"
            f"  </MsgType>{inner}</xml>")


async def test_whitespace_around_cdata_is_read_as_wechatpy_reads_it(plain, llm):
    xml = _spaced("text", "\n  <Content>\n  <![CDATA[今天天气怎么样]]>\n  </Content>\n  <MsgId>4000000001</MsgId>\n")
    theirs = wechatpy.parse_message(xml)
    d = await post(plain, xml.encode())
    assert theirs.type == "text"
    assert d.status == 200 and d.content == "你好，我是测试模型。"
    assert llm.requests[-1].messages[-1]["content"] == theirs.content == "今天天气怎么样"


async def test_an_event_with_whitespace_around_cdata_is_the_event_wechatpy_sees(plain, llm):
    xml = _spaced("event", "\n  <Event>\n    <![CDATA[subscribe]]>\n  </Event>\n  <EventKey><![CDATA[]]></EventKey>\n")
    theirs = wechatpy.parse_message(xml)
    d = await post(plain, xml.encode())
    assert (theirs.type, theirs.event) == ("event", "subscribe")
    assert d.status == 200 and "感谢关注" in (d.content or "")


async def test_wechatpys_encryption_is_understood_and_our_encrypted_reply_reads_back_in_wechatpy(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, wechat={"encoding_aes_key": AES_KEY})
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    message = ("<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[o_wechatpy]]></FromUserName>"
               "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]>"
               "</Content><MsgId>4000000002</MsgId></xml>")
    async with running(cfg) as (url, _):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, AES_KEY, mode="safe", window=0.6) as wx:
            query = wx.signed_query({"openid": "o_wechatpy"})
            envelope = crypto.encrypt_message(message, query["nonce"], query["timestamp"])
            import xml.etree.ElementTree as ET

            root = ET.fromstring(envelope)
            query |= {"encrypt_type": "aes", "msg_signature": root.findtext("MsgSignature")}
            body = f"<xml><Encrypt><![CDATA[{root.findtext('Encrypt')}]]></Encrypt></xml>".encode()
            d = await wx.post_raw(body, query)
    assert d.status == 200
    reply = ET.fromstring(d.body)
    plain = crypto.decrypt_message(d.body, reply.findtext("MsgSignature"), reply.findtext("TimeStamp"),
                                   reply.findtext("Nonce"))
    theirs = wechatpy.parse_message(plain)
    assert (theirs.type, theirs.target, theirs.content) == ("text", "o_wechatpy", "你好，我是测试模型。")
