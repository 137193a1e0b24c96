"""A logged /wechat URL must not let anyone speak as a follower (issue 13's account-takeover path).

The URL signature covers token, timestamp and nonce, never the body. With an EncodingAESKey the
body is authenticated by msg_signature, so only the encrypted part may be read; in plaintext mode a
signed (timestamp, nonce) may carry one body only.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from tests.fakes.wechat import FakeWeChat, cdata
from tests.harness import AES_KEY, APP_ID, TOKEN, make_config, running

VICTIM = "o_victim_0000000000000000000"
ATTACKER = "o_attacker_00000000000000000"


@pytest.fixture
async def encrypted(tmp_path, llm):
    cfg = make_config(tmp_path, llm.base_url, wechat={"encoding_aes_key": AES_KEY})
    async with running(cfg) as (url, _):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, AES_KEY, mode="compat", window=0.6) as wx:
            yield wx


@pytest.fixture
async def plain(tmp_path, llm):
    async with running(make_config(tmp_path, llm.base_url)) as (url, _):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx


@pytest.mark.parametrize("drop", [("encrypt_type", "msg_signature"), ("encrypt_type",), ("msg_signature",)])
async def test_with_an_aes_key_a_plaintext_post_on_a_logged_url_is_refused(encrypted, llm, drop):
    # a URL as a proxy log shows it: signature, timestamp and nonce of a real delivery
    _, logged = encrypted.build_request(encrypted.text_message(VICTIM, "你好"))
    forged = encrypted.text_message(VICTIM, "登录").to_xml().encode()
    query = {k: v for k, v in logged.items() if k not in drop}
    d = await encrypted.post_raw(forged, query)
    assert d.status == 400 and "encrypt" in d.text.lower()
    assert "登录" not in d.text and llm.requests == []


async def test_with_an_aes_key_only_the_encrypted_message_is_read_never_the_fields_beside_it(encrypted, llm):
    body, query = encrypted.build_request(encrypted.text_message(ATTACKER, "你好"))
    # compatible mode: plaintext fields beside <Encrypt>; an attacker rewrites them, the ciphertext stays
    forged = body.decode().replace(cdata(ATTACKER), cdata(VICTIM), 1).replace(cdata("你好"), cdata("登录"), 1)
    assert VICTIM in forged
    d = await encrypted.post_raw(forged.encode(), query)
    assert d.status == 200 and d.is_valid, d.invalid_reason
    assert d.reply["ToUserName"] == ATTACKER and d.content == "你好，我是测试模型。"


async def test_plaintext_mode_refuses_another_body_on_a_signature_already_used(plain, llm):
    body, query = plain.build_request(plain.text_message(ATTACKER, "你好"))
    first = await plain.post_raw(body, query)
    assert first.status == 200 and first.content == "你好，我是测试模型。"
    forged = plain.text_message(VICTIM, "登录").to_xml().encode()
    with capture_logs() as logs:
        d = await plain.post_raw(forged, query)
    assert d.status == 403 and "登录" not in d.text
    assert any(e["event"] == "wechat_replayed_url" for e in logs)
    # the victim was never seen: no account, no code
    assert len(llm.requests) == 1


async def test_plaintext_mode_answers_wechats_retry_of_the_same_body_as_before(plain, llm):
    body, query = plain.build_request(plain.text_message(ATTACKER, "你好"))
    first = await plain.post_raw(body, query)
    again = await plain.post_raw(body, query)
    assert first.status == again.status == 200
    assert again.content == first.content == "你好，我是测试模型。"
    assert len(llm.requests) == 1


async def test_two_processes_share_the_signatures_they_have_seen(tmp_path, llm):
    from tests.harness import ServerProcess, config_data, free_port, write_toml

    path = write_toml(tmp_path / "config.toml", config_data(tmp_path, llm.base_url))
    a, b = ServerProcess(path, free_port()).start(), ServerProcess(path, free_port()).start()
    try:
        async with FakeWeChat(f"{a.url}/wechat", TOKEN, APP_ID, window=2.0) as wx_a, \
                FakeWeChat(f"{b.url}/wechat", TOKEN, APP_ID, window=2.0) as wx_b:
            body, query = wx_a.build_request(wx_a.text_message(ATTACKER, "帮助"))
            assert (await wx_a.post_raw(body, query)).status == 200
            forged = wx_b.text_message(VICTIM, "帮助").to_xml().encode()
            assert (await wx_b.post_raw(forged, query)).status == 403
    finally:
        a.stop()
        b.stop()
