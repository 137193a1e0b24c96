"""The router over real channels and the fake provider on loopback, recording into real SQLite."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from bot.config import ModelConfig, RouterConfig
from bot.providers.base import ChatMessage, ProviderError, Usage
from bot.providers.catalogue import Catalogue
from bot.providers.openai_channel import OpenAIChannel
from bot.providers.router import ModelUnavailable, NoChannelAvailable, Route, Router, StreamCut, key_hash
from storage.db import Database
from storage.generations import DisabledChannelRepo, GenerationRepo
from tests.fakes.llm import FakeLLM, RecordedRequest, Script

MESSAGES = [ChatMessage("user", "hello")]
MODEL = "gpt-4o-mini"


class Clock:
    """The breaker's clock, moved by the test instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripts:
    """Per-channel scripts: each channel has its own key, the fake answers by key."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[Script]] = {}

    def __call__(self, req: RecordedRequest) -> Script | None:
        queue = self.by_key.get(req.api_key)
        return queue.pop(0) if queue else None

    def set(self, channel: str, *scripts: Script) -> None:
        self.by_key[f"sk-{channel}"] = list(scripts)


@pytest.fixture
async def scripts() -> Scripts:
    return Scripts()


@pytest.fixture
async def llm(scripts: Scripts) -> AsyncIterator[FakeLLM]:
    async with FakeLLM(Script(chunks=["ok ", "answer"]), script_for=scripts) as fake:
        yield fake


def tried(llm: FakeLLM) -> list[str]:
    return [r.api_key.removeprefix("sk-") for r in llm.requests]


async def make_router(llm: FakeLLM, specs: Sequence[tuple[str, int, int]], db: Database | None = None, *,
                      clock: Callable[[], float] | None = None, settings: RouterConfig | None = None,
                      models: dict[str, ModelConfig] | None = None, seed: int = 7,
                      first_token_timeout: float = 1.0, max_streams: int = 8) -> Router:
    routes = [Route(OpenAIChannel(name, llm.base_url, f"sk-{name}", [MODEL], connect_timeout=1.0,
                                  first_token_timeout=first_token_timeout, total_timeout=3.0,
                                  max_streams=max_streams), priority, weight, key_hash=key_hash(f"sk-{name}"))
              for name, priority, weight in specs]
    router = Router(routes, Catalogue(models or {}, [MODEL]), settings or RouterConfig(max_attempts=5),
                    generations=GenerationRepo(db) if db else None, disabled=DisabledChannelRepo(db) if db else None,
                    rng=random.Random(seed), clock=clock or Clock())
    await router.load_disabled()
    return router


async def run(router: Router, model: str = MODEL, msg_key: str | None = "m1") -> tuple[str, Usage | None]:
    text, usage = "", None
    async for item in router.stream(model, MESSAGES, user="o-user", msg_key=msg_key):
        if isinstance(item, Usage):
            usage = item
        else:
            text += item
    return text, usage


async def test_weights_one_to_three_share_4000_picks_within_three_percent(llm: FakeLLM) -> None:
    router = await make_router(llm, [("light", 0, 1), ("heavy", 0, 3)])
    picks = [router.pick(MODEL).name for _ in range(4000)]  # type: ignore[union-attr]
    share = picks.count("heavy") / len(picks)
    assert 0.72 <= share <= 0.78
    await router.aclose()


async def test_the_highest_priority_tier_serves_while_it_is_healthy(llm: FakeLLM) -> None:
    router = await make_router(llm, [("backup", 0, 100), ("main", 5, 1)])
    assert {router.pick(MODEL).name for _ in range(200)} == {"main"}  # type: ignore[union-attr]
    assert router.pick(MODEL, exclude=["main"]).name == "backup"  # type: ignore[union-attr]
    await router.aclose()


async def test_failover_chain_tries_each_channel_once_and_records_every_attempt(llm: FakeLLM, scripts: Scripts,
                                                                                db: Database) -> None:
    scripts.set("a", Script.server_error())
    scripts.set("b", Script.rate_limited())
    scripts.set("c", Script(header_delay=0.5))
    scripts.set("d", Script(chunks=["fine"], prompt_tokens=5, completion_tokens=1))
    router = await make_router(llm, [("a", 3, 1), ("b", 2, 1), ("c", 1, 1), ("d", 0, 1)], db,
                               first_token_timeout=0.2)
    text, usage = await run(router, msg_key="chain")
    await router.flush()
    assert text == "fine"
    assert usage == Usage(5, 1)
    assert tried(llm) == ["a", "b", "c", "d"]
    rows = await GenerationRepo(db).for_message("chain")
    assert [(r.channel, r.outcome, r.error_kind) for r in rows] == [
        ("a", "failed_over", "server"), ("b", "failed_over", "rate_limited"), ("c", "failed_over", "timeout"),
        ("d", "ok", None)]
    assert rows[-1].first_token_ms is not None and rows[-1].prompt_tokens == 5
    await router.aclose()


async def test_when_every_channel_fails_none_is_tried_twice_and_the_last_error_is_raised(
        llm: FakeLLM, scripts: Scripts, db: Database) -> None:
    for name in "abc":
        scripts.set(name, Script.server_error(502), Script.server_error(502))
    router = await make_router(llm, [("a", 0, 1), ("b", 0, 1), ("c", 0, 1)], db,
                               settings=RouterConfig(max_attempts=10))
    with pytest.raises(ProviderError) as info:
        await run(router, msg_key="all-fail")
    assert info.value.kind == "server"
    assert sorted(tried(llm)) == ["a", "b", "c"]
    await router.flush()
    rows = await GenerationRepo(db).for_message("all-fail")
    assert [r.outcome for r in rows] == ["failed_over", "failed_over", "failed"]
    await router.aclose()


async def test_max_attempts_bounds_the_failover_chain(llm: FakeLLM, scripts: Scripts) -> None:
    for name in "abcd":
        scripts.set(name, Script.server_error())
    router = await make_router(llm, [(n, 0, 1) for n in "abcd"], settings=RouterConfig(max_attempts=2))
    with pytest.raises(ProviderError):
        await run(router)
    assert len(tried(llm)) == 2
    await router.aclose()


@pytest.mark.parametrize(("script", "kind", "outcome"), [
    (Script.bad_request(), "bad_request", "failed"),
    (Script.content_filter(), "refused", "refused"),
])
async def test_a_bad_request_or_refused_content_is_not_retried(llm: FakeLLM, scripts: Scripts, db: Database,
                                                               script: Script, kind: str, outcome: str) -> None:
    scripts.set("a", script)
    scripts.set("b", script)
    router = await make_router(llm, [("a", 1, 1), ("b", 0, 1)], db)
    with pytest.raises(ProviderError) as info:
        await run(router, msg_key="4xx")
    assert info.value.kind == kind
    assert tried(llm) == ["a"]
    await router.flush()
    assert [r.outcome for r in await GenerationRepo(db).for_message("4xx")] == [outcome]
    # Not the channel's fault: it stays healthy.
    assert router.states()[0].state == "closed"
    await router.aclose()


async def test_no_failover_after_the_first_token(llm: FakeLLM, scripts: Scripts, db: Database) -> None:
    scripts.set("a", Script(chunks=["first ", "second ", "third"], cut_after=2))
    router = await make_router(llm, [("a", 1, 1), ("b", 0, 1)], db)
    got: list[str] = []
    with pytest.raises(StreamCut) as info:
        async for item in router.stream(MODEL, MESSAGES, user="o-user", msg_key="cut"):
            if isinstance(item, str):
                got.append(item)
    assert got == ["first ", "second "]
    assert info.value.kind == "protocol" and info.value.channel == "a"
    assert tried(llm) == ["a"]
    await router.flush()
    (row,) = await GenerationRepo(db).for_message("cut")
    assert row.outcome == "cut" and row.first_token_ms is not None
    await router.aclose()


async def test_breaker_opens_then_one_half_open_probe_closes_it(llm: FakeLLM, scripts: Scripts) -> None:
    clock = Clock()
    settings = RouterConfig(breaker_failures=2, breaker_window=10.0, breaker_cooldown=5.0, max_attempts=1)
    router = await make_router(llm, [("a", 0, 1)], clock=clock, settings=settings)
    scripts.set("a", Script.server_error(), Script.server_error())
    for _ in range(2):
        with pytest.raises(ProviderError):
            await run(router)
    assert router.states()[0].state == "open"
    with pytest.raises(NoChannelAvailable):
        await run(router)
    assert len(llm.requests) == 2  # an open breaker sends nothing

    clock.now += 5.0
    assert router.states()[0].state == "half_open"
    scripts.set("a", Script(chunks=["probe"], first_delay=0.2))
    probe = asyncio.create_task(run(router))
    await asyncio.sleep(0.1)
    with pytest.raises(NoChannelAvailable):  # one probe at a time
        await run(router)
    assert (await probe)[0] == "probe"
    assert router.states()[0].state == "closed"
    assert (await run(router))[0] == "ok answer"
    await router.aclose()


async def test_a_failed_half_open_probe_opens_the_breaker_again(llm: FakeLLM, scripts: Scripts) -> None:
    clock = Clock()
    settings = RouterConfig(breaker_failures=1, breaker_window=10.0, breaker_cooldown=5.0, max_attempts=1)
    router = await make_router(llm, [("a", 0, 1)], clock=clock, settings=settings)
    scripts.set("a", Script.server_error(), Script.server_error(503))
    with pytest.raises(ProviderError):
        await run(router)
    clock.now += 5.0
    with pytest.raises(ProviderError):
        await run(router)
    assert router.states()[0].state == "open"
    clock.now += 4.9
    assert router.states()[0].state == "open"
    await router.aclose()


async def test_failures_spread_beyond_the_window_do_not_open_the_breaker(llm: FakeLLM, scripts: Scripts) -> None:
    clock = Clock()
    settings = RouterConfig(breaker_failures=2, breaker_window=10.0, max_attempts=1)
    router = await make_router(llm, [("a", 0, 1)], clock=clock, settings=settings)
    scripts.set("a", Script.server_error(), Script.server_error())
    with pytest.raises(ProviderError):
        await run(router)
    clock.now += 11.0
    with pytest.raises(ProviderError):
        await run(router)
    assert router.states()[0].state == "closed"
    await router.aclose()


async def test_a_rejected_key_disables_the_channel_until_the_owner_enables_it(llm: FakeLLM, scripts: Scripts,
                                                                              db: Database) -> None:
    scripts.set("a", Script.unauthorized())
    router = await make_router(llm, [("a", 1, 1), ("b", 0, 1)], db)
    text, _ = await run(router)
    assert text == "ok answer"  # the next channel answered
    assert tried(llm) == ["a", "b"]
    states = {s.name: s for s in router.states()}
    assert states["a"].state == "disabled" and "key rejected" in (states["a"].disabled_reason or "")
    await run(router)
    assert tried(llm) == ["a", "b", "b"]
    await router.flush()

    # A restart (or the other process) keeps it off ...
    again = await make_router(llm, [("a", 1, 1), ("b", 0, 1)], db)
    assert again.states()[0].state == "disabled"
    # ... until the owner re-enables it.
    assert await again.enable("a")
    assert again.states()[0].state == "closed"
    assert (await DisabledChannelRepo(db).all()) == {}
    await router.aclose()
    await again.aclose()


async def test_a_disable_is_forgotten_once_the_owner_changes_the_key(llm: FakeLLM, db: Database) -> None:
    await DisabledChannelRepo(db).disable("a", key_hash("sk-old"), "key rejected", 1.0)
    router = await make_router(llm, [("a", 0, 1)], db)
    assert router.states()[0].state == "closed"
    await router.aclose()


async def test_an_exhausted_balance_disables_and_a_429_only_rests(llm: FakeLLM, scripts: Scripts) -> None:
    clock = Clock()
    router = await make_router(llm, [("poor", 1, 1), ("busy", 1, 1), ("spare", 0, 1)], clock=clock,
                               settings=RouterConfig(rate_limit_cooldown=2.0, max_attempts=5))
    scripts.set("poor", Script.insufficient_quota())
    scripts.set("busy", Script.rate_limited())
    await run(router)
    await run(router)
    states = {s.name: s.state for s in router.states()}
    assert states == {"poor": "disabled", "busy": "resting", "spare": "closed"}
    clock.now += 2.0
    assert {s.name: s.state for s in router.states()}["busy"] == "closed"
    await router.aclose()


async def test_an_unknown_model_is_refused_not_remapped(llm: FakeLLM) -> None:
    router = await make_router(llm, [("a", 0, 1)])
    with pytest.raises(ModelUnavailable) as info:
        await run(router, model="gpt-5")
    assert info.value.model == "gpt-5"
    assert llm.requests == []
    await router.aclose()


async def test_a_model_served_only_by_a_disabled_channel_is_unavailable(llm: FakeLLM) -> None:
    router = await make_router(llm, [("a", 0, 1)])
    router.routes[0].enabled = False
    with pytest.raises(ModelUnavailable):
        await run(router)
    assert router.states()[0].state == "off"
    await router.aclose()


async def test_an_alias_resolves_through_the_catalogue(llm: FakeLLM) -> None:
    router = await make_router(llm, [("a", 0, 1)], models={MODEL: ModelConfig(aliases=("mini", "4o小"))})
    assert (await run(router, model="MINI"))[0] == "ok answer"
    assert (await run(router, model="4o小"))[0] == "ok answer"
    assert [r.model for r in llm.requests] == [MODEL, MODEL]
    await router.aclose()


async def test_usage_is_recorded_from_the_final_chunk_only(llm: FakeLLM, scripts: Scripts, db: Database) -> None:
    scripts.set("a", Script(chunks=list("abcdefgh"), usage="cumulative", prompt_tokens=30, completion_tokens=8))
    router = await make_router(llm, [("a", 0, 1)], db)
    _, usage = await run(router, msg_key="usage")
    await router.flush()
    (row,) = await GenerationRepo(db).for_message("usage")
    assert usage == Usage(30, 8)
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (30, 8, False)
    await router.aclose()


async def test_an_estimate_is_recorded_as_estimated(llm: FakeLLM, scripts: Scripts, db: Database) -> None:
    scripts.set("a", Script(text="no usage here", usage="none"))
    router = await make_router(llm, [("a", 0, 1)], db)
    await run(router, msg_key="est")
    await router.flush()
    (row,) = await GenerationRepo(db).for_message("est")
    assert row.usage_estimated is True and row.completion_tokens > 0 and row.prompt_tokens > 0
    await router.aclose()


async def test_a_full_channel_is_skipped_for_a_free_one(llm: FakeLLM, scripts: Scripts) -> None:
    router = await make_router(llm, [("small", 1, 1), ("big", 0, 1)], max_streams=1)
    scripts.set("small", Script(chunks=["slow"], first_delay=0.3))
    first = asyncio.create_task(run(router))
    await asyncio.sleep(0.1)
    assert (await run(router))[0] == "ok answer"
    assert (await first)[0] == "slow"
    assert tried(llm) == ["small", "big"]
    await router.aclose()


async def test_a_caller_deadline_before_the_first_token_is_recorded_as_timed_out(
        llm: FakeLLM, scripts: Scripts, db: Database) -> None:
    scripts.set("a", Script(first_delay=0.5))
    router = await make_router(llm, [("a", 0, 1)], db)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await run(router, msg_key="deadline")
    await router.flush()
    (row,) = await GenerationRepo(db).for_message("deadline")
    assert row.outcome == "timed_out"
    assert router.states()[0].state == "closed"
    await router.aclose()


async def test_a_followers_own_key_goes_to_the_own_key_endpoint_without_failover(llm: FakeLLM, scripts: Scripts,
                                                                                 db: Database) -> None:
    router = await make_router(llm, [("a", 0, 1)], db)
    router._own_key_channel = lambda key, model: OpenAIChannel("own-key", llm.base_url, key, [model])
    scripts.set("follower", Script(chunks=["mine"]))
    text = "".join([x async for x in router.own_key_stream("sk-follower", "gpt-4o", MESSAGES, user="o-user",
                                                           msg_key="own") if isinstance(x, str)])
    assert text == "mine"
    scripts.set("revoked", Script.unauthorized())
    with pytest.raises(ProviderError) as info:
        async for _ in router.own_key_stream("sk-revoked", "gpt-4o", MESSAGES, user="o-user"):
            pass
    assert info.value.kind == "auth"
    assert tried(llm) == ["follower", "revoked"]  # the owner's channel was never used, nothing retried
    assert router.states()[0].state == "closed"  # a follower's bad key says nothing about the owner's channel
    await router.flush()
    (row,) = await GenerationRepo(db).for_message("own")
    assert (row.channel, row.outcome) == ("own-key", "ok")
    await router.aclose()


async def test_attempts_finishing_together_are_each_recorded_once(llm: FakeLLM, db: Database) -> None:
    # records that come while one is being written go together in the next write (several rows a
    # statement, more than one statement's worth among them): none lost, none twice
    router = await make_router(llm, [("a", 0, 1)], db, max_streams=128)
    results = await asyncio.gather(*(run(router, msg_key=f"many-{i}") for i in range(120)))
    await router.flush()
    assert all(text == "ok answer" for text, _ in results)
    rows = await db.fetchall("SELECT msg_key, COUNT(*) AS n FROM generations GROUP BY msg_key")
    assert sorted((r["msg_key"], r["n"]) for r in rows) == sorted((f"many-{i}", 1) for i in range(120))
    await router.aclose()
