"""Running `mpgpt` owner commands as the owner does: a separate OS process on the same database,
started without blocking the event loop (the fakes the commands call live in the test's loop)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
