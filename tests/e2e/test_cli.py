"""`mpgpt serve` / `mpgpt migrate` from the command line: bad config ends in one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import config_data, merge, write_toml

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


@pytest.mark.parametrize("change,key", [
    ({"wechat": {"mode": "aggressive"}}, "wechat.mode"),
    ({"wechat": {"tokn": "x"}}, "wechat.tokn: unknown key"),
    ({"server": {"port": "eighty"}}, "server.port: must be an integer"),
    ({"wechat": {"token": ""}}, "wechat.token: is required"),
    ({"wechat": {"encoding_aes_key": "short"}}, "wechat.encoding_aes_key"),
    ({"chat": {"default_model": "nope"}}, "chat.default_model"),
    ({"wechat": {"window": -1}}, "wechat.window"),
    ({"server": {"event_loop": "trio"}}, "server.event_loop"),
])
def test_a_bad_config_makes_serve_exit_with_one_line_naming_the_key(tmp_path, change, key):
    path = write_toml(tmp_path / "bad.toml", merge(config_data(tmp_path, "http://127.0.0.1:9/v1"), change))
    result = _run("serve", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "Traceback" not in result.stderr


def test_a_missing_or_broken_config_file_is_one_line_too(tmp_path):
    result = _run("serve", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and "cannot read config file" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = 1\n")
    result = _run("serve", "--config", str(broken))
    assert result.returncode == 2 and "not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite_file
def test_secrets_can_come_from_the_environment(tmp_path):
    data = config_data(tmp_path, "http://127.0.0.1:9/v1")
    data["wechat"]["token"] = ""
    path = write_toml(tmp_path / "env.toml", data)
    import os

    env = {**os.environ, "MPGPT_WECHAT_TOKEN": "from-env"}
    result = _run("migrate", "--config", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert "applied migrations: 1" in result.stdout


@pytest.mark.sqlite_file
def test_migrate_applies_once_then_reports_up_to_date(tmp_path):
    path = write_toml(tmp_path / "c.toml", config_data(tmp_path, "http://127.0.0.1:9/v1"))
    first = _run("migrate", "--config", str(path))
    second = _run("migrate", "--config", str(path))
    assert first.returncode == 0 and "applied migrations" in first.stdout
    assert second.returncode == 0 and "up to date" in second.stdout


def test_the_shipped_config_toml_is_valid(tmp_path):
    import os

    env = {**os.environ, "MPGPT_STORAGE_PATH": str(tmp_path / "x.db")}
    result = _run("migrate", "--config", str(ROOT / "config.toml"), env=env)
    assert result.returncode == 0, result.stderr


async def test_simulate_chats_with_a_running_server_as_wechat_would(tmp_path, llm):
    import asyncio

    from tests.harness import AES_KEY, make_config, running

    data = config_data(tmp_path, llm.base_url, wechat={"encoding_aes_key": AES_KEY})
    path = write_toml(tmp_path / "sim.toml", data)
    async with running(make_config(tmp_path, llm.base_url, wechat={"encoding_aes_key": AES_KEY})) as (url, _):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scripts.cli", "simulate", "--config", str(path), "--url", f"{url}/wechat",
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate("你好\n帮助\n".encode()), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "你好，我是测试模型。"
    assert "继续" in out.decode() and "新对话" in out.decode()
    assert llm.requests[0].messages[-1]["content"] == "你好"
