"""ZhipuAIChannel against the fake provider's ZhipuAI path over real HTTP (the SDK unmodified)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
from aiohttp import web

from bot.providers.base import ChatMessage, ProviderError, Usage
from bot.providers.zhipuai_channel import ZhipuAIChannel, make_executor
from tests.fakes.llm import FakeLLM, Script

MESSAGES = [ChatMessage("user", "你好")]
KEY = "3f6d1c2a9b8e4f70.Zx9qLr2sT4uV6wXy"


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = make_executor(8)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM(zhipu_keys=[KEY]) as fake:
        yield fake


def make_channel(llm: FakeLLM, executor: ThreadPoolExecutor, **kw: float) -> ZhipuAIChannel:
    opts = {"connect_timeout": 1.0, "first_token_timeout": 1.0, "total_timeout": 3.0, "max_streams": 8} | kw
    return ZhipuAIChannel("glm", llm.zhipu_base_url, KEY, ["glm-4-flash"], executor=executor,
                          **opts)  # type: ignore[arg-type]


@pytest.fixture
async def channel(llm: FakeLLM, executor: ThreadPoolExecutor) -> AsyncIterator[ZhipuAIChannel]:
    ch = make_channel(llm, executor)
    yield ch
    await ch.aclose()


async def collect(channel: ZhipuAIChannel) -> tuple[list[str], list[Usage]]:
    texts: list[str] = []
    usages: list[Usage] = []
    async for item in channel.stream("glm-4-flash", MESSAGES):
        if isinstance(item, Usage):
            usages.append(item)
        else:
            assert not usages, "text arrived after the usage"
            texts.append(item)
    return texts, usages


async def failure(channel: ZhipuAIChannel) -> tuple[ProviderError, list[str]]:
    texts: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for item in channel.stream("glm-4-flash", MESSAGES):
            if isinstance(item, str):
                texts.append(item)
    return info.value, texts


async def test_streams_deltas_and_takes_usage_from_the_finish_chunk(llm: FakeLLM, channel: ZhipuAIChannel) -> None:
    llm.queue(Script(chunks=["智", "谱", "你好"], prompt_tokens=8, completion_tokens=3))
    texts, usages = await collect(channel)
    assert texts == ["智", "谱", "你好"]
    assert usages == [Usage(8, 3)]
    (req,) = llm.requests
    assert req.path == "/api/paas/v4/chat/completions"
    assert req.api_key == KEY
    assert req.stream is True
    assert req.messages == [{"role": "user", "content": "你好"}]


async def test_cumulative_usage_is_not_summed(llm: FakeLLM, channel: ZhipuAIChannel) -> None:
    llm.queue(Script(chunks=list("abcdef"), usage="cumulative", prompt_tokens=4, completion_tokens=6))
    _, usages = await collect(channel)
    assert usages == [Usage(4, 6)]


async def test_no_usage_gives_an_estimate(llm: FakeLLM, channel: ZhipuAIChannel) -> None:
    llm.queue(Script(text="没有用量", usage="none"))
    _, usages = await collect(channel)
    assert usages[0].estimated and usages[0].completion_tokens == 4


@pytest.mark.parametrize(
    ("script", "kind", "status"),
    [
        (Script.zhipu_error(429, "1302", "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"), "rate_limited", 429),
        (Script.zhipu_error(429, "1113", "您的账户已欠费，请充值后重试。"), "auth", 429),
        (Script.zhipu_error(401, "1002", "Authorization Token非法，请确认Authorization Token正确传递。"), "auth", 401),
        (Script.zhipu_error(400, "1301", "系统检测到输入或生成内容可能包含不安全或敏感内容，请您避免输入易产生敏感内容的提示语，感谢您的配合。"),
         "refused", 400),
        (Script.zhipu_error(400, "1211", "模型不存在，请检查模型代码。"), "bad_request", 400),
        (Script.zhipu_error(500, "500", "Internal Error"), "server", 500),
        (Script.zhipu_error(503, "1305", "当前API请求过多，请稍后重试。"), "rate_limited", 503),
    ],
)
async def test_each_zhipu_error_becomes_the_right_kind(llm: FakeLLM, channel: ZhipuAIChannel, script: Script,
                                                       kind: str, status: int) -> None:
    llm.queue(script)
    err, _ = await failure(channel)
    assert (err.kind, err.status) == (kind, status)


async def test_a_cut_stream_is_a_protocol_error(llm: FakeLLM, channel: ZhipuAIChannel) -> None:
    llm.queue(Script(chunks=["a", "b", "c"], cut_after=1))
    err, texts = await failure(channel)
    assert err.kind == "protocol"
    assert texts == ["a"]


async def test_a_malformed_chunk_is_a_protocol_error(llm: FakeLLM, channel: ZhipuAIChannel) -> None:
    llm.queue(Script(chunks=["a", "b"], malformed_after=1))
    err, texts = await failure(channel)
    assert err.kind == "protocol"
    assert texts == ["a"]


async def test_a_sensitive_finish_is_refused(llm: FakeLLM, channel: ZhipuAIChannel) -> None:
    llm.queue(Script(chunks=["一半"], finish_reason="sensitive"))
    err, texts = await failure(channel)
    assert err.kind == "refused"
    assert texts == ["一半"]


async def test_no_first_token_in_time_is_a_timeout(llm: FakeLLM, executor: ThreadPoolExecutor) -> None:
    ch = make_channel(llm, executor, first_token_timeout=0.2)
    llm.queue(Script(first_delay=0.6))
    started = time.monotonic()
    err, _ = await failure(ch)
    assert err.kind == "timeout"
    assert time.monotonic() - started < 0.5
    await ch.aclose()


async def test_a_jwt_signed_by_the_sdk_is_accepted_and_a_forged_one_is_not(llm: FakeLLM) -> None:
    assert llm._api_key("Bearer " + _jwt(KEY)) == KEY
    assert llm._api_key("Bearer " + _jwt(KEY.split(".")[0] + ".wrong-secret")) == ""


def _jwt(key: str) -> str:
    from zhipuai.core._jwt_token import generate_token

    return generate_token.__wrapped__(key)  # type: ignore[attr-defined]


async def test_a_consumer_that_stops_early_stops_the_worker(llm: FakeLLM, channel: ZhipuAIChannel) -> None:
    llm.queue(Script(chunks=[str(i) for i in range(50)], chunk_delay=0.02))
    agen = channel.stream("glm-4-flash", MESSAGES)
    assert await agen.__anext__() == "0"
    await agen.aclose()
    assert channel.in_flight == 0
    await asyncio.sleep(0.2)
    assert llm.open_streams == 0  # the worker closed the response at the next chunk


async def test_slow_zhipu_streams_do_not_delay_a_concurrent_aiohttp_request(llm: FakeLLM,
                                                                            channel: ZhipuAIChannel) -> None:
    """The SDK reads synchronously; run on the loop, each slow read would stall every other request."""
    async def pong(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", pong)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    # Each stream waits 150 ms for its first chunk and between chunks: a blocking read on the loop
    # would hold every ping for up to that long.
    llm.default = Script(chunks=[str(i) for i in range(4)], first_delay=0.15, chunk_delay=0.15)
    async with aiohttp.ClientSession() as http:

        async def ping_latencies(n: int) -> list[float]:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                async with http.get(f"http://127.0.0.1:{port}/ping") as r:
                    assert await r.text() == "pong"
                out.append(time.perf_counter() - t)
                await asyncio.sleep(0.01)
            return out

        baseline = await ping_latencies(20)
        streams = [asyncio.create_task(collect(channel)) for _ in range(4)]
        during = await ping_latencies(30)
        results = await asyncio.gather(*streams)
    await runner.cleanup()
    assert all(len(texts) == 4 for texts, _ in results)
    typical = statistics.median(during) - statistics.median(baseline)
    worst = max(during) - statistics.median(baseline)
    assert typical < 0.01, f"pings took {typical * 1000:.1f} ms longer during the streams"
    assert worst < 0.075, f"a ping waited {worst * 1000:.1f} ms longer during the streams"
