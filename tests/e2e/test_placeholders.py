"""The example values config.toml ships with are never taken silently: `mpgpt serve` warns at start and
`mpgpt doctor` fails, each naming the key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bot.config import config_from_dict, load_config, placeholders
from tests.e2e.test_serve_lifecycle import Served
from tests.fakes.wechatpay import make_keys
from tests.harness import config_data, free_port, merge, write_toml

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_config_names_its_example_token_and_api_key():
    cfg = load_config(ROOT / "config.toml", env={})
    assert placeholders(cfg) == ["wechat.token", "channels[0].api_key (openai)"]


def test_real_values_are_not_placeholders_and_every_example_mark_is(tmp_path):
    files = make_keys().write(tmp_path / "keys")
    real = config_from_dict(config_data(tmp_path, "http://127.0.0.1:9/v1"), base_dir=str(tmp_path))
    assert placeholders(real) == []
    examples = merge(config_data(tmp_path, "http://127.0.0.1:9/v1"), {
        "wechat": {"app_secret": "change-me"}, "server": {"public_url": "https://example.com"},
        "chat": {"allow_own_keys": True, "key_secret": "changeme-changeme-changeme"},
        "pay": {"mchid": "1900000000", "app_id": "wx...", "private_key_path": files["private_key_path"], "cert_serial_no": "...",
                "apiv3_key": "0123456789abcdef0123456789abcdef", "public_key_path": files["public_key_path"],
                "public_key_id": "PUB_KEY_ID_...", "notify_url": "https://example.com/api/pay/notify"}})
    found = placeholders(config_from_dict(examples, base_dir=str(tmp_path)))
    assert found == ["wechat.app_secret", "chat.key_secret", "server.public_url", "pay.mchid", "pay.app_id",
                     "pay.cert_serial_no", "pay.public_key_id", "pay.notify_url"]


def test_doctor_fails_on_the_shipped_example_values_naming_each_key(tmp_path):
    env = {**os.environ, "MPGPT_STORAGE_PATH": str(tmp_path / "x.db")}
    env.pop("OPENAI_API_KEY", None)
    result = subprocess.run([sys.executable, "-m", "scripts.cli", "doctor", "--json", "--config",
                             str(ROOT / "config.toml")], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=60)
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["placeholders"]["result"] == "fail"
    assert "wechat.token" in checks["placeholders"]["detail"]
    assert "channels[0].api_key (openai)" in checks["placeholders"]["detail"]


async def test_serve_warns_at_start_for_each_example_value(tmp_path, llm):
    data = merge(config_data(tmp_path, llm.base_url), {"wechat": {"token": "change-me"},
                                                      "log": {"format": "json", "level": "info"}})
    data["channels"][0]["api_key"] = "sk-change-me"
    server = await Served(write_toml(tmp_path / "c.toml", data), free_port()).start()
    await server.ready()
    server.proc.send_signal(signal.SIGTERM)
    assert await server.exit_code(10) == 0
    warnings = [json.loads(line) for line in server.lines if "config_placeholder" in line]
    assert [(w["level"], w["key"]) for w in warnings] == [
        ("warning", "wechat.token"), ("warning", "channels[0].api_key (fake)")]
    assert all("change-me" not in line for line in server.lines if "config_placeholder" in line)
