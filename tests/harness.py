"""Starting the real mpgpt app on loopback, with WeChat's timing scaled down for tests."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from scripts.composition import create_app
from bot.config import Config, config_from_dict

TOKEN = "test-token"
# Tests serve /metrics on the app's own port (no port to collide over), which needs a token.
METRICS_TOKEN = "m3tr1cs-t0ken-for-prometheus"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "test-app-secret"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

# WeChat's 5 s window scaled down ~8x: fast tests that still exercise every timing path.
FAST = {
    "wechat": {"window": 0.6, "reply_margin": 0.2, "deliveries": 3, "typing_lasts": 1.8, "typing_after": 3.6},
    "chat": {"poll_interval": 0.02, "progress_flush_interval": 0.05, "lease_seconds": 0.6,
             "recovery_interval": 0.1, "generation_deadline": 10.0},
    "media": {"picture_wait": 0.3},
}


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# the PostgreSQL database of each test's folder (MPGPT_TEST_ENGINE=postgresql)
_SCRATCH: dict[Path, dict] = {}


def _scratch_postgres(tmp_path: Path) -> dict:
    """MPGPT_TEST_ENGINE=postgresql: the app's storage is a PostgreSQL database (copied from the
    tests' migrated template) instead of the SQLite file, to run a whole suite on PostgreSQL. One
    per test folder, as the SQLite file is: an app started again in a test finds what it left."""
    if tmp_path in _SCRATCH:
        return dict(_SCRATCH[tmp_path])
    import uuid

    import psycopg

    from tests.conftest import TEMPLATE, with_database

    admin_url = os.environ["MPGPT_TEST_POSTGRES_URL"]
    name = "e_" + uuid.uuid4().hex[:16]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    _SCRATCH[tmp_path] = {"url": with_database(admin_url, name)}
    return dict(_SCRATCH[tmp_path])


def config_data(tmp_path: Path, llm_base_url: str, **overrides: Any) -> dict:
    data = {
        "server": {"host": "127.0.0.1", "port": 8080},
        "storage": {"path": str(tmp_path / "mpgpt.db")},
        "wechat": {"token": TOKEN, "app_id": APP_ID, "app_secret": APP_SECRET, "encoding_aes_key": ""},
        "chat": {"default_model": "gpt-4o-mini"},
        "channels": [{"name": "fake", "provider": "openai", "base_url": llm_base_url, "api_key": "sk-test",
                      "models": ["gpt-4o-mini"]}],
        "log": {"level": "warning", "format": "json"},
        "metrics": {"port": 0, "token": METRICS_TOKEN},
        # Most tests compare replies word for word; the label's own tests (test_answer_page.py) turn it on.
        "ai_label": {"text": False},
    }
    if os.environ.get("MPGPT_TEST_ENGINE") == "postgresql" and "storage" not in overrides:
        data["storage"] = _scratch_postgres(tmp_path)
    return merge(merge(data, FAST), overrides)


def make_config(tmp_path: Path, llm_base_url: str, **overrides: Any) -> Config:
    return config_from_dict(config_data(tmp_path, llm_base_url, **overrides), base_dir=str(tmp_path))


def loopback_socket() -> tuple[socket.socket, str]:
    """A loopback socket bound before the app exists, and its base URL: a config can then name the
    app's own address (pay.notify_url, server.public_url)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def served(app: web.Application, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """`app` on a loopback socket (a new one unless given); yields its base URL. A start-up failure
    closes what the cleanup contexts before it opened."""
    if sock is None:
        sock, _ = loopback_socket()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[tuple[str, web.Application]]:
    """The real app on a real loopback socket; yields (base_url, app)."""
    app = create_app(cfg)
    async with served(app) as base:
        yield base, app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_toml(path: Path, data: dict) -> Path:
    """A TOML file from a dict (just the shapes our configs use)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(v)

    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    for k, v in data.items():
        if k not in tables and k not in arrays:
            lines.append(f"{k} = {value(v)}")
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
    for name, items in arrays.items():
        for item in items:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {value(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class ServerProcess:
    """`mpgpt serve` as a real child process (for two-process and restart tests)."""

    def __init__(self, config_path: Path, port: int) -> None:
        self.config_path = config_path
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "ServerProcess":
        env = {**os.environ, "MPGPT_SERVER_PORT": str(self.port)}
        self.log_path = self.config_path.with_suffix(f".{self.port}.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scripts.cli", "serve", "--config", str(self.config_path)],
                env=env, stdout=log, stderr=log, cwd=Path(__file__).resolve().parent.parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("server did not start listening")

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup at all."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def refuse_new_answers(db) -> None:  # noqa: ANN001 - either engine's database
    """The database refuses every new answer (a full disk, a broken engine: a failure past the
    delivery's own write)."""
    if db.engine == "postgresql":
        await db.write_one("CREATE FUNCTION refuse_answers() RETURNS trigger LANGUAGE plpgsql AS"
                           " $f$ BEGIN RAISE EXCEPTION 'no new answers'; END $f$")
        await db.write_one("CREATE TRIGGER answers_refused BEFORE INSERT ON answers"
                           " FOR EACH ROW EXECUTE FUNCTION refuse_answers()")
    else:
        await db.write_one("CREATE TRIGGER answers_refused BEFORE INSERT ON answers"
                           " BEGIN SELECT RAISE(ABORT, 'no new answers'); END")
