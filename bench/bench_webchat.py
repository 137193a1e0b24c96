"""Web chat benchmark: the companion page's SSE chat against the same fake provider called directly.

1. Time to the first text: `POST /api/chat` until the first `delta` event, against a plain aiohttp SSE
   client calling the same fake provider until its first content chunk; requests interleaved one by
   one so machine noise hits both alike. Also the time to the stream's first byte.
2. 200 concurrent streams (each answer streamed over ~1 s) through one `mpgpt serve` process: errors,
   completion, and the server process's memory (RSS) before and at the peak.

mpgpt and the fake provider run as separate processes; followers log in the real way (登录 through
/wechat, then /api/login).

    python bench/bench_webchat.py [--calls 300] [--streams 200] [--timeout 900] [--out bench/results/webchat.md]

Every answer streams for about a second, so the run takes a few minutes: it says how far it is on
stderr, every call and every phase has a deadline, and the whole run is bounded by --timeout (a
deadline missed ends the run with a message naming the phase and exit code 1, never a silent wait).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI, DefaultAioHttpClient  # noqa: E402

from bench.bench_wechat import APP_ID, TOKEN, free_port, pct, stop, wait_port  # noqa: E402
from tests.fakes.wechat import FakeWeChat  # noqa: E402
from tests.harness import write_toml  # noqa: E402


# One call (a login, one streamed answer) ends well within this; the 200 concurrent streams within
# STREAMS_TIMEOUT. A deadline missed fails the run loudly instead of waiting on a silent socket.
CALL_TIMEOUT = 30.0
STREAMS_TIMEOUT = 120.0


class BenchTimeout(Exception):
    """A phase missed its deadline: the message names it."""


async def bounded(what: str, aw, seconds: float = CALL_TIMEOUT):  # type: ignore[no-untyped-def]
    """`aw`, or BenchTimeout naming `what` after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        raise BenchTimeout(f"{what}: no answer within {seconds:.0f} s") from None


def progress(message: str) -> None:
    """A line on stderr: run_all shows it while the bench runs (stdout carries the results)."""
    print(f"bench_webchat {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


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


async def direct_first_text(session: aiohttp.ClientSession, llm_url: str, tails: list[asyncio.Task]) -> float:
    """Seconds to the first content chunk. The rest of the stream is read by a task added to `tails`
    (awaited before the next baseline call), so the connection goes back to the pool as mpgpt's does."""
    first: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def call() -> None:
        t0 = time.perf_counter()
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "你好"}], "stream": True,
                "stream_options": {"include_usage": True}}
        async with session.post(f"{llm_url}/chat/completions", json=body,
                                headers={"Authorization": "Bearer sk-bench"}) as r:
            async for line in r.content:
                if not first.done() and line.startswith(b"data: {") and b'"content"' in line:
                    first.set_result(time.perf_counter() - t0)
        if not first.done():
            first.set_result(0.0)

    return await _first(call(), first, tails)


async def sdk_first_text(client, tails: list[asyncio.Task]) -> float:  # type: ignore[no-untyped-def]
    """The same call through the openai SDK (as mpgpt's channel makes it): time to the first content."""
    first: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def call() -> None:
        t0 = time.perf_counter()
        async with client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "你好"}], stream=True,
                stream_options={"include_usage": True}) as response:
            async for line in response.iter_lines():
                if not first.done() and line.startswith("data: {") and '"content"' in line:
                    first.set_result(time.perf_counter() - t0)
        if not first.done():
            first.set_result(0.0)

    return await _first(call(), first, tails)


