"""README's "Restoring from a backup", step by step against real `mpgpt serve` processes: what was
answered after the backup is gone, what was before is back, and the server runs on the restored file."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_serve_lifecycle import Served, _ask, _config

ROOT = Path(__file__).resolve().parents[2]


def _mpgpt(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args, "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


async def _serve(config: Path, port: int) -> Served:
    server = await Served(config, port).start()
    await server.ready()
    return server


async def _stop(server: Served) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert await server.exit_code(10) == 0


def _questions(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = [r[0] for r in conn.execute("SELECT question FROM answers ORDER BY id")]
    conn.close()
    return rows


@pytest.mark.sqlite_file
async def test_the_restore_recipe_brings_back_the_backup_and_the_server_runs_on_it(tmp_path, llm):
    from tests.harness import free_port

    config = _config(tmp_path, llm, log={"format": "json", "level": "info"})
    live = tmp_path / "mpgpt.db"
    server = await _serve(config, free_port())
    assert await _ask(server.port, "o_restore", "备份之前") == "你好，我是测试模型。"
    backups = tmp_path / "backups"
    backups.mkdir()
    copy = backups / "mpgpt-2026-12-01.db"
    assert _mpgpt(config, "backup", "--out", str(copy)).returncode == 0
    assert await _ask(server.port, "o_restore", "备份之后") == "你好，我是测试模型。"
    # systemctl stop mpgpt
    await _stop(server)
    # (a clean stop folds the WAL in and removes it; after a crash it stays, and must go with its database)

    # cd /var/lib/mpgpt && mkdir -p replaced && mv mpgpt.db mpgpt.db-wal mpgpt.db-shm replaced/
    (tmp_path / "replaced").mkdir()
    for name in ("mpgpt.db", "mpgpt.db-wal", "mpgpt.db-shm"):
        if (tmp_path / name).exists():
            shutil.move(tmp_path / name, tmp_path / "replaced" / name)
    # install -m 0600 ... BACKUP /var/lib/mpgpt/mpgpt.db
    shutil.copyfile(copy, live)
    live.chmod(0o600)
    # mpgpt migrate
    migrated = _mpgpt(config, "migrate")
    assert migrated.returncode == 0 and "schema is up to date" in migrated.stdout
    # systemctl start mpgpt
    server = await _serve(config, free_port())
    try:
        assert await _ask(server.port, "o_restore", "恢复之后") == "你好，我是测试模型。"
    finally:
        await _stop(server)
    assert _questions(live) == ["备份之前", "恢复之后"]
    assert _questions(tmp_path / "replaced" / "mpgpt.db") == ["备份之前", "备份之后"]
    assert live.stat().st_mode & 0o777 == 0o600


@pytest.mark.sqlite_file
async def test_the_upgrade_recipe_brings_the_previous_versions_database_forward_and_serves_it(tmp_path, llm):
    """A database as the previous version left it (every migration but the last), then README's
    "Upgrading": migrate (forward only, once), start, answer."""
    from importlib import resources

    from storage.db import latest_schema_version
    from tests.harness import free_port

    files = sorted(f for f in resources.files("storage.migrations").iterdir() if f.name.endswith(".sql"))
    live = tmp_path / "mpgpt.db"
    with sqlite3.connect(live) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " applied_at REAL NOT NULL)")
        for f in files[:-1]:
            conn.executescript(f.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (int(f.name[:4]), f.name))
    conn.close()
    config = _config(tmp_path, llm, log={"format": "json", "level": "info"})
    assert "mpgpt migrate" in _mpgpt(config, "users", "list").stderr  # the new code asks for the migration
    migrated = _mpgpt(config, "migrate")
    assert migrated.returncode == 0 and migrated.stdout.strip() == f"applied migrations: {latest_schema_version()}"
    assert _mpgpt(config, "migrate").stdout.strip() == "schema is up to date"
    server = await _serve(config, free_port())
    try:
        assert await _ask(server.port, "o_upgrade", "升级之后") == "你好，我是测试模型。"
    finally:
        await _stop(server)
