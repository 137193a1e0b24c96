"""Voice and pictures: the time they add before the model call, against a text question in the same run.

The real app (in this process, on loopback) with instant fakes — WeChat's media/get, a picture CDN, the
speech endpoint and the model all answer at once — so what is measured is mpgpt's own work: for a voice,
download + ffmpeg conversion of a real AMR file (libopencore-amrnb) + the transcription request; for a
picture, fetching a ~1 MB JPEG, checking it and sending it as a data URL. Each figure is the time from
the message leaving "WeChat" to the fake model receiving the request, minus the same time for a plain
text question measured alternately in the same run (p50 and p99 of each).

    python bench/bench_media.py [--messages 60] [--out bench/results/media.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.llm import FakeLLM, Script  # noqa: E402
from tests.fakes.media import FakeCDN, amr_voice, jpeg  # noqa: E402
from tests.fakes.wechat import FakeWeChat  # noqa: E402
from tests.fakes.wechat_api import FakeWeChatAPI  # noqa: E402
from tests.harness import APP_ID, APP_SECRET, TOKEN, make_config, running  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def until_model_call(llm: FakeLLM, before: int, sent_at: float) -> float:
    """Seconds from `sent_at` to the model request that follows request number `before`."""
    while len(llm.requests) <= before:
        await asyncio.sleep(0.001)
    return llm.requests[before].received_at - sent_at


async def run(messages: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mpgpt-media-"))
    voice = amr_voice(3.0)
    picture = jpeg(1024, 1024, noise=True)
    picture += b"\0" * max(0, 1_000_000 - len(picture))  # a 1 MB picture (JPEG readers ignore the tail)
    async with FakeLLM(Script(text="好。")) as llm, FakeWeChatAPI(APP_ID, APP_SECRET) as api, FakeCDN() as cdn:
        cfg = make_config(tmp, llm.base_url,
                          wechat={"window": 5.0, "reply_margin": 0.6, "api_base": api.base_url},
                          chat={"lease_seconds": 30.0, "poll_interval": 0.05},
                          models={"gpt-4o-mini": {"vision": True}},
                          speech={"channel": "fake", "model": "whisper-1"},
                          media={"hosts": [cdn.host], "picture_wait": 2.0, "max_picture_bytes": 2_000_000},
                          quota={"trial_credits": 1_000_000}, rules={"rate_limit": 1_000_000})
        url = cdn.add("/mmbiz_jpg/bench/0", picture)
        async with running(cfg) as (base, app):
            wx = FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=5.0)
            text_s, voice_s, picture_s = [], [], []
            for i in range(messages + 5):  # the first five warm every path up
                who = f"o_bench{i}"
                n = len(llm.requests)
                t0 = time.perf_counter()
                task = asyncio.create_task(wx.send_text(who, "你好"))
                text = await until_model_call(llm, n, t0)
                await task
                n = len(llm.requests)
                media_id = api.add_media(voice, "audio/amr")
                t0 = time.perf_counter()
                task = asyncio.create_task(wx.deliver(wx.voice_message(who, media_id=media_id)))
                heard = await until_model_call(llm, n, t0)
                await task
                n = len(llm.requests)
                shown = asyncio.create_task(wx.deliver(wx.image_message(who, pic_url=url)))
                await asyncio.sleep(0.02)  # the picture is waiting when the text arrives
                t0 = time.perf_counter()
                task = asyncio.create_task(wx.send_text(who, "这是什么？"))
                seen = await until_model_call(llm, n, t0)
                await task
                await shown
                if i >= 5:
                    text_s.append(text)
                    voice_s.append(heard)
                    picture_s.append(seen)
            await wx.close()
    return {"text": text_s, "voice": voice_s, "picture": picture_s, "voice_bytes": len(voice),
            "picture_bytes": len(picture)}


def report(res: dict, messages: int) -> str:
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    t50, t99 = pct(res["text"], 0.5), pct(res["text"], 0.99)
    rows = []
    for name, label in (("voice", f"voice, {res['voice_bytes']:,} B AMR (3 s): download + convert + transcribe"),
                        ("picture", f"picture + text, {res['picture_bytes']:,} B JPEG: fetch + check + data URL")):
        p50, p99 = pct(res[name], 0.5), pct(res[name], 0.99)
        rows.append(f"| {label} | {ms(p50)} | {ms(p99)} | +{ms(p50 - t50)} | +{ms(p99 - t99)} |")
    load = os.getloadavg()[0]
    return "\n".join([
        "## Voice and pictures (bench/bench_media.py)",
        "",
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (shared; load average {load:.1f} at the end)."
        f" {messages} messages of each kind, alternating, against instant fakes (media/get, CDN, speech, model)"
        " in the app's process.",
        "",
        "Time from the message leaving WeChat to the model receiving the request; the added time is the"
        " difference to a plain text question measured alternately in the same run.",
        "",
        "| message | p50 | p99 | added p50 | added p99 |",
        "|---|---:|---:|---:|---:|",
        f"| text question (baseline) | {ms(t50)} | {ms(t99)} | | |",
        *rows,
        "",
    ])


def main() -> int:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "media.md")
    args = parser.parse_args()
    res = asyncio.run(run(args.messages))
    text = report(res, args.messages)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