async def _first(call, first: asyncio.Future, tails: list[asyncio.Task]) -> float:  # type: ignore[no-untyped-def]
    """Start `call`, return its first-content figure; the call itself (the stream's tail) goes on in `tails`.

    Each answer streams for about a second: reading every baseline to its end before the next call
    made one round (web chat, plain, SDK) take three seconds, and the default 300 rounds a quarter
    of an hour without a line of output."""
    task = asyncio.create_task(call)
    tails.append(task)
    await asyncio.wait([first, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    return first.result()


# the benchmark's processes, for the watchdog in main() to end if the run itself cannot
_procs: list[subprocess.Popen] = []


def read_port(proc: subprocess.Popen, timeout: float = 20) -> int:
    """The port the fake provider prints once it listens (readline alone waits forever if it never does)."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise BenchTimeout(f"the fake provider printed no port within {timeout:.0f} s")
    line = proc.stdout.readline()
    if not line.strip():
        raise RuntimeError(f"the fake provider exited ({proc.poll()}) without a port")
    return int(line)


async def run(calls: int, streams: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mpgpt-webchat-"))
    procs = _procs
    wx = sdk = None
    try:
        # 20 chunks 50 ms apart: each answer streams for about a second
        llm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_llm_server.py"), "--chunks", "20",
                                "--chunk-delay", "0.05"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(llm)
        llm_url = f"http://127.0.0.1:{read_port(llm)}/v1"
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
        progress(f"mpgpt serve on port {port}, fake provider at {llm_url}; {calls} calls, then {streams} streams")
        wx = FakeWeChat(f"{base}/wechat", TOKEN, APP_ID)  # each delivery bounded by its window (5 s)
        res: dict = {}
        # every request bounded: aiohttp's default is 5 minutes of silence per request
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         timeout=timeout) as one:
            await bounded("login", login(one, wx, base, "o_bench_web"))
            sdk = AsyncOpenAI(base_url=llm_url, api_key="sk-bench", max_retries=0, timeout=CALL_TIMEOUT,
                              http_client=DefaultAioHttpClient())
            tails: list[asyncio.Task] = []

            async def one_round(i: int) -> tuple[float, float, float, float]:
                # the previous round's baseline streams end while the web chat's answer streams (~1 s)
                b, t, done = await bounded(f"call {i}: web chat stream", web_first_text(one, base))
                if not done:
                    raise RuntimeError(f"call {i}: the web chat stream ended without a done event")
                await bounded(f"call {i}: the previous baseline streams' ends", asyncio.gather(*tails))
                tails.clear()
                d = await bounded(f"call {i}: provider called directly", direct_first_text(one, llm_url, tails))
                k = await bounded(f"call {i}: provider through the SDK", sdk_first_text(sdk, tails))
                return b, t, d, k

            for i in range(10):  # warm up every path
                await one_round(-1 - i)
            progress("warmed up")
            web_byte, web_text, direct, direct_sdk = [], [], [], []
            started = time.monotonic()
            for i in range(calls):
                b, t, d, k = await one_round(i)
                web_byte.append(b)
                web_text.append(t)
                direct.append(d)
                direct_sdk.append(k)
                if (i + 1) % 50 == 0 or i + 1 == calls:
                    progress(f"{i + 1}/{calls} calls in {time.monotonic() - started:.0f} s "
                             f"(first text p50 so far {pct(web_text, 0.5) * 1000:.2f} ms)")
            await bounded("the last baseline streams' ends", asyncio.gather(*tails))
            res["web_byte"], res["web_text"], res["direct"], res["sdk"] = web_byte, web_text, direct, direct_sdk

        sessions = [aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=timeout)
                    for _ in range(streams)]
        try:
            for i, s in enumerate(sessions):
                await bounded(f"login {i} of {streams}", login(s, wx, base, f"o_stream_{i:04d}"))
            progress(f"{streams} followers logged in; streaming at once")
            res["rss_before"] = rss_mb(server.pid)
            peak = [res["rss_before"]]

            async def watch() -> None:
                while True:
                    peak.append(rss_mb(server.pid))
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            t0 = time.perf_counter()
            try:
                outcomes = await bounded(f"{streams} concurrent streams", asyncio.gather(
                    *(web_first_text(s, base) for s in sessions), return_exceptions=True), STREAMS_TIMEOUT)
            finally:
                watcher.cancel()
            res["streams_seconds"] = time.perf_counter() - t0
            res["rss_peak"] = max(peak)
            res["streams_ok"] = sum(1 for o in outcomes if not isinstance(o, BaseException) and o[2])
            res["streams_errors"] = sum(1 for o in outcomes if isinstance(o, BaseException))
            res["streams"] = streams
        finally:
            for s in sessions:
                await s.close()
        progress(f"{res['streams_ok']} of {streams} streams done in {res['streams_seconds']:.1f} s")
        return res
    finally:
        # also when a deadline cancelled the run: no "unclosed session" noise under the failure line
        if sdk is not None:
            await sdk.close()
        if wx is not None:
            await wx.close()
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
        "The fake provider streams 20 chunks 50 ms apart; the calls below are interleaved one by one (each "
        "baseline's stream is read to its end in the background, during the next web chat answer).",
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
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run (then exit 1)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "webchat.md"))
    args = parser.parse_args()
    # The last resort: if even the bounded run cannot end (its loop blocked, a cleanup stuck), end the
    # processes and exit with a line that says so.
    watchdog = threading.Timer(args.timeout + 60, _give_up, args=(args.timeout + 60,))
    watchdog.daemon = True
    watchdog.start()
    try:
        res = asyncio.run(bounded("the whole run (--timeout)", run(args.calls, args.streams), args.timeout))
    except (BenchTimeout, RuntimeError, AssertionError, aiohttp.ClientError) as e:
        print(f"bench_webchat FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        watchdog.cancel()
    text = report(res, args.calls)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")


def _give_up(after: float) -> None:
    print(f"bench_webchat FAILED: still running after {after:.0f} s; ending it", file=sys.stderr, flush=True)
    stop(_procs)
    os._exit(1)


if __name__ == "__main__":
    main()
