"""Voice and pictures as followers send them, through the real app: WeChat's media/get, a picture CDN,
the speech endpoint and the model are fakes speaking their real protocols; the voice is a real AMR file
(libopencore-amrnb) converted by Debian's ffmpeg."""

from __future__ import annotations

import asyncio
import base64

import pytest

from bot.keys import DB, GENERATOR
from storage.inbound import InboundRepo
from storage.ledger import Ledger
from tests.fakes.llm import Script
from tests.fakes.media import FakeCDN, amr_voice, audio_seconds, jpeg
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wechat_api import FakeWeChatAPI
from tests.harness import APP_ID, APP_SECRET, TOKEN, make_config, running


@pytest.fixture
async def api():
    async with FakeWeChatAPI(APP_ID, APP_SECRET) as fake:
        yield fake


@pytest.fixture
async def cdn():
    async with FakeCDN() as fake:
        yield fake


def _cfg(tmp_path, llm, api, cdn, **extra):
    base = {
        "wechat": {"api_base": api.base_url},
        "channels": [{"name": "fake", "provider": "openai", "base_url": llm.base_url, "api_key": "sk-test",
                      "models": ["gpt-4o-mini", "text-only"]}],
        "models": {"gpt-4o-mini": {"display_name": "GPT-4o mini", "cost": 1, "vision": True, "image_cost": 1},
                   "text-only": {"cost": 1}},
        "speech": {"channel": "fake", "model": "whisper-1", "cost": 2},
        "media": {"hosts": [cdn.host]},
        "quota": {"trial_credits": 10, "daily_free": 0},
        "rules": {"rate_limit": 1000},
    }
    for k, v in extra.items():
        base[k] = {**base.get(k, {}), **v}
    return make_config(tmp_path, llm.base_url, **base)


@pytest.fixture
async def server(tmp_path, llm, api, cdn):
    async with running(_cfg(tmp_path, llm, api, cdn)) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            yield wx, app


async def _idle(app) -> None:
    await asyncio.wait_for(app[GENERATOR].idle(), 10)


# -- voice -----------------------------------------------------------------------------------------------

async def test_a_voice_without_recognition_is_downloaded_converted_heard_and_answered_once(server, llm, api):
    wx, app = server
    voice = amr_voice(2.0)
    media_id = api.add_media(voice, "audio/amr")
    llm.default = Script(text="明天晴。")
    d = await wx.deliver(wx.voice_message("o_voice", media_id=media_id))
    assert d.content == "「今天天气怎么样」\n\n明天晴。"
    await _idle(app)
    assert api.media_gets == [media_id]
    [heard] = llm.transcriptions
    assert heard.model == "whisper-1" and heard.api_key == "sk-test" and heard.filename.endswith(".mp3")
    assert abs(audio_seconds(heard.audio) - 2.0) < 0.15  # ffmpeg's MP3 holds the whole voice
    [question] = llm.requests
    assert question.messages[-1] == {"role": "user", "content": "今天天气怎么样"}
    ledger = Ledger(app[DB])
    assert await ledger.balance("o_voice") == 10 - 1 - 2  # the answer and the hearing, charged once
    assert sorted(e.kind for e in await ledger.history("o_voice")) == ["reserve", "settle", "trial"]


async def test_a_voice_with_recognition_is_used_without_any_download(server, llm, api):
    wx, app = server
    d = await wx.send_voice("o_rec", recognition="北京有多大")
    assert d.content.startswith("「北京有多大」\n\n")
    await _idle(app)
    assert api.media_gets == [] and llm.transcriptions == []
    assert llm.requests[-1].messages[-1]["content"] == "北京有多大"
    assert await Ledger(app[DB]).balance("o_rec") == 10 - 1  # WeChat heard it: no speech cost


