"""Running `mpgpt` owner commands as the owner does: a separate OS process on the same database,
started without blocking the event loop (the fakes the commands call live in the test's loop)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.llm import FakeLLM
from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, ServerProcess, config_data, free_port, merge, write_toml

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


async def mpgpt(config: Path, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.cli", *args, "--config", str(config), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "MPGPT_DEBUG": "", **(env or {})})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return Result(args, proc.returncode or 0, out.decode(), err.decode())


async def ok(config: Path, *args: str, **kw: Any) -> Result:
    """A command that must succeed."""
    r = await mpgpt(config, *args, **kw)
    assert r.code == 0, f"mpgpt {' '.join(args)} exited {r.code}: {r.err or r.out}"
    return r


def assert_one_line_failure(r: Result, *needles: str, code: int | None = None) -> None:
    """Non-zero exit, exactly one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert r.code != 0, f"mpgpt {' '.join(r.args)} should have failed: {r.out}"
    if code is not None:
        assert r.code == code, (r.code, r.err)
    assert len(r.error_lines) == 1, r.err
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)


@asynccontextmanager
async def serving(tmp_path: Path, llm: FakeLLM, extra_toml: str = "",
                  **overrides: Any) -> AsyncIterator[tuple[Path, ServerProcess, FakeWeChat]]:
    """`mpgpt serve` in its own process; yields (config path, server, WeChat delivering to it)."""
    # The router follows the owner's channel changes within 0.05 s here.
    data = config_data(tmp_path, llm.base_url, router={"disabled_sync_interval": 0.05})
    path = write_toml(tmp_path / "mpgpt.toml", merge(data, overrides))
    if extra_toml:
        path.write_text(path.read_text(encoding="utf-8") + extra_toml, encoding="utf-8")
    server = await asyncio.to_thread(ServerProcess(path, free_port()).start)
    try:
        async with FakeWeChat(server.url + "/wechat", TOKEN, APP_ID, window=0.6) as wechat:
            yield path, server, wechat
    finally:
        await asyncio.to_thread(server.stop)


async def ask(wechat: FakeWeChat, openid: str, text: str = "你好") -> str:
    delivery = await wechat.send_text(openid, text)
    assert delivery.status == 200, delivery
    return delivery.content or ""
