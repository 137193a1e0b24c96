"""Helpers for the answer-page tests: the link in a reply, the page's events, the label."""

from __future__ import annotations

import json
import re

import aiohttp

LABEL = "内容由 AI 生成"
ON = {"ai_label": {"text": LABEL}}
# WeChat's 5 s window is 0.6 s here: 17 s of model time is ~2 s.
SCALE = 0.6 / 5.0


def link_in(reply: str) -> str:
    """The one answer-page link in a reply."""
    found = re.findall(r"https?://[^\s]+/a/[A-Za-z0-9_-]+", reply)
    assert len(found) == 1, reply
    return found[0]


async def page_events(session: aiohttp.ClientSession, link: str) -> list[tuple[str, object]]:
    """Every event of the page's stream, until it ends."""
    events, name = [], None
    async with session.get(f"{link}/events", timeout=aiohttp.ClientTimeout(total=30)) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def text_of(events: list[tuple[str, object]]) -> str:
    text = ""
    for name, data in events:
        if name == "replace":
            text = str(data)
        elif name == "delta":
            text += str(data)
    return text
