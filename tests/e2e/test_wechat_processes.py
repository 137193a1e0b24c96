"""Two `mpgpt serve` processes on one database, and restarts: state lives in storage, not memory.
Every test here runs on SQLite (one file) and on PostgreSQL (the several-hosts engine)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from storage.db import Database
from storage.ledger import Ledger
from storage.postgres import PostgresDatabase
from tests.fakes.llm import Script
from tests.fakes.media import amr_voice
from tests.fakes.wechat import FakeWeChat
from tests.fakes.wechat_api import FakeWeChatAPI
from tests.harness import APP_ID, APP_SECRET, TOKEN, ServerProcess, config_data, free_port, write_toml


@pytest.fixture
def storage(engine, tmp_path, request) -> dict:
    """The [storage] table of the test's database on either engine."""
    if engine == "postgresql":
        return {"url": request.getfixturevalue("postgres_url")}
    return {"path": str(tmp_path / "mpgpt.db")}


@pytest.fixture
def config_file(tmp_path, llm, storage):
    return write_toml(tmp_path / "config.toml", config_data(tmp_path, llm.base_url, log={"level": "info"},
                                                           storage=storage))


def _open(storage: dict) -> Database:
    return PostgresDatabase(storage["url"], pool_size=2) if "url" in storage else Database(storage["path"])


@pytest.fixture
def two_servers(config_file):
    a = ServerProcess(config_file, free_port()).start()
    b = ServerProcess(config_file, free_port()).start()
    yield a, b
    a.stop()
    b.stop()


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, query: dict, window: float):
    try:
        async with session.post(url, data=body, params=query, timeout=aiohttp.ClientTimeout(total=window)) as r:
            return r.status, await r.read()
    except TimeoutError:
        return None


async def test_retries_of_one_msgid_landing_on_two_processes_make_one_generation(two_servers, llm):
    a, b = two_servers
    llm.default = Script(text="两个进程，一个回答。", first_delay=0.9)
    wx = FakeWeChat(f"{a.url}/wechat", TOKEN, APP_ID, window=0.6)
    body, query = wx.build_request(wx.text_message("o_two", "问题"))
    answers = []
    async with aiohttp.ClientSession() as session:
        # WeChat's three deliveries, alternating between the processes
        for url in (a.url, b.url, a.url):
            got = await _post(session, f"{url}/wechat", body, query, 0.6)
            if got is not None:
                answers.append((url, got))
                break
    await wx.close()
    assert answers, "no delivery was answered"
    assert b"\xe4\xb8\xa4\xe4\xb8\xaa\xe8\xbf\x9b\xe7\xa8\x8b" in answers[0][1][1]  # 两个进程
    await asyncio.sleep(0.3)
    assert len(llm.requests) == 1


async def test_many_messages_delivered_to_both_processes_at_once_generate_once_each(two_servers, llm):
    a, b = two_servers
    llm.default = Script(text="同时到达。", first_delay=0.1)
    wx = FakeWeChat(f"{a.url}/wechat", TOKEN, APP_ID, window=0.6)
    requests = [wx.build_request(wx.text_message(f"o_user{i}", f"问题{i}")) for i in range(12)]
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(
            _post(session, f"{url}/wechat", body, query, 2.0)
            for body, query in requests for url in (a.url, b.url)))
    await wx.close()
    assert all(r is not None and r[0] == 200 and "同时到达".encode() in r[1] for r in results)
    assert len(llm.requests) == 12


async def test_an_answer_pending_when_the_process_dies_is_still_delivered_after_a_restart(config_file, llm):
    llm.default = Script(text="重启之后的回答。", first_delay=30.0)
    first = ServerProcess(config_file, free_port()).start()
    wx = FakeWeChat(f"{first.url}/wechat", TOKEN, APP_ID, window=0.6)
    d = await wx.send_text("o_restart", "问题")
    assert "正在思考" in (d.content or "")
    first.kill()  # a crash: no cleanup, the generation's lease is left to expire
    llm.default = Script(text="重启之后的回答。")
    second = ServerProcess(config_file, free_port()).start()
    try:
        wx.url = f"{second.url}/wechat"
        for _ in range(50):  # the new process takes the generation over once the lease expires
            await asyncio.sleep(0.1)
            if len(llm.requests) >= 2:
                break
        await asyncio.sleep(0.3)
        d = await wx.send_text("o_restart", "继续")
        assert d.content == "重启之后的回答。"
    finally:
        await wx.close()
        second.stop()


async def test_a_finished_answer_waiting_for_fetch_survives_a_restart(config_file, llm):
    llm.default = Script(chunks=["已经完成的部分。后", "面。"], chunk_delay=2.0)
    first = ServerProcess(config_file, free_port()).start()
    wx = FakeWeChat(f"{first.url}/wechat", TOKEN, APP_ID, window=0.6)
    d = await wx.send_text("o_keep", "问题")
    assert d.content.startswith("已经完成的部分。") and "面。" not in d.content
    await asyncio.sleep(1.0)  # the generation finishes
    first.stop()
    second = ServerProcess(config_file, free_port()).start()
    try:
        wx.url = f"{second.url}/wechat"
        d = await wx.send_text("o_keep", "继续")
        assert d.content == "后面。"
        assert len(llm.requests) == 1
    finally:
        await wx.close()
        second.stop()


