"""/wechat benchmark in safe (AES) mode at 64 concurrent senders, each figure against a baseline
measured in the same run (these machines are noisy: only ratios carry over).

1. The edge — messages that need no model — against a bare aiohttp handler (its own process, on
   uvloop like mpgpt serve) receiving the same encrypted messages and answering `success`:
   a. a command (帮助: verify, decrypt, parse, record the MsgId, reply, encrypt), each a new MsgId;
   b. WeChat's retry of an already answered MsgId (the stored reply, encrypted again).
2. End to end with an instant fake model (its own process): new questions through mpgpt against
   the same number of direct openai-SDK streaming calls to that fake, same concurrency.

mpgpt runs as a real `mpgpt serve` process on a temporary database.

    python bench/bench_wechat.py [--messages 3000] [--out bench/results/wechat.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI, DefaultAioHttpClient  # noqa: E402

from tests.fakes.wechat import FakeWeChat  # noqa: E402
from tests.harness import write_toml  # noqa: E402

CONCURRENCY = 64
TOKEN = "bench-token"
APP_ID = "wxbench000000000"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

# On the same event loop as mpgpt serve's default (uvloop), so the ratio compares handlers, not loops.
BARE_SERVER = """
import sys
import uvloop
from aiohttp import web
async def handle(request):
    await request.read()
    return web.Response(text="success")
app = web.Application()
app.router.add_post("/wechat", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, loop=uvloop.new_event_loop())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def stop(procs: list[subprocess.Popen]) -> None:
    """End the benchmark's processes (the fake provider leaves when its stdin closes)."""
    for p in procs:
        if p.poll() is None:
            if p.stdin:
                p.stdin.close()
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def load(session: aiohttp.ClientSession, url: str, requests: list[tuple[bytes, dict]]) -> dict:
    """Send every request once, CONCURRENCY at a time; return throughput and latency figures."""
    latencies: list[float] = []
    failures = 0
    it = iter(requests)

    async def worker() -> None:
        nonlocal failures
        for body, query in it:
            t0 = time.perf_counter()
            async with session.post(url, data=body, params=query, headers={"Content-Type": "text/xml"}) as r:
                await r.read()
                if r.status != 200:
                    failures += 1
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - t0
    return {"rate": len(requests) / elapsed, "p50": pct(latencies, 0.5) * 1000, "p99": pct(latencies, 0.99) * 1000,
            "failures": failures, "n": len(requests)}


async def sdk_calls(base_url: str, n: int, transport: str) -> dict:
    """The ceiling: n direct streaming calls through the openai SDK, CONCURRENCY at a time."""
    http_client = DefaultAioHttpClient() if transport == "aiohttp" else None
    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, http_client=http_client)
    latencies: list[float] = []
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            t0 = time.perf_counter()
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "问题"}], stream=True,
                stream_options={"include_usage": True})
            async for _chunk in stream:
                pass
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - t0
    await client.close()
    return {"rate": n / elapsed, "p50": pct(latencies, 0.5) * 1000, "p99": pct(latencies, 0.99) * 1000,
            "failures": 0, "n": n}


def build(wx: FakeWeChat, texts: list[tuple[str, str]]) -> list[tuple[bytes, dict]]:
    return [wx.build_request(wx.text_message(openid, text)) for openid, text in texts]


