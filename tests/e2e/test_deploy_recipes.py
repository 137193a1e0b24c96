"""The production recipes in deploy/ are checked by the tools that will read them: the systemd unit by
`systemd-analyze verify`, the nginx site by `nginx -t` and then for real in front of the running app
(TLS with a test certificate, the proxy headers mpgpt reads), the Caddyfile by `caddy validate` and its
adapted JSON. In CI (.ci/run installs the tools) a missing tool fails instead of skipping."""

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

from tests.fakes.wechat import FakeWeChat
from tests.harness import APP_ID, TOKEN, free_port, make_config, running

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
REQUIRED = os.environ.get("MPGPT_REQUIRE_DEPLOY_TOOLS") == "1"


def _tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                      None)
    if path is None:
        if REQUIRED:
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


# -- systemd -------------------------------------------------------------------------------------------


def test_the_systemd_unit_verifies_cleanly_and_runs_serve_with_the_database_in_its_state_directory(tmp_path):
    analyze = _tool("systemd-analyze")
    unit = (DEPLOY / "systemd" / "mpgpt.service").read_text(encoding="utf-8")
    (exec_start,) = re.findall(r"^ExecStart=(\S+) (.*)$", unit, re.M)
    assert exec_start[1] == "serve --config /etc/mpgpt/config.toml"
    assert "StateDirectory=mpgpt" in unit and '[storage] path = "/var/lib/mpgpt/mpgpt.db"' in unit
    # systemd's stop limit stays above mpgpt's own bound (twice server.shutdown_timeout, default 10 s)
    assert int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1)) > 2 * 10
    # verify checks that ExecStart's binary exists: an executable stands in for the installed mpgpt
    binary = tmp_path / "bin" / "mpgpt"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    (tmp_path / "mpgpt.service").write_text(unit.replace(exec_start[0], str(binary)), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(tmp_path / "mpgpt.service")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # not even a warning (an unknown key is only one)


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path):
    analyze = _tool("systemd-analyze")
    unit = (DEPLOY / "systemd" / "mpgpt.service").read_text(encoding="utf-8")
    (tmp_path / "mpgpt.service").write_text(unit.replace("ExecStart=", "ExecStrat="), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(tmp_path / "mpgpt.service")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "ExecStrat" in result.stderr


# -- nginx ---------------------------------------------------------------------------------------------


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=mp.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _nginx_prefix(tmp_path: Path, site: str) -> Path:
    """A whole nginx.conf around the shipped site, with every path under tmp_path (runs as root or
    not, without touching /etc or /var)."""
    cert, key = _certificate(tmp_path)
    site = site.replace("/etc/letsencrypt/live/mp.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/mp.example.com/privkey.pem", str(key))
    (tmp_path / "mpgpt.conf").write_text(site, encoding="utf-8")
    (tmp_path / "logs").mkdir()
    temp = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                         "scgi"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'logs' / 'error.log'};\nevents {{}}\n"
                    f"http {{\n    access_log off;\n    {temp}\n    include {tmp_path / 'mpgpt.conf'};\n}}\n")
    return conf


def _nginx(conf: Path, *args: str) -> list[str]:
    return [_tool("nginx"), "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "logs" / "error.log"),
            *args]


