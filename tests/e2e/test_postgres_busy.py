"""A flood PostgreSQL cannot keep up with, through HTTP: once every statement connection holds
[storage] statements_in_flight statements, a request waits storage.busy_wait for room, then gets 503
with Retry-After, not a hang, a 500 or a crash; the server goes on once the database does."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import psycopg

from tests.fakes.wechat import FakeWeChat
from tests.ownerkit import ask, serving

USER = "o6_bmjrPTlm6_pgbusy_b7004"


async def _post(wechat: FakeWeChat, text: str) -> tuple[int, str | None, float]:
    """One POST of a new message (no retries): its status, Retry-After and how long it took."""
    body, query = wechat.build_request(wechat.text_message(USER, text))
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(
            wechat.url, params=query, data=body, headers={"Content-Type": "text/xml"},
            timeout=aiohttp.ClientTimeout(total=30)) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After"), time.monotonic() - started


async def test_a_flood_past_the_statements_in_flight_gets_503_with_retry_after(tmp_path, llm, postgres_url):
    # pool_size 2: one connection for single statements, with room for 2 statements in flight
    storage = {"url": postgres_url, "pool_size": 2, "statements_in_flight": 2, "busy_wait": 0.3}
    async with serving(tmp_path, llm, storage=storage) as (_, server, wechat):
        assert await ask(wechat, USER) != ""  # the sender's row exists
        async with await psycopg.AsyncConnection.connect(postgres_url) as holder:
            # Every delivery from USER records the sender first: with the row locked, its statement
            # stays in flight until the lock goes, and the connection's room fills up.
            await holder.execute("SELECT 1 FROM users WHERE openid = %s FOR UPDATE", (USER,))
            posts = [asyncio.ensure_future(_post(wechat, f"第{i}个问题")) for i in range(6)]
            done, _ = await asyncio.wait(posts, timeout=5)
            refused = [p.result() for p in done]
            assert len(refused) >= 3, "past the room, requests are refused after busy_wait, not queued"
            for status, retry_after, took in refused:
                assert status == 503 and retry_after == "1"
                assert 0.25 <= took < 3
            await holder.rollback()  # the database catches up
        answered = await asyncio.wait_for(asyncio.gather(*(p for p in posts if p not in done)), timeout=15)
        assert all(status == 200 for status, _, _ in answered)
        assert await ask(wechat, USER, "现在呢") != ""
        assert server.proc.poll() is None