async def test_an_owner_who_prefers_their_own_speech_model_transcribes_even_with_recognition(tmp_path, llm, api,
                                                                                            cdn):
    cfg = _cfg(tmp_path, llm, api, cdn, speech={"use_recognition": False})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            media_id = api.add_media(amr_voice(1.0), "audio/amr")
            d = await wx.deliver(wx.voice_message("o_own", recognition="听错了", media_id=media_id))
            assert d.content.startswith("「今天天气怎么样」")
            await _idle(app)
    assert api.media_gets == [media_id]


async def test_a_voice_in_which_nothing_was_heard_charges_nothing(server, llm, api):
    wx, app = server
    llm.heard = ""
    media_id = api.add_media(amr_voice(1.0), "audio/amr")
    d = await wx.deliver(wx.voice_message("o_quiet", media_id=media_id))
    assert "没有识别出语音" in d.content
    assert llm.requests == []
    assert [e.kind for e in await Ledger(app[DB]).history("o_quiet")] == []


async def test_an_expired_voice_and_a_failing_speech_endpoint_get_a_polite_reply(server, llm, api):
    wx, app = server
    d = await wx.deliver(wx.voice_message("o_gone", media_id="expired-id"))
    assert d.content == "抱歉，暂时无法处理语音消息，请直接发送文字。"
    assert api.media_gets == ["expired-id"] and llm.transcriptions == []
    llm.heard = lambda rec: (_ for _ in ()).throw(RuntimeError("boom"))  # the fake answers 500
    d = await wx.deliver(wx.voice_message("o_gone", media_id=api.add_media(amr_voice(0.5), "audio/amr")))
    assert d.content == "抱歉，暂时无法处理语音消息，请直接发送文字。"
    assert llm.requests == []


async def test_without_the_converter_a_voice_gets_a_polite_reply(tmp_path, llm, api, cdn):
    cfg = _cfg(tmp_path, llm, api, cdn, speech={"ffmpeg": str(tmp_path / "no-ffmpeg")})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            media_id = api.add_media(amr_voice(0.5), "audio/amr")
            d = await wx.deliver(wx.voice_message("o_noff", media_id=media_id))
    assert d.content == "抱歉，暂时无法处理语音消息，请直接发送文字。"
    assert llm.transcriptions == [] and llm.requests == []


async def test_a_slow_transcription_gets_the_hint_and_the_answer_is_fetched_later(server, llm, api):
    wx, app = server
    llm.transcribe_delay = 1.7  # past all three deliveries of the (scaled) window
    media_id = api.add_media(amr_voice(0.5), "audio/amr")
    d = await wx.deliver(wx.voice_message("o_slow", media_id=media_id))
    assert d.content == "正在思考中，请稍候回复「继续」获取回答。"
    await asyncio.sleep(0.6)  # the question's own deliveries (2 s from its arrival) are over
    await _idle(app)
    d = await wx.send_text("o_slow", "继续")
    assert d.content == "「今天天气怎么样」\n\n你好，我是测试模型。"
    # hearing outlasted the deciding lease many times over, renewed all along: the retries waited
    # instead of taking the decision over (no second hearing, no second answer)
    assert len(llm.transcriptions) == 1 and len(llm.requests) == 1


async def test_a_voice_whose_host_died_hearing_it_is_heard_by_the_last_delivery_which_still_answers_in_time(
        server, llm, api):
    # What a host killed while hearing leaves: the message recorded (two deliveries so far), no
    # decision, its deciding lease run out. WeChat's last delivery takes the decision over; hearing
    # outlasts its window, so it answers with the hint in time (not WeChat's error page), the hearing
    # goes on, and the answer is fetched with 继续.
    wx, app = server
    llm.transcribe_delay = 1.0
    message = wx.voice_message("o_heir", media_id=api.add_media(amr_voice(0.5), "audio/amr"), msg_id=777001)
    inbound, now = InboundRepo(app[DB]), app[DB].clock()
    for _ in range(2):
        await inbound.receive("777001", "o_heir", "voice", now - 1.3, deciding_until=now - 0.5)
    d = await wx.deliver(message)
    assert d.attempt == 1 and d.content == "正在思考中，请稍候回复「继续」获取回答。"
    await asyncio.sleep(0.9)  # the hearing, then the answer
    await _idle(app)
    d = await wx.send_text("o_heir", "继续")
    assert d.content == "「今天天气怎么样」\n\n你好，我是测试模型。"
    assert len(llm.transcriptions) == 1 and len(llm.requests) == 1
    assert await Ledger(app[DB]).balance("o_heir") == 10 - 1 - 2


