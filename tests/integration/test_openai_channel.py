"""OpenAIChannel against the fake provider over real HTTP (the SDK and its aiohttp transport unmodified)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from bot.providers.base import ChatMessage, Delta, ProviderError, Usage
from bot.providers.openai_channel import OpenAIChannel
from tests.fakes.llm import FakeLLM, Script

MESSAGES = [ChatMessage("system", "be brief"), ChatMessage("user", "你好")]


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as fake:
        yield fake


def make_channel(base_url: str, **kw: float) -> OpenAIChannel:
    opts = {"connect_timeout": 1.0, "first_token_timeout": 1.0, "total_timeout": 3.0, "max_streams": 8} | kw
    return OpenAIChannel("main", base_url, "sk-test", ["gpt-4o-mini"], **opts)  # type: ignore[arg-type]


@pytest.fixture
async def channel(llm: FakeLLM) -> AsyncIterator[OpenAIChannel]:
    ch = make_channel(llm.base_url)
    yield ch
    await ch.aclose()


async def collect(channel: OpenAIChannel) -> tuple[list[str], list[Usage]]:
    texts: list[str] = []
    usages: list[Usage] = []
    item: Delta
    async for item in channel.stream("gpt-4o-mini", MESSAGES):
        if isinstance(item, Usage):
            usages.append(item)
        else:
            assert not usages, "text arrived after the usage"
            texts.append(item)
    return texts, usages


async def failure(channel: OpenAIChannel) -> tuple[ProviderError, list[str]]:
    texts: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for item in channel.stream("gpt-4o-mini", MESSAGES):
            if isinstance(item, str):
                texts.append(item)
    return info.value, texts


async def test_yields_deltas_in_order_then_the_final_usage(llm: FakeLLM, channel: OpenAIChannel) -> None:
    llm.queue(Script(chunks=["一", "二", "三", "四"], prompt_tokens=21, completion_tokens=9))
    texts, usages = await collect(channel)
    assert texts == ["一", "二", "三", "四"]
    assert usages == [Usage(21, 9, estimated=False)]


async def test_sends_the_request_the_provider_expects(llm: FakeLLM, channel: OpenAIChannel) -> None:
    await collect(channel)
    (req,) = llm.requests
    assert req.path == "/v1/chat/completions"
    assert req.model == "gpt-4o-mini"
    assert req.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "你好"}]
    assert req.authorization == "Bearer sk-test"
    assert req.stream is True
    assert req.body["stream_options"] == {"include_usage": True}


async def test_cumulative_usage_in_every_chunk_counts_the_last_not_the_sum(llm: FakeLLM,
                                                                           channel: OpenAIChannel) -> None:
    llm.queue(Script(chunks=["a", "b", "c", "d", "e"], usage="cumulative", prompt_tokens=10, completion_tokens=5))
    texts, usages = await collect(channel)
    assert "".join(texts) == "abcde"
    assert usages == [Usage(10, 5)]


async def test_usage_in_the_finish_chunk_is_taken(llm: FakeLLM, channel: OpenAIChannel) -> None:
    llm.queue(Script(text="zhipu style", usage="with_finish", prompt_tokens=3, completion_tokens=2))
    _, usages = await collect(channel)
    assert usages == [Usage(3, 2)]


async def test_no_usage_from_the_provider_gives_a_flagged_estimate(llm: FakeLLM, channel: OpenAIChannel) -> None:
    llm.queue(Script(text="这是一个没有用量的回答", usage="none"))
    _, usages = await collect(channel)
    (usage,) = usages
    assert usage.estimated is True
    assert usage.completion_tokens == 11  # one per CJK character
    assert usage.prompt_tokens > 0  # the prompt is estimated too, never ignored


@pytest.mark.parametrize(
    ("script", "kind", "status"),
    [
        (Script.rate_limited(), "rate_limited", 429),
        (Script.server_error(500), "server", 500),
        (Script.server_error(503), "server", 503),
        (Script.unauthorized(), "auth", 401),
        (Script.error(403, "Country, region, or territory not supported", code="unsupported_country"), "auth", 403),
        (Script.insufficient_quota(), "auth", 429),
        (Script.error(402, "Insufficient Balance", type="unknown_error"), "auth", 402),
        (Script.bad_request(), "bad_request", 400),
        (Script.error(404, "The model `gpt-5` does not exist", code="model_not_found"), "bad_request", 404),
        (Script.error(422, "Unprocessable"), "bad_request", 422),
        (Script.content_filter(), "refused", 400),
        (Script.zhipu_error(400, "1301", "系统检测到输入或生成内容可能包含不安全或敏感内容"), "refused", 400),
    ],
)
async def test_each_error_answer_becomes_the_right_kind(llm: FakeLLM, channel: OpenAIChannel, script: Script,
                                                        kind: str, status: int) -> None:
    llm.queue(script)
    err, texts = await failure(channel)
    assert (err.kind, err.status) == (kind, status)
    assert texts == []


async def test_a_stream_cut_half_way_is_a_protocol_error_after_the_text_that_came(
        llm: FakeLLM, channel: OpenAIChannel) -> None:
    llm.queue(Script(chunks=["one ", "two ", "three ", "four"], cut_after=2))
    err, texts = await failure(channel)
    assert err.kind == "protocol"
    assert texts == ["one ", "two "]


async def test_a_stream_closed_cleanly_but_without_finish_is_a_protocol_error(llm: FakeLLM,
                                                                               channel: OpenAIChannel) -> None:
    llm.queue(Script(chunks=["one ", "two "], cut_after=0))
    err, texts = await failure(channel)
    assert err.kind == "protocol"
    assert texts == []


async def test_a_malformed_chunk_is_a_protocol_error(llm: FakeLLM, channel: OpenAIChannel) -> None:
    llm.queue(Script(chunks=["ok ", "then ", "garbage"], malformed_after=1))
    err, texts = await failure(channel)
    assert err.kind == "protocol"
    assert texts == ["ok "]


async def test_a_content_filter_finish_is_refused(llm: FakeLLM, channel: OpenAIChannel) -> None:
    llm.queue(Script(chunks=["partial"], finish_reason="content_filter"))
    err, texts = await failure(channel)
    assert err.kind == "refused"
    assert texts == ["partial"]


async def test_no_first_token_in_time_is_a_timeout(llm: FakeLLM) -> None:
    ch = make_channel(llm.base_url, first_token_timeout=0.2)
    llm.queue(Script(first_delay=1.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    err, _ = await failure(ch)
    await ch.aclose()
    assert err.kind == "timeout"
    assert loop.time() - started < 0.6


async def test_slow_response_headers_count_against_the_first_token_deadline(llm: FakeLLM) -> None:
    ch = make_channel(llm.base_url, first_token_timeout=0.2)
    llm.queue(Script(header_delay=1.0))
    err, _ = await failure(ch)
    await ch.aclose()
    assert err.kind == "timeout"


async def test_an_answer_slower_than_the_total_deadline_times_out_after_its_text(llm: FakeLLM) -> None:
    ch = make_channel(llm.base_url, first_token_timeout=0.5, total_timeout=0.3)
    llm.queue(Script(chunks=["a", "b", "c", "d"], chunk_delay=0.15))
    err, texts = await failure(ch)
    await ch.aclose()
    assert err.kind == "timeout"
    assert 1 <= len(texts) < 4


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: the connection is refused
        ch = make_channel(f"http://127.0.0.1:{port}/v1")
        err, _ = await failure(ch)
        await ch.aclose()
    assert err.kind == "connect"


async def test_max_streams_bounds_concurrent_requests(llm: FakeLLM) -> None:
    ch = make_channel(llm.base_url, max_streams=2, connect_timeout=2.0, first_token_timeout=2.0)
    llm.default = Script(chunks=["x", "y"], first_delay=0.1)
    results = await asyncio.gather(*(collect(ch) for _ in range(5)))
    await ch.aclose()
    assert all("".join(texts) == "xy" for texts, _ in results)
    assert llm.max_open_streams == 2
    assert ch.in_flight == 0


async def test_a_consumer_that_stops_early_releases_the_stream_slot(llm: FakeLLM) -> None:
    ch = make_channel(llm.base_url, max_streams=1)
    llm.queue(Script(chunks=["a", "b", "c"], chunk_delay=0.05))
    agen = ch.stream("gpt-4o-mini", MESSAGES)
    assert await agen.__anext__() == "a"
    await agen.aclose()
    assert ch.in_flight == 0
    texts, usages = await collect(ch)
    await ch.aclose()
    assert texts and usages
