"""The Grafana dashboard against Debian's prometheus scraping a busy mpgpt: every query returns data."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.llm import Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, free_port, make_config
from tests.monitorkit import serving

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/mpgpt.json"
DATASOURCE = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
PROMETHEUS = shutil.which("prometheus")
# What Grafana puts in place of its variables, for a 1 s scrape interval.
GRAFANA = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "1m"}


def panels(node=None):
    node = json.loads(DASHBOARD.read_text()) if node is None else node
    for p in node.get("panels", []):
        yield p
        yield from panels(p)


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p.get("targets", [])]


def grafana_expr(expr: str) -> str:
    for var, value in GRAFANA.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_every_panel_queries_the_provisioned_data_source():
    (uid,) = re.findall(r"^\s+uid:\s*(\S+)\s*$", DATASOURCE.read_text(), re.M)
    graph = [p for p in panels() if p["type"] != "row"]
    assert len(graph) >= 15
    for p in graph:
        assert p["datasource"]["uid"] == uid, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid and t["expr"].strip(), p["title"]
    ids = [t["refId"] for p in graph for t in p["targets"]]
    assert all(ids), "every target needs a refId"


if PROMETHEUS is None and os.environ.get("MPGPT_REQUIRE_PROMETHEUS"):
    pytest.fail("prometheus is missing but MPGPT_REQUIRE_PROMETHEUS is set (.ci/run installs it)", pytrace=False)


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed (apt-get install prometheus;"
                                                " .ci/run installs it)")
async def test_every_dashboard_query_returns_data_from_prometheus_scraping_a_busy_mpgpt(tmp_path, llm):
    llm.queue(Script.server_error())  # one provider error for the error panels
    # /metrics on its own loopback port, as deploy/prometheus/prometheus.yml scrapes it
    metrics_port = free_port()
    cfg = make_config(tmp_path, llm.base_url, metrics={"port": metrics_port, "token": ""})
    async with serving(cfg) as (base, _), aiohttp.ClientSession() as http:
        prom = f"http://127.0.0.1:{free_port()}"
        proc = _start_prometheus(tmp_path, f"127.0.0.1:{metrics_port}", prom.removeprefix("http://"))
        stop = asyncio.Event()
        traffic = asyncio.create_task(_traffic(base, http, stop))
        try:
            await _until(lambda: _ready(http, prom), 15, proc)
            # Enough scrapes of the busy server for every rate() window, then the queries.
            await _until(lambda: _scraped(http, prom, 5), 15, proc)
            missing = []
            for title, expr in queries():
                result = await _query(http, prom, grafana_expr(expr))
                if not result:
                    missing.append(f"{title}: {expr}")
            assert not missing, "queries without data:\n" + "\n".join(missing)
            qps = await _query(http, prom, grafana_expr("sum(rate(mpgpt_http_requests_total[$__rate_interval]))"))
            assert float(qps[0]["value"][1]) > 0
        finally:
            stop.set()
            await traffic
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start_prometheus(tmp_path: Path, target: str, listen: str) -> subprocess.Popen:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: mpgpt\n    static_configs:\n      - targets: ['{target}']\n")
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address={listen}", "--log.level=warn"], stdout=log, stderr=log)
    log.close()
    return proc


async def _traffic(base: str, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
    """Followers asking questions, a new follower, the companion page's tracker."""
    async with FakeWeChat(f"{base}/wechat", TOKEN, APP_ID, window=0.6) as wx:
        await wx.send_event("o_dashboard_new", "subscribe")
        i = 0
        while not stop.is_set():
            await wx.send_text(f"o_dashboard_{i % 4}", f"问题 {i}")
            event = {"t": "view", "vid": f"visitor{i % 3:08d}", "pv": f"view{i:012d}", "page": "/", "vw": 390,
                     "vh": 844}
            async with http.post(base + "/api/track", data=json.dumps(event)) as resp:
                assert resp.status == 204
            i += 1
            await asyncio.sleep(0.2)


async def _until(check, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert proc.poll() is None, "prometheus exited"
        assert time.monotonic() < deadline, "prometheus did not get there in time"
        await asyncio.sleep(0.25)


async def _ready(http: aiohttp.ClientSession, prom: str) -> bool:
    try:
        async with http.get(prom + "/-/ready") as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def _scraped(http: aiohttp.ClientSession, prom: str, n: int) -> bool:
    result = await _query(http, prom, 'count_over_time(up{job="mpgpt"}[1m])')
    return bool(result) and float(result[0]["value"][1]) >= n


async def _query(http: aiohttp.ClientSession, prom: str, expr: str) -> list:
    async with http.get(prom + "/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]
