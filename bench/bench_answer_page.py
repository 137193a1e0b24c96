"""Answer page benchmark: time to the first visible text on the answer page vs the web chat, same answer.

A follower asks on the web chat (`POST /api/chat`); as soon as the answer exists (the `start` event) it
gets an answer page, and the page's stream (`GET /a/<token>/events`) is opened on the same process and on a
second `mpgpt serve` process sharing the database. The fake provider waits 300 ms before its first chunk,
so every stream is open when the text starts. Each figure is the time from the question to the first
text, and the page's against the web chat's in the same round (the baseline).

- Same process: the page shows the generation's text as it is written, like the web chat: aim ≤ 10 ms
  later than the web chat.
- Another process: the page follows storage (the answer is flushed every chat.progress_flush_interval,
  checked every answer_page.poll_interval): reported, bounded by those two knobs.

    python bench/bench_answer_page.py [--rounds 100] [--out bench/results/answer_page.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_wechat import APP_ID, TOKEN, free_port, pct, stop, wait_port  # noqa: E402
from bench.bench_webchat import login  # noqa: E402
from tests.fakes.wechat import FakeWeChat  # noqa: E402
from tests.harness import write_toml  # noqa: E402

FIRST_DELAY = 0.3


async def first_text(session: aiohttp.ClientSession, url: str, t0: float) -> float:
    """Seconds from t0 to the first event of the page's stream that carries text."""
    async with session.get(url) as r:
        assert r.status == 200, r.status
        name = None
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name in ("delta", "replace") and line[6:] != '""':
                return time.perf_counter() - t0
    return float("nan")


def mint_page(db_path: Path) -> str:
    """The newest web answer gets an answer page (as a WeChat reply's link would), straight in storage."""
    token = secrets.token_urlsafe(24)
    with sqlite3.connect(db_path, timeout=5) as conn:
        answer_id = conn.execute("SELECT MAX(id) FROM answers WHERE route = 'web'").fetchone()[0]
        conn.execute("INSERT INTO answer_pages (answer_id, token, created_at, expires_at) VALUES (?, ?, ?, ?)",
                     (answer_id, token, time.time(), time.time() + 86400))
    return token


async def one_round(session: aiohttp.ClientSession, base: str, other: str, db_path: Path) -> tuple[float, float, float]:
    """(web chat, page on the same process, page on the other process): seconds to the first text."""
    t0 = time.perf_counter()
    pages: list[asyncio.Task] = []
    web = float("nan")
    async with session.post(f"{base}/api/chat", json={"message": "你好"}) as r:
        name = None
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
                if name == "start" and not pages:
                    continue
            elif line.startswith("data: ") and name == "start" and not pages:
                token = await asyncio.to_thread(mint_page, db_path)
                pages = [asyncio.create_task(first_text(session, f"{url}/a/{token}/events", t0))
                         for url in (base, other)]
            elif line.startswith("data: ") and name == "delta" and web != web:
                web = time.perf_counter() - t0
    same, cross = await asyncio.gather(*pages)
    return web, same, cross


async def run(rounds: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mpgpt-answer-page-"))
    procs: list[subprocess.Popen] = []
    try:
        llm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_llm_server.py"), "--chunks", "10",
                                "--chunk-delay", "0.02", "--first-delay", str(FIRST_DELAY)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(llm)
        llm_url = f"http://127.0.0.1:{int(llm.stdout.readline())}/v1"
        port, port_b = free_port(), free_port()
        base, other = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port_b}"
        db_path = tmp / "bench.db"
        config = write_toml(tmp / "config.toml", {
            "server": {"host": "127.0.0.1", "port": port, "public_url": base + "/"},
            "storage": {"path": str(db_path)},
            "wechat": {"token": TOKEN, "app_id": APP_ID},
            "quota": {"trial_credits": 100000},
            "rules": {"rate_limit": 100000},
            "log": {"level": "warning", "format": "json"},
            "metrics": {"enabled": False},  # two processes: no /metrics port to share
            "channels": [{"name": "fake", "provider": "openai", "base_url": llm_url, "api_key": "sk-bench",
                          "models": ["gpt-4o-mini"], "max_streams": 1000}],
        })
        for p in (port, port_b):
            with open(tmp / f"server.{p}.log", "wb") as log:
                server = subprocess.Popen([sys.executable, "-m", "scripts.cli", "serve", "--config", str(config)],
                                          cwd=ROOT, stdout=log, stderr=log,
                                          env={**os.environ, "MPGPT_SERVER_PORT": str(p)})
            procs.append(server)
            wait_port(p, server)
        wx = FakeWeChat(f"{base}/wechat", TOKEN, APP_ID)
        res: dict = {"web": [], "same": [], "cross": []}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            await login(session, wx, base, "o_bench_page")
            for _ in range(3):  # warm up every path
                await one_round(session, base, other, db_path)
            for _ in range(rounds):
                web, same, cross = await one_round(session, base, other, db_path)
                res["web"].append(web)
                res["same"].append(same)
                res["cross"].append(cross)
        await wx.close()
        res["diff_same"] = [s - w for s, w in zip(res["same"], res["web"])]
        res["diff_cross"] = [c - w for c, w in zip(res["cross"], res["web"])]
        return res
    finally:
        stop(procs)


def report(res: dict, rounds: int) -> str:
    ms = lambda v: v * 1000  # noqa: E731
    row = lambda name, key: f"| {name} | {ms(pct(res[key], 0.5)):.2f} | {ms(pct(res[key], 0.95)):.2f} |"  # noqa: E731
    ratio = pct(res["same"], 0.5) / pct(res["web"], 0.5)
    lines = [
        "## Answer page (issue 15)",
        "",
        f"`python bench/bench_answer_page.py --rounds {rounds}` — {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"The fake provider waits {FIRST_DELAY * 1000:.0f} ms, then streams 10 chunks 20 ms apart; one question per "
        "round, its answer watched on the web chat and on its answer page at once.",
        "",
        "| time from the question to the first visible text (ms) | p50 | p95 |",
        "|---|---|---|",
        row("baseline: the web chat (`POST /api/chat`, first `delta`)", "web"),
        row("answer page, served by the generating process", "same"),
        row("answer page, served by another process (from storage)", "cross"),
        "",
        "| figure | value | aim |",
        "|---|---|---|",
        f"| answer page (same process) later than the web chat, p50 / p95 | {ms(pct(res['diff_same'], 0.5)):.2f} / "
        f"{ms(pct(res['diff_same'], 0.95)):.2f} ms (ratio {ratio:.3f}) | ≤ 10 ms |",
        f"| answer page (another process) later than the web chat, p50 / p95 | "
        f"{ms(pct(res['diff_cross'], 0.5)):.2f} / {ms(pct(res['diff_cross'], 0.95)):.2f} ms | ≤ "
        "progress_flush_interval + poll_interval (750 ms) |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "answer_page.md"))
    args = parser.parse_args()
    res = asyncio.run(run(args.rounds))
    text = report(res, args.rounds)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
