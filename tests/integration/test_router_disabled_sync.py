"""A running router follows the disabled channels in storage: the owner's disable and re-enable from
another process reach it within `router.disabled_sync_interval`, without a restart."""

from __future__ import annotations

import asyncio
import random


from bot.config import RouterConfig
from bot.providers.base import ChatMessage, Usage
from bot.providers.catalogue import Catalogue
from bot.providers.openai_channel import OpenAIChannel
from bot.providers.router import Route, Router, key_hash
from storage.db import Database
from storage.generations import DisabledChannelRepo
from tests.fakes.llm import FakeLLM, Script

MODEL = "gpt-4o-mini"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def make_router(llm: FakeLLM, db: Database, clock: Clock) -> Router:
    routes = [Route(OpenAIChannel(name, llm.base_url, f"sk-{name}", [MODEL]), 0, 1, key_hash=key_hash(f"sk-{name}"))
              for name in ("main", "spare")]
    router = Router(routes, Catalogue({}, [MODEL]), RouterConfig(disabled_sync_interval=5.0),
                    disabled=DisabledChannelRepo(db), rng=random.Random(1), clock=clock)
    await router.load_disabled()
    return router


async def ask(router: Router) -> None:
    async for item in router.stream(MODEL, [ChatMessage("user", "hi")], user="o-user"):
        assert isinstance(item, (str, Usage))
    await router.flush()


def state(router: Router, name: str) -> str:
    return next(s.state for s in router.states() if s.name == name)


async def test_a_disable_and_a_re_enable_written_elsewhere_reach_a_running_router(db: Database) -> None:
    clock = Clock()
    async with FakeLLM(Script(chunks=["ok"])) as llm:
        router = await make_router(llm, db, clock)
        other_process = DisabledChannelRepo(db)
        await other_process.disable("main", key_hash("sk-main"), "owner: balance ran out", 1.0)
        await ask(router)
        assert state(router, "main") == "closed"  # not yet: the interval has not passed
        clock.now += 5.0
        await ask(router)
        assert state(router, "main") == "disabled"
        await other_process.enable("main")
        clock.now += 5.0
        await ask(router)
        assert state(router, "main") == "closed"
        await router.aclose()


async def test_a_row_for_another_key_does_not_disable_the_channel(db: Database) -> None:
    clock = Clock()
    async with FakeLLM(Script(chunks=["ok"])) as llm:
        await DisabledChannelRepo(db).disable("main", key_hash("sk-old-key"), "old key rejected", 1.0)
        router = await make_router(llm, db, clock)
        assert state(router, "main") == "closed"
        await router.aclose()


async def test_a_key_rejected_here_stays_disabled_until_the_owner_removes_its_row(db: Database) -> None:
    clock = Clock()
    async with FakeLLM(Script.unauthorized(), script_for=lambda req: Script(chunks=["ok"])
                       if req.api_key == "sk-spare" else None) as llm:
        router = await make_router(llm, db, clock)
        for _ in range(4):
            await ask(router)
            clock.now += 5.0
            await asyncio.sleep(0)
        await router.flush()
        assert state(router, "main") == "disabled" and state(router, "spare") == "closed"
        assert "main" in await DisabledChannelRepo(db).all()
        await DisabledChannelRepo(db).enable("main")
        clock.now += 5.0
        await ask(router)
        assert state(router, "main") == "closed"
        await router.aclose()
