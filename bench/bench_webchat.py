"""Web chat benchmark: the companion page's SSE chat against the same fake provider called directly.

1. Time to the first text: `POST /api/chat` until the first `delta` event, against a plain aiohttp SSE
   client calling the same fake provider until its first content chunk; requests interleaved one by
   one so machine noise hits both alike. Also the time to the stream's first byte.
2. 200 concurrent streams (each answer streamed over ~1 s) through one `mpgpt serve` process: errors,
   completion, and the server process's memory (RSS) before and at the peak.

mpgpt and the fake provider run as separate processes; followers log in the real way (登录 through
/wechat, then /api/login).

    python bench/bench_webchat.py [--calls 300] [--streams 200] [--out bench/results/webchat.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI, DefaultAioHttpClient  # noqa: E402

from bench.bench_wechat import APP_ID, TOKEN, free_port, pct, stop, wait_port  # noqa: E402
from tests.fakes.wechat import FakeWeChat  # noqa: E402
from tests.harness import write_toml  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def login(session: aiohttp.ClientSession, wx: FakeWeChat, base: str, openid: str) -> None:
    reply = (await wx.send_text(openid, "登录")).content or ""
    token = re.findall(r"#login=([A-Za-z0-9_-]+)", reply)[0]  # the one-time link's token
    async with session.post(f"{base}/api/login", json={"token": token}) as r:
        assert r.status == 200, await r.text()


async def web_first_text(session: aiohttp.ClientSession, base: str) -> tuple[float, float, bool]:
    """(seconds to the first byte, seconds to the first delta, finished with a done event)"""
    t0 = time.perf_counter()
    first_byte = first_delta = None
    done = False
    async with session.post(f"{base}/api/chat", json={"message": "你好"}) as r:
        async for line in r.content:
            if first_byte is None:
                first_byte = time.perf_counter() - t0
            if line.startswith(b"event: delta") and first_delta is None:
                first_delta = time.perf_counter() - t0
            if line.startswith(b"event: done"):
                done = True
    return first_byte or 0.0, first_delta or 0.0, done


async def direct_first_text(session: aiohttp.ClientSession, llm_url: str) -> float:
    t0 = time.perf_counter()
    first = None
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "你好"}], "stream": True,
            "stream_options": {"include_usage": True}}
    async with session.post(f"{llm_url}/chat/completions", json=body,
                            headers={"Authorization": "Bearer sk-bench"}) as r:
        async for line in r.content:
            if first is None and line.startswith(b"data: {") and b'"content"' in line:
                first = time.perf_counter() - t0
    return first or 0.0


async def sdk_first_text(client, llm_url: str) -> float:
    """The same call through the openai SDK (as mpgpt's channel makes it): time to the first content."""
    t0 = time.perf_counter()
    first = None
    async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "你好"}], stream=True,
            stream_options={"include_usage": True}) as response:
        async for line in response.iter_lines():
            if first is None and line.startswith("data: {") and '"content"' in line:
                first = time.perf_counter() - t0
    return first or 0.0


