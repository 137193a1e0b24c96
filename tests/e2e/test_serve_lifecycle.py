"""`mpgpt serve` from start to stop: it says where it listens, a taken port is one line, every log line
is JSON in JSON mode, and SIGTERM ends it within a bound every time (storage closed, no thread left)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from scripts.composition import create_app
from scripts.serving import bind, serve
from tests.fakes.llm import FakeLLM, Script
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, config_data, free_port, make_config, write_toml

ROOT = Path(__file__).resolve().parents[2]
# The stop's bound in these tests: in-flight requests get 1 s, the watchdog ends the process at 2 s.
SHUTDOWN = {"shutdown_timeout": 1.0}
MANY = {"rules": {"rate_limit": 10_000}, "quota": {"trial_credits": 10_000}}


def _db_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name and t.is_alive()]


class Served:
    """`mpgpt serve` as a child process whose stderr is read line by line."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def start(self) -> "Served":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scripts.cli", "serve", "--config", str(self.config), cwd=ROOT,
            env={**os.environ, "MPGPT_SERVER_PORT": str(self.port)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    async def ready(self, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if '"serving"' in line:
                    return json.loads(line)
            assert self.proc and self.proc.returncode is None, "\n".join(self.lines[-20:])
            await asyncio.sleep(0.02)
        raise AssertionError("no ready line:\n" + "\n".join(self.lines[-20:]))

    async def exit_code(self, timeout: float) -> int:
        assert self.proc
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError("did not exit in time:\n" + "\n".join(self.lines[-20:])) from None
        assert self._reader
        await self._reader
        return code


def _config(tmp_path: Path, llm: FakeLLM, **overrides) -> Path:
    data = config_data(tmp_path, llm.base_url, server=SHUTDOWN, **MANY)
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value}
    return write_toml(tmp_path / "serve.toml", data)


async def _ask(port: int, openid: str, text: str = "你好") -> str:
    async with FakeWeChat(f"http://127.0.0.1:{port}/wechat", TOKEN, APP_ID, window=0.6) as wechat:
        return (await wechat.send_text(openid, text)).content or ""


async def test_serve_says_in_a_json_line_where_it_listens_once_ready(tmp_path, llm):
    metrics_port = free_port()
    path = _config(tmp_path, llm, log={"format": "json", "level": "info"},
                   metrics={"port": metrics_port, "token": ""},
                   server={**SHUTDOWN, "public_url": "https://mp.example.com"})
    server = await Served(path, free_port()).start()
    ready = await server.ready()
    assert ready["listening"] == f"http://127.0.0.1:{server.port}"
    assert ready["wechat_url"] == "https://mp.example.com/wechat"
    assert ready["page_url"] == "https://mp.example.com/"
    assert ready["metrics_url"] == f"http://127.0.0.1:{metrics_port}/metrics"
    assert ready["level"] == "info"
    server.proc.send_signal(signal.SIGTERM)
    assert await server.exit_code(5) == 0


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("taken", ["server", "metrics"])
async def test_a_taken_port_is_one_line_and_a_non_zero_exit_never_a_ready_line_or_a_hang(tmp_path, llm, fmt, taken):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    used = holder.getsockname()[1]
    port = used if taken == "server" else free_port()
    metrics = {"port": used if taken == "metrics" else free_port(), "token": ""}
    path = _config(tmp_path, llm, log={"format": fmt, "level": "info"}, metrics=metrics)
    try:
        server = await Served(path, port).start()
        assert await server.exit_code(10) == 1
    finally:
        holder.close()
    failure = [line for line in server.lines if "cannot listen" in line]
    assert len(failure) == 1, server.lines
    assert f"127.0.0.1:{used}" in failure[0] and "Address already in use" in failure[0]
    if taken == "metrics":
        assert "metrics.port" in failure[0]
    if fmt == "json":
        assert json.loads(failure[0])["event"] == "start_failed"
    else:
        assert failure[0].startswith("mpgpt: ")
    assert not any('"serving"' in line or "serving" in line.split() for line in server.lines)
    assert "Traceback" not in "\n".join(server.lines)


@pytest.mark.sqlite_file
async def test_in_json_mode_at_debug_every_line_is_one_json_object_the_libraries_lines_too(tmp_path, llm):
    path = _config(tmp_path, llm, log={"format": "json", "level": "debug"})
    server = await Served(path, free_port()).start()
    await server.ready()
    assert await _ask(server.port, "o_json") == "你好，我是测试模型。"
    server.proc.send_signal(signal.SIGTERM)
    assert await server.exit_code(5) == 0
    records = []
    for line in server.lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(records[-1], dict) and "event" in records[-1] and "level" in records[-1]
    events = {r["event"] for r in records}
    assert {"serving", "generation_finished", "stopping"} <= events
    # the libraries' own lines: aiosqlite's thread, the OpenAI SDK
    assert any(r.get("logger") == "aiosqlite" and r["level"] == "debug" for r in records)
    assert any(r.get("logger", "").startswith("openai") for r in records)


async def test_sigterm_after_a_question_ends_serve_within_its_bound_every_time(tmp_path, llm):
    """Real processes: each answers a question, then SIGTERM or SIGINT (sometimes twice) must end it
    cleanly within 2 s (the watchdog's bound: twice shutdown_timeout) — storage closed, no thread
    left, exit 0. (aiohttp's run_app let a second signal cancel its own cleanup mid-way.)"""
    path = _config(tmp_path, llm, log={"format": "json", "level": "debug"})
    for cycle in range(8):
        server = await Served(path, free_port()).start()
        await server.ready()
        assert await _ask(server.port, f"o_cycle{cycle}") == "你好，我是测试模型。"
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM if cycle % 2 else signal.SIGINT)
        if cycle % 2:  # a second signal while stopping or just after (Ctrl-C twice; a supervisor insisting)
            await asyncio.sleep(0.01 if cycle % 4 == 3 else 0.15)
            if server.proc.returncode is None:
                server.proc.send_signal(signal.SIGTERM)
        assert await server.exit_code(10) == 0, server.lines[-5:]
        assert time.monotonic() - started < 2.5
        log = "\n".join(server.lines)
        assert "shutdown_threads_left" not in log and "shutdown_forced" not in log