async def run(messages: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mpgpt-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        llm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_llm_server.py"), "--chunks", "8"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(llm)
        llm_port = int(llm.stdout.readline())
        llm_url = f"http://127.0.0.1:{llm_port}/v1"

        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)])
        procs.append(bare)

        port = free_port()
        config = write_toml(tmp / "config.toml", {
            "server": {"host": "127.0.0.1", "port": port},
            "storage": {"path": str(tmp / "bench.db")},
            "wechat": {"token": TOKEN, "app_id": APP_ID, "encoding_aes_key": AES_KEY},
            "log": {"level": "info", "format": "json"},
            # its own port: the default 9464 may be taken by another mpgpt on this machine (another bench)
            "metrics": {"port": free_port()},
            "channels": [{"name": "fake", "provider": "openai", "base_url": llm_url, "api_key": "sk-bench",
                          "models": ["gpt-4o-mini"]}],
        })
        with open(tmp / "server.log", "wb") as log:
            server = subprocess.Popen([sys.executable, "-m", "scripts.cli", "serve", "--config", str(config)],
                                      cwd=ROOT, stdout=log, stderr=log)
        procs.append(server)
        wait_port(bare_port, bare)
        wait_port(port, server)

        url = f"http://127.0.0.1:{port}/wechat"
        bare_url = f"http://127.0.0.1:{bare_port}/wechat"
        wx = FakeWeChat(url, TOKEN, APP_ID, AES_KEY, mode="safe")
        # each user asks at most 3 questions: well inside the default rate limit and free credits
        users = [f"o_bench_{i:05d}" for i in range(max(1, messages // 3))]
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            # warm both servers up (imports, first connections, SQLite pages)
            await load(session, url, build(wx, [(u, "帮助") for u in users[:200]]))
            await load(session, bare_url, build(wx, [(u, "帮助") for u in users[:200]]))

            commands = build(wx, [(users[i % len(users)], "帮助") for i in range(messages)])
            res: dict = {}
            res["bare_commands"] = await load(session, bare_url, commands)
            res["commands"] = await load(session, url, commands)
            # the same messages again: now each is a retry of an answered MsgId
            res["bare_retries"] = await load(session, bare_url, commands)
            res["retries"] = await load(session, url, commands)

            questions = build(wx, [(users[i % len(users)], f"问题 {i}") for i in range(messages)])
            res["sdk_default"] = await sdk_calls(llm_url, messages, "httpx")
            res["e2e"] = await load(session, url, questions)
            res["sdk_aiohttp"] = await sdk_calls(llm_url, messages, "aiohttp")
            sample = await wx.deliver(wx.text_message(users[0], "最后一个问题"))
            res["sample_ok"] = bool(sample.content) and sample.is_valid
        await wx.close()
        return res
    finally:
        stop(procs)


def report(res: dict, messages: int) -> str:
    def row(name: str, r: dict) -> str:
        return f"| {name} | {r['rate']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['failures']} |"

    edge_cmd = res["commands"]["rate"] / res["bare_commands"]["rate"]
    edge_retry = res["retries"]["rate"] / res["bare_retries"]["rate"]
    e2e = res["e2e"]["rate"] / res["sdk_default"]["rate"]
    e2e_aio = res["e2e"]["rate"] / res["sdk_aiohttp"]["rate"]
    lines = [
        "## /wechat (issue 2)",
        "",
        f"`python bench/bench_wechat.py --messages {messages}` — safe (AES) mode, {CONCURRENCY} concurrent senders "
        "(one Python aiohttp client process), mpgpt and the bare handler both on uvloop, "
        f"{messages} messages per row, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| run | msgs/s | p50 ms | p99 ms | failures |",
        "|---|---|---|---|---|",
        row("baseline: bare aiohttp handler, new messages", res["bare_commands"]),
        row("mpgpt edge: command (帮助), new MsgId", res["commands"]),
        row("baseline: bare aiohttp handler, same messages again", res["bare_retries"]),
        row("mpgpt edge: retry of an answered MsgId", res["retries"]),
        row("baseline: direct openai-SDK streaming calls (default httpx transport)", res["sdk_default"]),
        row("baseline: direct openai-SDK streaming calls (aiohttp transport)", res["sdk_aiohttp"]),
        row("mpgpt end to end: new question, instant fake model", res["e2e"]),
        "",
        "| figure | value | aim |",
        "|---|---|---|",
        f"| edge, command: mpgpt / bare handler | {edge_cmd:.2f}× | ≥ 0.5× |",
        f"| edge, command: p99 | {res['commands']['p99']:.1f} ms | < 25 ms |",
        f"| edge, answered retry: mpgpt / bare handler | {edge_retry:.2f}× | ≥ 0.5× |",
        f"| edge, answered retry: p99 | {res['retries']['p99']:.1f} ms | < 25 ms |",
        f"| end to end: mpgpt / direct SDK calls (default transport) | {e2e:.2f}× | ≥ 0.7× |",
        f"| end to end: mpgpt / direct SDK calls (aiohttp transport, what mpgpt uses) | {e2e_aio:.2f}× | — |",
        f"| a sample reply decrypted and verified as WeChat would | {'yes' if res['sample_ok'] else 'NO'} | yes |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "wechat.md"))
    args = parser.parse_args()
    res = asyncio.run(run(args.messages))
    text = report(res, args.messages)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
