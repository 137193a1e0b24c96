"""Running the server until SIGTERM/SIGINT: `mpgpt serve` and `mpgpt demo` both go through `serve`.

aiohttp's run_app opens the app's resources (storage first) before its try/finally: a start-up that
fails (metrics.port taken) or is interrupted (a signal during start-up) left the database's
connection threads running, and since they are not daemons the process never exited. Here the port
is bound before anything opens, every start is paired with a cleanup, and the whole stop is bounded:
in-flight requests get `server.shutdown_timeout`, then background loops stop and storage closes, and
a watchdog ends the process after twice that whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

from bot.config import Config, placeholders
from storage.postgres import StorageUnavailable

log = structlog.get_logger(__name__)


class ListenError(Exception):
    """The server could not start listening: one line for the owner."""


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound before storage opens: a port clash is said at once, in one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def addresses(cfg: Config, port: int) -> dict[str, str | None]:
    """Where the server can be reached: what the ready line tells the owner."""
    s, m = cfg.server, cfg.metrics
    host = "127.0.0.1" if s.host in ("", "0.0.0.0") else ("::1" if s.host == "::" else s.host)
    local = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    public = s.public_url.rstrip("/")
    if not m.enabled:
        metrics_url = None
    elif not m.port:
        metrics_url = f"{local}/metrics"
    else:
        metrics_url = f"http://{m.host}:{m.port}/metrics"
    return {"listening": local, "wechat_url": f"{public or local}/wechat", "page_url": f"{public or local}/",
            "metrics_url": metrics_url}


def say_failure(message: str, json_lines: bool) -> None:
    """A start-up failure in one line: a log line in JSON mode (like every other), else plain text."""
    if json_lines:
        log.error("start_failed", error=message)
    else:
        print(f"mpgpt: {message}", file=sys.stderr, flush=True)


async def serve(cfg: Config, app: web.Application, sock: socket.socket, *, json_lines: bool = False,
                until: Callable[[], Awaitable[object]] | None = None, exiting: bool = False) -> int:
    """Serve `app` on `sock` until SIGTERM/SIGINT (or until `until()` returns); 0, or 1 when start-up
    failed (said in one line). `exiting`: the process ends afterwards (the command line), so a second
    signal while it does is ignored instead of killing it mid-way."""
    for key in placeholders(cfg):
        log.warning("config_placeholder", key=key,
                    problem="still the example value shipped in config.toml: set the real one (mpgpt doctor fails)")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=cfg.server.shutdown_timeout)
    try:
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except OSError as e:  # e.g. metrics.port taken: its message names the key
            say_failure(str(e.strerror or e), json_lines)
            return 1
        except sqlite3.Error as e:  # not a database, a read-only folder, a schema newer than this code
            say_failure(f"storage.path: {cfg.resolve_path(cfg.storage.path)}: {e}", json_lines)
            return 1
        except StorageUnavailable as e:  # a bad or unreachable PostgreSQL: one line naming the key
            say_failure(f"storage.url: {e}", json_lines)
            return 1
        except Exception:  # a bug or an outside service at start-up: logged once, then the same cleanup
            log.exception("start_failed")
            return 1
        code = 0
        if not stop.is_set():
            log.info("serving", **addresses(cfg, sock.getsockname()[1]))
            waits = [asyncio.ensure_future(stop.wait())]
            if until is not None:
                waits.append(asyncio.ensure_future(until()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                outcomes = await asyncio.gather(*waits, return_exceptions=True)
            failure = next((o for o in outcomes if isinstance(o, Exception)), None)
            if failure is not None:
                log.error("stopped_by_failure", exc_info=failure)
                code = 1
        log.info("stopping", shutdown_timeout=cfg.server.shutdown_timeout)
        return code
    finally:
        watchdog = _watchdog(2 * cfg.server.shutdown_timeout)
        try:
            # Also after a failed or interrupted start: whatever the app opened is closed again.
            await runner.cleanup()
        finally:
            watchdog.cancel()
            sock.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                if exiting:
                    loop.add_signal_handler(sig, _stopping)
                else:
                    loop.remove_signal_handler(sig)


def _stopping() -> None:
    """A signal once the stop is under way: it is bounded already, nothing more to do."""


def _watchdog(seconds: float) -> threading.Timer:
    """Ends the process if stopping takes longer than `seconds` (a stuck request, a stuck disk)."""
    def force() -> None:
        log.error("shutdown_forced", after_seconds=seconds)
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
    return timer


def run_loop(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, int]) -> int:
    """Run `main` to its end on `loop`, then close the loop; exit even if a thread was left behind."""
    try:
        code = loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    # closing the loop gave the signals their defaults back: the exit is already bounded (below)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    left = stragglers()
    if left:  # a resource nobody closed: say so, and exit all the same
        log.error("shutdown_threads_left", threads=left)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 1)
    return code


def stragglers(wait: float = 3.0) -> list[str]:
    """Threads that would keep the process from exiting once the loop is closed. A closed
    connection's thread ends a moment after its close returns, so each gets up to `wait` seconds in
    all; any still running means a resource was left open (the caller says so and exits anyway)."""
    deadline = time.monotonic() + wait
    left = []
    for t in threading.enumerate():
        if t is threading.main_thread() or t.daemon:
            continue
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            left.append(t.name)
    return left
