"""The real app on loopback for the metrics and analytics tests, and reading /metrics back."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from scripts.composition import create_app
from bot.config import Config
from tests.harness import METRICS_TOKEN, served

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def serving(cfg: Config, sock: socket.socket | None = None) -> AsyncIterator[tuple[str, web.Application]]:
    """The app factory's app on a loopback socket: (base URL, app). A start-up failure closes what opened."""
    app = create_app(cfg)
    async with served(app, sock) as base:
        yield base, app


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def scrape(url: str, token: str | None = METRICS_TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return parse(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)