def test_the_nginx_site_passes_nginx_t_with_a_certificate(tmp_path):
    conf = _nginx_prefix(tmp_path, (DEPLOY / "nginx" / "mpgpt.conf").read_text(encoding="utf-8"))
    result = subprocess.run(_nginx(conf, "-t"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    broken = conf.parent / "mpgpt.conf"
    broken.write_text(broken.read_text().replace("proxy_pass http://mpgpt;", "proxy_pass http://mpgpt", 1))
    assert subprocess.run(_nginx(conf, "-t"), capture_output=True, timeout=60).returncode != 0


async def test_behind_the_shipped_nginx_site_wechat_and_the_page_work_over_tls_with_the_forwarded_scheme(tmp_path, llm):
    # public_url is http here: a Secure session cookie can then only come from X-Forwarded-Proto: https
    cfg = make_config(tmp_path, llm.base_url, server={"public_url": "http://mp.example.com"},
                      companion={"client_ip_header": "X-Forwarded-For"})
    async with running(cfg) as (base, _):
        http_port, tls_port = free_port(), free_port()
        site = (DEPLOY / "nginx" / "mpgpt.conf").read_text(encoding="utf-8")
        site = site.replace("server 127.0.0.1:8080;", f"server {base.removeprefix('http://')};")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};").replace("listen [::]:80;", "")
        site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{tls_port} ssl http2;")
        site = site.replace("listen [::]:443 ssl http2;", "")
        (tmp_path / "nginx").mkdir()
        conf = _nginx_prefix(tmp_path / "nginx", site)
        proc = subprocess.Popen(_nginx(conf, "-g", "daemon off; master_process off;"), stderr=subprocess.DEVNULL)
        errors = conf.parent / "logs" / "error.log"
        try:
            https = f"https://127.0.0.1:{tls_port}"
            connector = aiohttp.TCPConnector(ssl=False, force_close=True)
            async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        async with http.get(f"{https}/") as resp:
                            assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
                            assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
                            break
                    except aiohttp.ClientConnectionError:
                        assert proc.poll() is None and time.monotonic() < deadline, errors.read_text()
                        await asyncio.sleep(0.05)
                async with http.get(f"http://127.0.0.1:{http_port}/x?y=1", allow_redirects=False) as resp:
                    assert resp.status == 301 and resp.headers["Location"] == "https://127.0.0.1/x?y=1"
                async with http.get(f"{https}/metrics") as resp:
                    assert resp.status == 404  # never through the public door

                wechat = FakeWeChat(f"{https}/wechat", TOKEN, APP_ID, window=0.6, session=http)
                assert (await wechat.send_text("o_behind_nginx", "你好")).content == "你好，我是测试模型。"
                reply = (await wechat.send_text("o_behind_nginx", "登录")).content or ""
                token = re.search(r"#login=([A-Za-z0-9_-]+)", reply).group(1)
                async with http.post(f"{https}/api/login", json={"token": token}) as resp:
                    assert resp.status == 200
                    cookies = resp.headers.getall("Set-Cookie")
                assert cookies and all("Secure" in c for c in cookies)
        finally:
            proc.terminate()
            proc.wait(10)


# -- Caddy ---------------------------------------------------------------------------------------------


def _caddy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    return subprocess.run([_tool("caddy"), *args], capture_output=True, text=True, timeout=60, env=env)


def test_the_caddyfile_validates_and_proxies_to_mpgpt_streaming_and_hiding_metrics(tmp_path):
    caddyfile = str(DEPLOY / "caddy" / "Caddyfile")
    result = _caddy(tmp_path, "validate", "--config", caddyfile, "--adapter", "caddyfile")
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr
    adapted = _caddy(tmp_path, "adapt", "--config", caddyfile, "--adapter", "caddyfile")
    assert adapted.returncode == 0, adapted.stderr
    assert "warn" not in adapted.stderr.lower(), adapted.stderr
    text = json.dumps(json.loads(adapted.stdout))
    assert '"listen": [":443"]' in text and '"host": ["mp.example.com"]' in text  # TLS, certificate by Caddy
    assert '"handler": "reverse_proxy"' in text and '"dial": "127.0.0.1:8080"' in text
    assert '"flush_interval": -1' in text
    assert '{"handle": [{"handler": "static_response", "status_code": 404}], "match": [{"path": ["/metrics"]}]}' in text


def test_the_recipes_name_the_address_mpgpt_listens_on_by_default():
    from bot.config import load_config

    cfg = load_config(ROOT / "config.toml", env={})
    address = f"{cfg.server.host}:{cfg.server.port}"
    for recipe in (DEPLOY / "nginx" / "mpgpt.conf", DEPLOY / "caddy" / "Caddyfile"):
        assert address in recipe.read_text(encoding="utf-8"), recipe


# -- logrotate -----------------------------------------------------------------------------------------


def test_the_logrotate_recipe_rotates_a_log_file_in_place_while_it_stays_open(tmp_path):
    logrotate = _tool("logrotate")
    logs = tmp_path / "log"
    logs.mkdir()
    recipe = (DEPLOY / "logrotate" / "mpgpt").read_text(encoding="utf-8")
    assert "/var/log/mpgpt/*.log" in recipe
    conf = tmp_path / "mpgpt.logrotate"
    conf.write_text(recipe.replace("/var/log/mpgpt/", f"{logs}/"), encoding="utf-8")
    conf.chmod(0o644)
    with open(logs / "mpgpt.log", "a", encoding="utf-8") as held:  # as the server's stderr holds it
        held.write('{"event": "before"}\n')
        held.flush()
        result = subprocess.run([logrotate, "--force", "--state", str(tmp_path / "state"), str(conf)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        held.write('{"event": "after"}\n')
    assert (logs / "mpgpt.log.1").read_text() == '{"event": "before"}\n'
    assert (logs / "mpgpt.log").read_text().strip("\0") == '{"event": "after"}\n'