async def test_a_reply_in_flight_when_sigterm_comes_is_still_delivered(tmp_path, llm):
    path = _config(tmp_path, llm, log={"format": "json", "level": "info"})
    server = await Served(path, free_port()).start()
    await server.ready()
    llm.queue(Script(text="这是一个慢慢写完的回答。", chunk_delay=0.08))
    asking = asyncio.create_task(_ask(server.port, "o_inflight"))
    while not llm.requests:  # the question is being answered
        await asyncio.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    assert await asking == "这是一个慢慢写完的回答。"
    assert await server.exit_code(5) == 0


async def test_sigterm_during_start_up_still_closes_storage_and_exits(tmp_path, llm):
    path = _config(tmp_path, llm, log={"format": "json", "level": "info"})
    for delay in (0.3, 0.6, 0.9, 1.2):
        server = await Served(path, free_port()).start()
        await asyncio.sleep(delay)
        server.proc.send_signal(signal.SIGTERM)
        code = await server.exit_code(10)
        assert code in (0, -signal.SIGTERM), server.lines  # before Python set its handler: the default one
        assert "shutdown_threads_left" not in "\n".join(server.lines)


async def test_a_hundred_start_stop_cycles_of_the_app_each_after_a_question_leave_nothing_open(tmp_path):
    """The served app in this process, through the same `serve` as `mpgpt serve`: every cycle answers a
    question (some still generating when the stop comes) and must close every storage thread."""
    before = len(_db_threads())
    async with FakeLLM(Script(chunk_delay=0.002)) as llm:
        cfg = make_config(tmp_path, llm.base_url, server=SHUTDOWN, **MANY)
        for cycle in range(100):
            sock = bind("127.0.0.1", 0)
            port = sock.getsockname()[1]
            slow = cycle % 4 == 3

            async def question() -> None:
                if slow:  # the stop comes while the answer is still being written
                    llm.queue(Script(text="慢慢写的回答。" * 20, chunk_delay=0.05))
                    task = asyncio.create_task(_ask(port, f"o_app{cycle}"))
                    await asyncio.sleep(0.15)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    # on a busy machine the question may not have reached the model yet: its script
                    # must not answer the next cycle's question
                    llm.unqueue()
                else:
                    assert await _ask(port, f"o_app{cycle}") == "你好，我是测试模型。"

            started = time.monotonic()
            assert await serve(cfg, create_app(cfg), sock, until=question) == 0
            assert time.monotonic() - started < 5
            for _ in range(100):  # a closed connection's thread ends a moment after close returns
                if len(_db_threads()) == before:
                    break
                await asyncio.sleep(0.01)
            assert len(_db_threads()) == before, f"cycle {cycle}: {len(_db_threads()) - before} threads left"


@pytest.mark.sqlite_file
async def test_a_storage_path_that_is_not_a_database_is_one_line_and_an_exit_for_serve_and_the_commands(tmp_path, llm):
    (tmp_path / "mpgpt.db").write_text("this is not a database\n")
    path = _config(tmp_path, llm, log={"format": "json", "level": "info"})
    server = await Served(path, free_port()).start()
    assert await server.exit_code(10) == 1  # never a hang on the connections it opened
    (line,) = server.lines
    assert json.loads(line)["error"] == f"storage.path: {tmp_path / 'mpgpt.db'}: file is not a database"
    for command in (["migrate"], ["users", "list"], ["doctor"]):
        result = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scripts.cli", *command, "--config", str(path), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(result.communicate(), 20)
        assert result.returncode == 1, (command, err)
        assert "file is not a database" in (out + err).decode() and b"Traceback" not in err, (command, err)