# -- pictures --------------------------------------------------------------------------------------------

def _image_part(message: dict) -> bytes:
    text, image = message["content"]
    assert text["type"] == "text" and image["type"] == "image_url"
    prefix, _, b64 = image["image_url"]["url"].partition(",")
    assert prefix == "data:image/jpeg;base64"
    return base64.b64decode(b64)


async def test_a_picture_then_a_text_go_to_the_vision_model_together(server, llm, cdn):
    wx, app = server
    picture = jpeg()
    url = cdn.add("/mmbiz_jpg/abc/0", picture)
    llm.default = Script(text="一只猫。")
    sent = asyncio.create_task(wx.deliver(wx.image_message("o_pic", pic_url=url)))
    await asyncio.sleep(0.1)
    d = await wx.send_text("o_pic", "这是什么动物？")
    assert d.content == "一只猫。"
    assert (await sent).is_empty  # the picture's own reply is `success`: the text carried the answer
    await _idle(app)
    [question] = llm.requests
    assert question.model == "gpt-4o-mini"
    assert question.messages[-1]["content"][0]["text"] == "这是什么动物？"
    assert _image_part(question.messages[-1]) == picture
    assert await Ledger(app[DB]).balance("o_pic") == 10 - 1 - 1  # cost + image_cost
    # the conversation keeps a placeholder, not the bytes
    await wx.send_text("o_pic", "它几岁了？")
    await _idle(app)
    history = llm.requests[-1].messages
    assert {"role": "user", "content": "[图片] 这是什么动物？"} in history
    assert all(isinstance(m["content"], str) for m in history)


async def test_a_picture_alone_is_asked_about_with_the_default_prompt(server, llm, api):
    wx, app = server
    picture = jpeg(32, 32)
    media_id = api.add_media(picture, "image/jpeg")
    d = await wx.deliver(wx.image_message("o_alone", pic_url="", media_id=media_id))  # no PicUrl: media/get
    assert d.content == "你好，我是测试模型。"
    [question] = llm.requests
    assert question.messages[-1]["content"][0]["text"] == "描述这张图片"
    assert _image_part(question.messages[-1]) == picture
    assert api.media_gets == [media_id]


async def test_a_picture_for_a_tier_without_a_vision_model_gets_a_polite_reply(tmp_path, llm, api, cdn):
    cfg = _cfg(tmp_path, llm, api, cdn, chat={"default_model": "text-only"},
               rules={"tier_models": {"free": ["text-only"], "vip": ["gpt-4o-mini", "text-only"]}})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            d = await wx.deliver(wx.image_message("o_free", pic_url=cdn.add("/p/1", jpeg())))
    assert d.content == "当前可用的模型看不了图片。能看图片的模型：GPT-4o mini。"
    assert llm.requests == [] and cdn.requests == []


async def test_a_follower_whose_model_is_blind_gets_a_vision_model_of_their_tier(tmp_path, llm, api, cdn):
    cfg = _cfg(tmp_path, llm, api, cdn, chat={"default_model": "text-only"})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            d = await wx.deliver(wx.image_message("o_blind", pic_url=cdn.add("/p/2", jpeg())))
            assert d.content == "你好，我是测试模型。"
    assert llm.requests[-1].model == "gpt-4o-mini"