async def run(calls: int, streams: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mpgpt-webchat-"))
    procs: list[subprocess.Popen] = []
    try:
        # 20 chunks 50 ms apart: each answer streams for about a second
        llm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_llm_server.py"), "--chunks", "20",
                                "--chunk-delay", "0.05"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(llm)
        llm_url = f"http://127.0.0.1:{int(llm.stdout.readline())}/v1"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = write_toml(tmp / "config.toml", {
            "server": {"host": "127.0.0.1", "port": port, "public_url": base + "/"},
            "storage": {"path": str(tmp / "bench.db")},
            "wechat": {"token": TOKEN, "app_id": APP_ID},
            "quota": {"trial_credits": 100000},
            "rules": {"rate_limit": 100000},
            "log": {"level": "warning", "format": "json"},
            # its own port: the default 9464 may be taken by another mpgpt on this machine (another bench)
            "metrics": {"port": free_port()},
            "channels": [{"name": "fake", "provider": "openai", "base_url": llm_url, "api_key": "sk-bench",
                          "models": ["gpt-4o-mini"], "max_streams": 1000}],
        })
        with open(tmp / "server.log", "wb") as log:
            server = subprocess.Popen([sys.executable, "-m", "scripts.cli", "serve", "--config", str(config)],
                                      cwd=ROOT, stdout=log, stderr=log)
        procs.append(server)
        wait_port(port, server)
        wx = FakeWeChat(f"{base}/wechat", TOKEN, APP_ID)
        res: dict = {}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)) as one:
            await login(one, wx, base, "o_bench_web")
            sdk = AsyncOpenAI(base_url=llm_url, api_key="sk-bench", max_retries=0, http_client=DefaultAioHttpClient())
            for _ in range(10):  # warm up every path
                await web_first_text(one, base)
                await direct_first_text(one, llm_url)
                await sdk_first_text(sdk, llm_url)
            web_byte, web_text, direct, direct_sdk = [], [], [], []
            for _ in range(calls):
                b, t, _done = await web_first_text(one, base)
                web_byte.append(b)
                web_text.append(t)
                direct.append(await direct_first_text(one, llm_url))
                direct_sdk.append(await sdk_first_text(sdk, llm_url))
            await sdk.close()
            res["web_byte"], res["web_text"], res["direct"], res["sdk"] = web_byte, web_text, direct, direct_sdk

        sessions = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(streams)]
        try:
            for i, s in enumerate(sessions):
                await login(s, wx, base, f"o_stream_{i:04d}")
            res["rss_before"] = rss_mb(server.pid)
            peak = [res["rss_before"]]

            async def watch() -> None:
                while True:
                    peak.append(rss_mb(server.pid))
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            t0 = time.perf_counter()
            outcomes = await asyncio.gather(*(web_first_text(s, base) for s in sessions), return_exceptions=True)
            res["streams_seconds"] = time.perf_counter() - t0
            watcher.cancel()
            res["rss_peak"] = max(peak)
            res["streams_ok"] = sum(1 for o in outcomes if not isinstance(o, BaseException) and o[2])
            res["streams_errors"] = sum(1 for o in outcomes if isinstance(o, BaseException))
            res["streams"] = streams
        finally:
            for s in sessions:
                await s.close()
        await wx.close()
        return res
    finally:
        stop(procs)


def report(res: dict, calls: int) -> str:
    ms = lambda v: v * 1000  # noqa: E731
    row = lambda name, key: f"| {name} | {ms(pct(res[key], 0.5)):.2f} | {ms(pct(res[key], 0.99)):.2f} |"  # noqa: E731
    added = lambda key, base, q: ms(pct(res[key], q) - pct(res[base], q))  # noqa: E731
    lines = [
        "## Web chat (issue 8)",
        "",
        f"`python bench/bench_webchat.py --calls {calls} --streams {res['streams']}` — {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "The fake provider streams 20 chunks 50 ms apart; the calls below are interleaved one by one.",
        "",
        "| time to … (ms) | p50 | p99 |",
        "|---|---|---|",
        row("baseline: the fake provider's first content chunk, called directly (plain aiohttp SSE)", "direct"),
        row("baseline: the same, called directly through the openai SDK as mpgpt's channel calls it", "sdk"),
        row("mpgpt: first byte of the SSE stream (`start`, after session, rules and credits)", "web_byte"),
        row("mpgpt: first text (`delta` event)", "web_text"),
        "",
        "| figure | value | aim |",
        "|---|---|---|",
        f"| added time to the first byte vs the provider's first chunk (plain), p50 | "
        f"{added('web_byte', 'direct', 0.5):.2f} ms | ≤ 5 ms |",
        f"| added time to the first text vs the same call through the SDK, p50 | "
        f"{added('web_text', 'sdk', 0.5):.2f} ms | ≤ 5 ms |",
        f"| added time to the first text vs plain aiohttp (includes the SDK's own cost), p50 | "
        f"{added('web_text', 'direct', 0.5):.2f} ms | — |",
        f"| {res['streams']} concurrent streams: completed with a `done` event | {res['streams_ok']} of "
        f"{res['streams']} ({res['streams_errors']} errors) in {res['streams_seconds']:.1f} s | all, no errors |",
        f"| server memory (RSS) before → peak during the {res['streams']} streams | {res['rss_before']:.0f} MB → "
        f"{res['rss_peak']:.0f} MB | reported |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "webchat.md"))
    args = parser.parse_args()
    res = asyncio.run(run(args.calls, args.streams))
    text = report(res, args.calls)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