async def test_a_host_killed_with_answers_in_flight_loses_none_and_charges_none_twice(tmp_path, llm, storage):
    data = config_data(tmp_path, llm.base_url, log={"level": "info"}, storage=storage,
                       quota={"trial_credits": 10, "daily_free": 0}, rules={"rate_limit": 1000})
    config = write_toml(tmp_path / "config.toml", data)
    llm.default = Script(text="没有丢的回答。", first_delay=30.0)
    doomed, survivor = ServerProcess(config, free_port()).start(), ServerProcess(config, free_port()).start()
    users = [f"o_inflight_{i}" for i in range(6)]
    try:
        async with FakeWeChat(f"{doomed.url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            hints = await asyncio.gather(*(wx.send_text(u, "问题") for u in users))
            assert all("正在思考" in (d.content or "") for d in hints)
            doomed.kill()  # SIGKILL with six generations in flight, their credits reserved
            llm.default = Script(text="没有丢的回答。")
            for _ in range(100):  # the survivor takes each generation over once its lease expires
                await asyncio.sleep(0.1)
                if len(llm.requests) >= 2 * len(users):
                    break
            await asyncio.sleep(0.5)
            wx.url = f"{survivor.url}/wechat"
            fetched = await asyncio.gather(*(wx.send_text(u, "继续") for u in users))
        assert [d.content for d in fetched] == ["没有丢的回答。"] * len(users)
        assert len(llm.requests) == 2 * len(users)  # each restarted once, by one host
    finally:
        doomed.stop()
        survivor.stop()
    async with _open(storage) as db:
        ledger = Ledger(db)
        assert [await ledger.balance(u) for u in users] == [9] * len(users)
        assert await ledger.check_invariant() == []


async def test_a_message_whose_host_dies_deciding_it_is_decided_by_a_retry_on_the_other(tmp_path, llm, storage):
    # A voice is slow to decide (downloaded, converted, heard). Its first delivery's host is killed
    # while hearing it; WeChat's retry lands on the other host, which finds the deciding lease run
    # out and decides the message itself: the follower gets the answer (in a delivery, or with 继续),
    # asked of the model once and charged once.
    async with FakeWeChatAPI(APP_ID, APP_SECRET) as api:
        data = config_data(tmp_path, llm.base_url, log={"level": "info"}, storage=storage,
                           wechat={"api_base": api.base_url}, speech={"channel": "fake", "model": "whisper-1",
                                                                      "cost": 2},
                           quota={"trial_credits": 10, "daily_free": 0}, rules={"rate_limit": 1000})
        config = write_toml(tmp_path / "config.toml", data)
        llm.default = Script(text="明天晴。")
        llm.transcribe_delay = 0.5
        doomed, survivor = ServerProcess(config, free_port()).start(), ServerProcess(config, free_port()).start()
        try:
            wx = FakeWeChat(f"{doomed.url}/wechat", TOKEN, APP_ID, window=0.6)
            body, query = wx.build_request(wx.voice_message("o_died_deciding", media_id=api.add_media(
                amr_voice(0.5), "audio/amr")))
            loop = asyncio.get_running_loop()
            async with aiohttp.ClientSession() as session:
                arrived = loop.time()
                first = asyncio.ensure_future(_post(session, f"{doomed.url}/wechat", body, query, 0.6))
                while not api.media_gets and loop.time() < arrived + 0.5:  # the doomed host is hearing it
                    await asyncio.sleep(0.01)
                doomed.kill()
                await asyncio.gather(first, return_exceptions=True)  # its connection dies with it
                await asyncio.sleep(arrived + 0.6 - loop.time())  # WeChat's retries, a window apart
                replies = [got[1].decode() for got in [await _post(session, f"{survivor.url}/wechat", body, query,
                                                                   0.6) for _ in range(2)] if got is not None]
            wx.url = f"{survivor.url}/wechat"
            if not any("明天晴" in r for r in replies):
                # its deliveries ended before the answer did (a busy machine): it is owed, fetched with 继续
                await asyncio.sleep(max(0.0, arrived + 2.1 - loop.time()))
                for _ in range(30):
                    fetched = (await wx.send_text("o_died_deciding", "继续")).content or ""
                    replies.append(fetched)
                    if "明天晴" in fetched:
                        break
                    await asyncio.sleep(0.1)
            await wx.close()
            assert any("明天晴" in r for r in replies), replies
            assert len(llm.requests) == 1  # asked of the model once
        finally:
            doomed.stop()
            survivor.stop()
    async with _open(storage) as db:
        ledger = Ledger(db)
        assert await ledger.balance("o_died_deciding") == 10 - 1 - 2  # the answer and the hearing, once
        assert await ledger.check_invariant() == []


@pytest.mark.parametrize("event_loop,runs_on", [("auto", "uvloop"), ("asyncio", "asyncio")])
async def test_serve_answers_on_the_event_loop_the_config_names(tmp_path, llm, event_loop, runs_on):
    data = config_data(tmp_path, llm.base_url, log={"level": "info"}, server={"event_loop": event_loop})
    server = ServerProcess(write_toml(tmp_path / "config.toml", data), free_port()).start()
    try:
        llm.default = Script(text="在哪个循环上都一样。")
        async with FakeWeChat(f"{server.url}/wechat", TOKEN, APP_ID, window=0.6) as wx:
            reply = await wx.send_text("o_loop", "问题")
    finally:
        server.stop()
    assert reply.content == "在哪个循环上都一样。"
    assert f'"event_loop": "{runs_on}"' in server.log_path.read_text()