async def test_a_picture_url_on_a_foreign_host_is_refused_and_never_fetched(server, llm, api):
    wx, app = server
    async with FakeCDN() as foreign:
        url = foreign.add("/internal/secret", jpeg())
        d = await wx.deliver(wx.image_message("o_ssrf", pic_url=url.replace("127.0.0.1", "localhost")))
        assert d.content == "抱歉，这张图片无法读取，请重新发送。"
        d = await wx.deliver(wx.image_message("o_ssrf", pic_url="file:///etc/passwd"))
        assert d.content == "抱歉，这张图片无法读取，请重新发送。"
    assert foreign.requests == [] and llm.requests == [] and api.media_gets == []


async def test_what_is_not_a_picture_or_too_large_is_refused_and_refunded(tmp_path, llm, api, cdn):
    cfg = _cfg(tmp_path, llm, api, cdn, media={"max_picture_bytes": 4096})
    async with running(cfg) as (url, app):
        async with FakeWeChat(f"{url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            page = cdn.add("/p/html", b"<html>login</html>", "text/html")
            d = await wx.deliver(wx.image_message("o_bad", pic_url=page, media_id=""))
            assert d.content == "抱歉，这张图片无法读取，请重新发送。"
            fake = cdn.add("/p/fake", b"not a jpeg at all", "image/jpeg")
            d = await wx.deliver(wx.image_message("o_bad", pic_url=fake, media_id=""))
            assert d.content == "抱歉，这张图片无法读取，请重新发送。"
            big = cdn.add("/p/big", jpeg(1024, 1024, noise=True))
            d = await wx.deliver(wx.image_message("o_bad", pic_url=big, media_id=""))
            assert d.content == "抱歉，这张图片无法读取，请重新发送。"
            await _idle(app)
    assert llm.requests == []
    async with running(cfg) as (_, app):
        assert await Ledger(app[DB]).balance("o_bad") == 10  # every reservation refunded


async def test_doctor_names_a_missing_converter_in_one_line(tmp_path, llm, api, cdn):
    from tests.harness import config_data, write_toml
    from tests.ownerkit import mpgpt

    data = config_data(tmp_path, llm.base_url, wechat={"api_base": api.base_url},
                       speech={"channel": "fake", "ffmpeg": "no-such-ffmpeg"})
    result = await mpgpt(write_toml(tmp_path / "mpgpt.toml", data), "doctor", "--json")
    speech = next(c for c in result.json() if c["name"] == "speech")
    assert result.code == 1 and speech["result"] == "fail"
    assert speech["detail"] == ("speech.ffmpeg: 'no-such-ffmpeg' not found — voice messages cannot be converted "
                                "(install Debian's ffmpeg: apt-get install ffmpeg)")


async def test_simulate_sends_a_voice_file_and_a_picture_as_wechat_would(tmp_path, llm, cdn):
    import sys
    from pathlib import Path

    from tests.harness import config_data, free_port, write_toml

    media_port = free_port()
    media_base = f"http://127.0.0.1:{media_port}"  # the simulator plays WeChat's media server here
    cfg = _cfg(tmp_path, llm, type("A", (), {"base_url": media_base})(), cdn)
    data = config_data(tmp_path, llm.base_url, wechat={"api_base": media_base})
    (tmp_path / "voice.amr").write_bytes(amr_voice(1.0))
    picture = jpeg()
    (tmp_path / "cat.jpg").write_bytes(picture)
    async with running(cfg) as (url, app):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scripts.cli", "simulate", "--config", str(write_toml(tmp_path / "sim.toml", data)),
            "--url", f"{url}/wechat", "--media-port", str(media_port), cwd=Path(__file__).resolve().parents[2],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        lines = f"/voice {tmp_path / 'voice.amr'}\n/picture {tmp_path / 'cat.jpg'} 这是什么？\n".encode()
        out, err = await asyncio.wait_for(proc.communicate(lines), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines()[:3] == ["「今天天气怎么样」", "", "你好，我是测试模型。"]
    assert out.decode().splitlines()[3] == "你好，我是测试模型。"
    assert len(llm.transcriptions) == 1
    assert _image_part(llm.requests[-1].messages[-1]) == picture
