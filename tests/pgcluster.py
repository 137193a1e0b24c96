"""A throwaway PostgreSQL cluster on loopback, for tests, CI and a developer's shell.

    eval "$(python3 -m tests.pgcluster start)"   # exports MPGPT_TEST_POSTGRES_URL and MPGPT_PGCLUSTER_DIR
    python3 -m tests.pgcluster stop "$MPGPT_PGCLUSTER_DIR"

Debian's server binaries (package `postgresql`); initdb refuses to run as root, so as root the
cluster belongs to the `postgres` user (`runuser`). Durability is switched off: a test cluster
lives minutes and is thrown away.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

URL_ENV = "MPGPT_TEST_POSTGRES_URL"
REQUIRE_ENV = "MPGPT_REQUIRE_POSTGRES"


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: $PG_BIN, or the newest Debian install, or the PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start(durable: bool = False) -> tuple[str, Path]:
    """Start a cluster; returns (its URL, its directory). `durable`: fsync on (benchmarks)."""
    bins = bin_dir()
    if bins is None or not (bins / "initdb").exists():
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="mpgpt-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    base.chmod(0o700)
    subprocess.run(_as_owner([str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                              "--no-sync", "-E", "UTF8", "--locale=C"]),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c max_connections=300 -c shared_buffers=128MB"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(_as_owner([str(bins / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"),
                              "-w", "-t", "30", "start"]),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", base


def stop(base: str | Path) -> None:
    bins = bin_dir()
    base = Path(base)
    if bins is not None and (base / "data").exists():
        subprocess.run(_as_owner([str(bins / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "-w",
                                  "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"]:
        url, base = start()
        print(f"export {URL_ENV}={shlex.quote(url)} MPGPT_PGCLUSTER_DIR={shlex.quote(str(base))}")
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        stop(argv[1])
        return 0
    print("usage: python3 -m tests.pgcluster start | stop DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
