"""`mpgpt demo`, run as an owner runs it (the README's first command), typed at through stdin: the demo
model's answer streams through the real /wechat path (the window passes, a partial reply asks for 继续,
继续 fetches the rest), and the printed page address logs the page in over HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.companionkit import browser_session

ROOT = Path(__file__).resolve().parents[2]
# the partial reply links to the answer page (the demo sets server.public_url) and still offers 继续
MORE = "也可回复「继续」获取后续。"


async def _line(stream: asyncio.StreamReader, seen: list[str], pattern: str, timeout: float = 30) -> re.Match:
    async def find() -> re.Match:
        while True:
            raw = await stream.readline()
            assert raw, "the demo ended early:\n" + "".join(seen)
            seen.append(raw.decode())
            found = re.search(pattern, seen[-1])
            if found:
                return found
    return await asyncio.wait_for(find(), timeout)


async def test_the_demo_streams_its_answer_through_wechats_window_and_its_printed_link_logs_the_page_in(tmp_path):
    data = tmp_path / "demo-data"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.cli", "demo", "--time-scale", "5", "--data", str(data), cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MPGPT_", "OPENAI_", "ZHIPUAI_"))},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr
    seen: list[str] = []
    try:
        assert "DEMO MODEL" in (await _line(proc.stdout, seen, r"DEMO MODEL")).string
        page = (await _line(proc.stdout, seen, r"companion page:\s+(\S+)")).group(1)
        link = (await _line(proc.stdout, seen, r"(\S+)/#login=([A-Za-z0-9_-]+)"))
        assert link.group(1) + "/" == page and page.startswith("http://127.0.0.1:")

        # The printed address logs the page in, as the follower who typed below.
        async with browser_session() as http:
            async with http.post(f"{link.group(1)}/api/login", json={"token": link.group(2)}) as resp:
                assert resp.status == 200 and await resp.json() == {"ok": True}
            async with http.get(f"{link.group(1)}/api/me") as resp:
                assert resp.status == 200
                me = await resp.json()
            assert me["user"] == "o_demo_follower"[-6:] and me["balance"] > 0
            async with http.post(f"{link.group(1)}/api/login", json={"token": link.group(2)}) as resp:
                assert resp.status == 401  # one-time

        proc.stdin.write("你好\n继续\n".encode())
        await proc.stdin.drain()
        proc.stdin.close()
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    transcript = "".join(seen) + out.decode()
    assert proc.returncode == 0, transcript + err.decode()
    first, rest = transcript.split("> 继续", 1)
    # Streamed: the follower got the sentences written by the last delivery, then the rest on 继续.
    assert "【演示模型】" in first and "「你好」" in first
    assert first.rstrip().endswith(MORE) and "演示到此结束" not in first
    assert re.search(r"http://127\.0\.0\.1:\d+/a/[\w-]{32}", first)
    assert "演示到此结束" in rest
    assert "WeChat delivers again (2)" in err.decode() and "WeChat delivers again (3)" in err.decode()
    assert "Traceback" not in err.decode()


async def test_ctrl_c_while_the_demo_model_is_writing_ends_the_demo_cleanly(tmp_path):
    import signal

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.cli", "demo", "--time-scale", "5", "--data", str(tmp_path / "d"), cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin and proc.stdout
    seen: list[str] = []
    try:
        await _line(proc.stdout, seen, r"Ctrl-D quits")
        proc.stdin.write("你好\n".encode())
        await proc.stdin.drain()
        await asyncio.sleep(1.0)  # the answer is being written
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert [line for line in err.decode().splitlines() if "WeChat delivers again" not in line] == []
